"""Condensation, second pass (SCIENCE.md §2, correction of turn 2): the initial stage's end from the amplitude
growth, the growth-rate contrast of two- and three-layer nets, amplitude-weighted counts, the random-direction
baseline, 1-D inputs, the eigenvector heatmap order and the orientation picture — against direct computations."""

import math

import pytest
import torch
from torch import nn

from lightning_probes.measures.condensation import (
    GrowthPeak,
    condensation_stats,
    condensed_directions,
    cosine_matrix,
    effective_rank,
    eigenvector_order,
    heavy_directions,
    norm_shares,
    orientation_amplitude,
    random_directions_baseline,
    relative_change,
    stable_rank,
)
from lightning_probes.models import ThreeLayerNet, scale_init_

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py

X = torch.linspace(-1, 1, 32).unsqueeze(1)  # (32, 1) a 1-D regression target, full batch
Y = torch.sin(3 * X)


def _two_layer(width: int, eps: float) -> nn.Module:
    net = nn.Sequential()
    net.layer1, net.act, net.output = nn.Linear(1, width), nn.Tanh(), nn.Linear(width, 1)
    return scale_init_(net, std=eps)


def _gd(net: nn.Module, layers, steps: int, every: int = 5, lr: float = 0.2):
    """Full-batch GD; returns the plateau end T (loss first < 0.9 × initial), each layer's GrowthPeak end, the
    first probe with relative change > 1 (the first definition) and layer1's probed relative changes."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    w0 = {n: getattr(net, n).weight.detach().clone() for n in layers}
    peaks = {n: GrowthPeak(min_ratio=2.0) for n in layers}
    first_loss, plateau_end, old_end, changes = None, None, None, []
    for t in range(steps + 1):
        loss = ((net(X) - Y) ** 2).mean()
        first_loss = first_loss if first_loss is not None else float(loss.detach())
        if plateau_end is None and float(loss.detach()) < 0.9 * first_loss:
            plateau_end = t
        if t % every == 0:
            for n in layers:
                w = getattr(net, n).weight.detach()
                peaks[n].update(t, float(w.norm() / w0[n].norm()))
            change = relative_change(net.layer1.weight, w0["layer1"])
            changes.append((t, change))
            old_end = t if old_end is None and change > 1 else old_end
        if plateau_end is not None and all(p.end is not None for p in peaks.values()):
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return plateau_end, {n: p.end for n, p in peaks.items()}, old_end, changes


@pytest.fixture(scope="module")
def three_layer_runs():
    runs = {}
    for eps in (0.02, 0.01, 0.005):
        torch.manual_seed(0)
        runs[eps] = _gd(ThreeLayerNet(1, 20, 1, init_std=eps), ("layer1", "layer2"), steps=600)
    return runs


def test_the_norm_growth_peak_tracks_the_plateau_end_over_three_init_scales(three_layer_runs):
    for eps, (plateau, ends, old_end, _) in three_layer_runs.items():
        assert plateau is not None, eps
        for layer, end in ends.items():
            assert end is not None and abs(end - plateau) <= 0.2 * plateau, (eps, layer, end, plateau)
        # the first definition (relative change > 1) fires mid-plateau: rotation moves the weights too
        assert old_end < 0.75 * plateau, (eps, old_end, plateau)
    # the three-layer plateau grows like 1/ε (Chen & Luo's finite-time blow-up): T·ε about constant
    t_eps = [plateau * eps for eps, (plateau, *_) in three_layer_runs.items()]
    assert max(t_eps) / min(t_eps) < 1.3, t_eps


def test_standard_init_reports_no_initial_stage():
    torch.manual_seed(0)
    plateau, ends, _, _ = _gd(ThreeLayerNet(1, 20, 1, init_gamma=0.5), ("layer1", "layer2"), steps=400)
    assert ends == {"layer1": None, "layer2": None}  # γ = 0.5: no plateau, growth fastest at the start


def test_two_layer_plateaus_grow_by_steps_per_decade_three_layer_ones_by_factors(three_layer_runs):
    two = {}
    for eps in (0.02, 0.005):
        torch.manual_seed(0)
        two[eps] = _gd(_two_layer(20, eps), ("layer1",), steps=200, every=1)[0]
    per_decade = (two[0.005] - two[0.02]) / math.log10(4)
    assert 10 < per_decade < 30, two  # about 18.5 steps per decade of 1/ε (exponential growth)
    three = three_layer_runs[0.005][0] / three_layer_runs[0.02][0]
    assert 3.2 < three < 4.8  # ∝ 1/ε: four times as long for a four times smaller init


def _rate_at(changes, step):
    """d log relative-change / d step between the probes around ``step`` (what log_change_rate logs)."""
    pairs = [(t2, (math.log(b) - math.log(a)) / (t2 - t1)) for (t1, a), (t2, b) in zip(changes[1:], changes[2:])]
    return min(pairs, key=lambda p: abs(p[0] - step))[1]


def test_the_growth_rate_rises_through_a_three_layer_plateau_and_not_a_two_layer_one(three_layer_runs):
    for eps in (0.01, 0.005):
        plateau, _, _, changes = three_layer_runs[eps]
        assert _rate_at(changes, 0.8 * plateau) > 1.15 * _rate_at(changes, 0.4 * plateau), eps  # blow-up
        torch.manual_seed(0)
        plateau2, _, _, changes2 = _gd(_two_layer(20, eps), ("layer1",), steps=200, every=1)
        assert _rate_at(changes2, 0.8 * plateau2) < 0.9 * _rate_at(changes2, 0.4 * plateau2), eps  # exponential


def test_growth_peak_survives_a_checkpoint():
    peak = GrowthPeak(2.0)
    for step, ratio in enumerate([1.0, 1.01, 1.05, 1.4]):
        peak.update(step, ratio)
    restored = GrowthPeak()
    restored.load_state_dict(peak.state_dict())
    for step, ratio in [(4, 2.6), (5, 3.0), (6, 3.05)]:
        assert restored.update(step, ratio) == peak.update(step, ratio)
    assert restored.end == peak.end == 4


# ---------------------------------------------------------------- amplitude-weighted figures
def _heavy_and_small(seed=0):
    """10 large neurons on one line (±) and 30 small random ones: the γ = 1.5 picture of the issue."""
    g = torch.Generator().manual_seed(seed)
    line = torch.randn(8, generator=g, dtype=torch.float64)
    signs = torch.where(torch.rand(10, generator=g) < 0.5, -1.0, 1.0).double()
    heavy = signs[:, None] * (1 + torch.rand(10, 1, generator=g, dtype=torch.float64)) * line
    small = 1e-3 * torch.randn(30, 8, generator=g, dtype=torch.float64)
    return torch.cat([heavy, small])


def test_weighted_counts_equal_a_direct_computation_and_ignore_small_neurons():
    w = _heavy_and_small()
    s = condensation_stats(w)
    labels, sq = s.labels, (w * w).sum(1)
    # direct: the norm of each cluster, heaviest first
    mass = sorted((float(sq[labels == k].sum()) for k in range(int(labels.max()) + 1)), reverse=True)
    total = float(sq.sum())
    assert s.largest_cluster_norm_share == pytest.approx(mass[0] / total, rel=1e-12)
    assert s.top2_norm_share == pytest.approx(sum(mass[:2]) / total, rel=1e-12)
    assert s.top4_norm_share == pytest.approx(sum(mass[:4]) / total, rel=1e-12)
    assert s.largest_cluster_norm_share > 0.999 and s.largest_cluster_share == pytest.approx(10 / 40)
    assert s.n_directions > 20 and s.n_directions_weighted == 1  # the unweighted count sees the small ones
    # direct: the fewest neurons holding 99% of the norm, and their distinct clusters
    order = torch.argsort(sq, descending=True)
    n_heavy = next(k for k in range(1, 41) if float(sq[order[:k]].sum()) >= 0.99 * total)
    assert heavy_directions(labels, sq) == len(set(labels[order[:n_heavy]].tolist()))
    assert norm_shares(labels, sq, (1,)) == (s.largest_cluster_norm_share,)


def test_random_direction_baseline_equals_its_seeded_draws():
    g = torch.Generator().manual_seed(3)
    counts = [int(condensed_directions(cosine_matrix(torch.randn(100, 2, generator=g, dtype=torch.float64))).max())
              + 1 for _ in range(5)]
    assert random_directions_baseline(100, 2, seed=3) == sum(counts) / 5
    assert 3 < random_directions_baseline(100, 2) < 15  # random lines in the plane cluster by chance
    assert random_directions_baseline(100, 50) == 100.0  # in 50 dimensions they never do


def test_a_one_dimensional_input_gets_bias_aware_ranks_and_its_baseline():
    torch.manual_seed(0)
    net = ThreeLayerNet(1, 100, 1, init_gamma=1.5)
    w, b = net.layer1.weight.detach(), net.layer1.bias.detach()
    s = condensation_stats(w, b)
    aug = torch.cat([w, b[:, None]], 1)  # (100, 2)
    assert effective_rank(w) == pytest.approx(1.0) and s.effective_rank == pytest.approx(effective_rank(aug))
    assert s.stable_rank == pytest.approx(stable_rank(aug)) and s.effective_rank > 1.8  # random init: 2 dims
    assert s.n_directions_random == random_directions_baseline(100, 2)
    assert s.n_directions <= 1.5 * s.n_directions_random  # at a random init the count is at its chance level


# ---------------------------------------------------------------- pictures
def test_eigenvector_order_is_the_sorted_leading_eigenvector():
    w = _heavy_and_small(seed=1)[:10]  # one line, both signs
    w = torch.cat([w, torch.randn(6, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)])
    c = cosine_matrix(w)
    perm = eigenvector_order(c)
    vals, vecs = torch.linalg.eigh(c)
    lead = vecs[:, -1] * torch.sign(vecs[vecs[:, -1].abs().argmax(), -1])
    assert torch.equal(perm, torch.argsort(-lead, stable=True))
    # the ten aligned neurons sit at the two ends (one sign each), with the unaligned ones between them
    ends = set(perm[:3].tolist()) | set(perm[-3:].tolist())
    assert ends <= set(range(10))
    assert condensation_stats(w).order.tolist() == perm.tolist()  # the default order
    assert condensation_stats(w, order="cluster").order.tolist() != perm.tolist()


def test_orientation_and_amplitude_equal_their_definition():
    g = torch.Generator().manual_seed(0)
    w, b, a = torch.randn(7, 1, generator=g), torch.randn(7, generator=g), torch.randn(3, 7, generator=g)
    angle, amp = orientation_amplitude(w, b, a)
    for k in range(7):
        assert float(angle[k]) == pytest.approx(math.atan2(float(b[k]), float(w[k, 0])), abs=1e-12)
        assert float(amp[k]) == pytest.approx(float(a[:, k].norm()) * math.hypot(float(w[k, 0]), float(b[k])),
                                              rel=1e-6)
    with pytest.raises(ValueError, match="1-D input"):
        orientation_amplitude(torch.randn(4, 2), None, None)


def test_an_early_bump_then_slow_growth_is_no_initial_stage():
    # the norm ratios of γ = 0.5's layer 1 under SGD (log-spaced probes, measured): fastest at the start, a dip,
    # then slow growth past 2 — no plateau, no blow-up
    steps = [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50, 63, 79, 100, 126, 158, 200, 251, 300]
    ratios = [1.0, 1.0197, 1.0519, 1.0938, 1.0786, 1.1079, 1.1117, 1.1448, 1.2169, 1.2607, 1.2495, 1.2557, 1.2594,
              1.2925, 1.2921, 1.3185, 1.3331, 1.3556, 1.4212, 1.5231, 1.706, 2.0951, 2.2004, 2.1482]
    peak = GrowthPeak(min_ratio=2.0)
    for step, ratio in zip(steps, ratios):
        peak.update(step, ratio)
    assert peak.end is None
    # the same start followed by a blow-up: found, at the probe of the fastest growth
    for step, ratio in [(310, 2.3), (320, 6.0), (330, 15.0), (340, 16.0)]:
        peak.update(step, ratio)
    assert peak.end == 320
