"""Known answers and properties of the AND-OR interaction measures (SCIENCE.md §3)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lightning_probes.measures.interactions import (
    Players,
    and_or_interactions,
    count_by_order,
    dense_mobius_matrix,
    dense_or_matrix,
    dense_zeta_matrix,
    fit_linear_probe,
    interaction_change,
    log_odds,
    masked_outputs,
    merge_first_order,
    mobius_transform,
    reconstruct,
    salient_iou,
    salient_mask,
    sparse_and_or,
    strongest_interactions,
    subset_masks,
    superset_zeta_transform,
    zeta_transform,
)

F64 = torch.float64


def _bits(players: list[int]) -> int:
    return sum(1 << i for i in players)


def _direct_reconstruction(i_and: torch.Tensor, i_or: torch.Tensor) -> torch.Tensor:
    """Σ_{S⊆T} I_and(S) + Σ_{S∩T≠∅, S≠∅} I_or(S) by the double sum of the definition."""
    m = i_and.shape[-1]
    t = torch.arange(m)
    subset = (t[:, None] & t[None, :]) == t[None, :]  # [T, S]: S ⊆ T
    meets = (t[:, None] & t[None, :]) != 0  # [T, S]: S ∩ T ≠ ∅
    return i_and @ subset.to(F64).T + i_or @ meets.to(F64).T


# ------------------------------------------------------------------------- known answers
class AndOrNet(nn.Module):
    """Two-class head whose log-odds on binary inputs is 3·[x0 ∧ x2 ∧ x5] + 2·[x1 ∨ x3]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 3.0 * x[:, 0] * x[:, 2] * x[:, 5] + 2.0 * torch.maximum(x[:, 1], x[:, 3])
        return torch.stack((score, torch.zeros_like(score)), -1)


@pytest.mark.parametrize("method", ["admm", "lp"])
def test_exact_and_plus_or_network_yields_exactly_those_interactions(method: str) -> None:
    players = Players.features(list(range(6)), num_features=6)
    x = torch.ones(1, 6)
    logits = masked_outputs(AndOrNet(), x, players, baseline=torch.zeros(6))  # (1, 64, 2)
    v = log_odds(logits, torch.tensor([0])).values.to(F64)  # (1, 64)
    out = sparse_and_or(v, kappa=0.0, method=method, tol=1e-12, exact_fallback=False)  # ADMM to its cap
    expected_and = torch.zeros(64, dtype=F64)
    expected_and[_bits([0, 2, 5])] = 3.0
    expected_or = torch.zeros(64, dtype=F64)
    expected_or[_bits([1, 3])] = 2.0
    atol = 1e-6 if method == "lp" else 1e-3  # the first-order solver is accurate, not exact
    torch.testing.assert_close(out.i_and[0], expected_and, atol=atol, rtol=0)
    torch.testing.assert_close(out.i_or[0], expected_or, atol=atol, rtol=0)
    mask = salient_mask(*merge_first_order(out.i_and, out.i_or))
    assert torch.nonzero(mask[0]).tolist() == [[0, _bits([0, 2, 5])], [1, _bits([1, 3])]]
    assert count_by_order(mask).tolist() == [[0, 0, 1, 1, 0, 0, 0]]
    # with noise |δ| ≤ 0.04·5 the optimum is 5 - 0.2 (matching at T = N bounds Σ|I| ≥ u(N) - δ_N), and the two
    # true interactions stay the strongest (the optimum is degenerate below them)
    noisy = sparse_and_or(v, method=method, tol=1e-3)  # certified within 0.1% (ADMM, or its exact fallback)
    assert noisy.objective.item() == pytest.approx(4.8, rel=2e-3)
    top = strongest_interactions(noisy.i_and, noisy.i_or, k=2)[0]
    assert {(kind, players) for kind, players, _ in top} == {("AND", ("0", "2", "5")), ("OR", ("1", "3"))}


def test_strongest_interactions_names_player_sets() -> None:
    i_and = torch.zeros(1, 8, dtype=F64)
    i_or = torch.zeros(1, 8, dtype=F64)
    i_and[0, _bits([0, 2])] = 3.0
    i_or[0, _bits([1])] = -1.0
    assert strongest_interactions(i_and, i_or, k=3, names=["a", "b", "c"]) == [
        [("AND", ("a", "c"), 3.0), ("OR", ("b",), -1.0)]
    ]


# ------------------------------------------------------------------------- fast == dense
@pytest.mark.parametrize("n", [1, 3, 5, 8])
def test_fast_transforms_equal_dense_definitions(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    f = torch.randn(3, 1 << n, dtype=F64, generator=g)
    z = dense_zeta_matrix(n)
    torch.testing.assert_close(zeta_transform(f), f @ z.T)
    torch.testing.assert_close(superset_zeta_transform(f), f @ z)
    torch.testing.assert_close(mobius_transform(f), f @ dense_mobius_matrix(n).T)
    torch.testing.assert_close(mobius_transform(zeta_transform(f)), f)
    # the interactions of the definition, through the dense AND / OR matrices
    gamma = torch.randn(3, 1 << n, dtype=F64, generator=g)
    delta = 0.1 * torch.randn(3, 1 << n, dtype=F64, generator=g)
    i_and, i_or = and_or_interactions(f, gamma, delta)
    pinned = gamma.clone()
    pinned[:, 0] = 0.5 * (f[:, 0] - delta[:, 0])
    v_and = 0.5 * (f - delta) + pinned
    v_or = 0.5 * (f - delta) - pinned
    torch.testing.assert_close(i_and, v_and @ dense_mobius_matrix(n).T)
    expected_or = v_or @ dense_or_matrix(n).T
    expected_or[:, 0] = 0.0
    torch.testing.assert_close(i_or, expected_or)
    torch.testing.assert_close(reconstruct(i_and, i_or), _direct_reconstruction(i_and, i_or))


def test_multi_block_transform_equals_dense_at_n11() -> None:
    """n = 11 takes three Kronecker blocks (5 + 5 + 1 players) and two bit rotations."""
    f = torch.randn(2, 1 << 11, dtype=F64, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(zeta_transform(f), f @ dense_zeta_matrix(11).T)


def test_graph_projection_equals_dense_normal_equations() -> None:
    from lightning_probes.measures.interactions import _GraphProjector

    n = 6
    g = torch.Generator().manual_seed(6)
    x, a = torch.randn(2, 3, 1 << n, dtype=F64, generator=g)
    z = dense_zeta_matrix(n)
    x_star = torch.linalg.solve(torch.eye(1 << n, dtype=F64) + z.T @ z, (x + a @ z).T).T
    px, pa = _GraphProjector(n, F64, torch.device("cpu")).project(torch.stack((x, a)))
    torch.testing.assert_close(px, x_star)
    torch.testing.assert_close(pa, x_star @ z.T)


def test_dense_matrices_follow_the_subset_definition() -> None:
    n = 3
    m = dense_mobius_matrix(n)
    for s in range(1 << n):
        for t in range(1 << n):
            sub = (s & t) == t
            sign = (-1) ** (bin(s).count("1") - bin(t).count("1"))
            assert m[s, t] == (sign if sub else 0)


# ------------------------------------------------------------------------- universal matching
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_universal_matching_on_random_mlps_for_any_gamma(seed: int) -> None:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(12, 32), nn.Tanh(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)).double()
    players = Players.features([[0, 1], [2, 3], [4], [5, 6, 7], [8], [9, 10], [11]], num_features=12)
    x = torch.randn(4, 12, dtype=F64)
    with torch.no_grad():
        logits = masked_outputs(net, x, players)  # (4, 128, 5)
    v = log_odds(logits, torch.tensor([0, 1, 2, 3])).values  # (4, 128)
    gamma = 10 * torch.randn_like(v)
    delta = torch.randn_like(v)
    i_and, i_or = and_or_interactions(v, gamma, delta)
    assert (reconstruct(i_and, i_or) - (v - delta)).abs().max() < 1e-6
    assert (_direct_reconstruction(i_and, i_or) - (v - delta)).abs().max() < 1e-6
    torch.testing.assert_close(i_and[:, 0], v[:, 0] - delta[:, 0])
    # a free γ_∅ breaks it: the pin is what makes matching hold
    half = 0.5 * (v - delta)
    free_and = mobius_transform(half + gamma)
    free_or = -mobius_transform((half - gamma).flip(-1))
    free_or[:, 0] = 0
    assert (reconstruct(free_and, free_or) - (v - delta)).abs().max() > 1e-3


# ------------------------------------------------------------------------- the solver
def test_decomposition_solves_the_problem_it_states() -> None:
    g = torch.Generator().manual_seed(3)
    v = torch.randn(3, 64, dtype=F64, generator=g)
    for method in ("admm", "lp"):
        out = sparse_and_or(v, method=method)
        kappa = 0.04 * (v[:, -1] - v[:, 0]).abs()
        assert bool((out.delta.abs() <= kappa[:, None] + 1e-12).all())
        assert (out.delta[:, 0] == 0).all()
        torch.testing.assert_close(reconstruct(out.i_and, out.i_or), v - out.delta, atol=1e-9, rtol=0)
        i_and, i_or = and_or_interactions(v, out.gamma, out.delta)  # γ, δ reproduce the interactions
        torch.testing.assert_close(i_and, out.i_and, atol=1e-9, rtol=0)
        torch.testing.assert_close(i_or, out.i_or, atol=1e-9, rtol=0)
        torch.testing.assert_close(out.objective, out.i_and[:, 1:].abs().sum(-1) + out.i_or[:, 1:].abs().sum(-1))


def test_default_solver_beats_sgd_recipe_and_is_within_5_percent_of_lp_at_n8() -> None:
    g = torch.Generator().manual_seed(0)
    v = 2.0 * torch.randn(2, 256, dtype=F64, generator=g)
    lp = sparse_and_or(v, method="lp")
    default = sparse_and_or(v)
    sgd = sparse_and_or(v, method="sgd")
    assert bool((lp.objective <= sgd.objective + 1e-9).all())
    assert bool((default.lower_bound <= lp.objective + 1e-6).all())  # the dual bound is a valid bound
    assert bool((default.objective >= lp.objective - 1e-6).all())
    assert bool((default.objective <= 1.05 * lp.objective).all()), (default.objective / lp.objective).tolist()
    assert bool((default.objective <= sgd.objective).all()), (default.objective, sgd.objective)


def test_default_solver_within_5_percent_of_lp_on_network_games() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 3)).double()
    x = torch.randn(3, 8, dtype=F64)
    with torch.no_grad():
        logits = masked_outputs(net, x, Players.features(list(range(8)), num_features=8))
    v = log_odds(logits, torch.tensor([0, 1, 2])).values
    lp = sparse_and_or(v, method="lp")
    default = sparse_and_or(v)
    assert bool((default.objective <= 1.05 * lp.objective).all()), (default.objective / lp.objective).tolist()


def test_sgd_recipe_equals_autograd_and_torch_sgd_on_dense_matrices() -> None:
    """The recipe's hand-written subgradient step is torch.optim.SGD with autograd on the dense matrices."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(2, 16, dtype=F64, generator=g)
    steps, lr, lr_end = 30, 1e-2, 1e-3
    ours = sparse_and_or(v, method="sgd", sgd_steps=steps, sgd_lr=lr, sgd_lr_end=lr_end)
    u = v - v[:, :1]
    kappa = 0.04 * u[:, -1:].abs()
    free = torch.ones(16, dtype=F64)
    free[0] = 0
    gamma = torch.zeros_like(u, requires_grad=True)
    delta = torch.zeros_like(u, requires_grad=True)
    opt = torch.optim.SGD([gamma, delta], lr=lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(lr_end / lr) ** (1 / steps))
    for _ in range(steps):
        half = 0.5 * (u - delta * free)
        i_and = (half + gamma * free) @ dense_mobius_matrix(4).T
        i_or = (half - gamma * free) @ dense_or_matrix(4).T
        loss = i_and[:, 1:].abs().sum() + i_or[:, 1:].abs().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            delta.copy_(torch.minimum(torch.maximum(delta, -kappa), kappa))
    torch.testing.assert_close(ours.delta, (delta * free).detach())
    torch.testing.assert_close(ours.gamma[:, 1:], (gamma + 0.5 * v[:, :1]).detach()[:, 1:])


def test_solver_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2\\^n"):
        sparse_and_or(torch.zeros(1, 6))
    with pytest.raises(ValueError, match="NaN"):
        sparse_and_or(torch.full((1, 4), math.nan))
    with pytest.raises(ValueError, match="method"):
        sparse_and_or(torch.zeros(1, 4), method="simplex")


# ------------------------------------------------------------------------- players and the game
def test_image_patches_partition_and_masking() -> None:
    players = Players.image_patches((4, 4), (8, 8), flatten=True)
    assert players.n == 16 and sorted(torch.bincount(players.groups).tolist()) == [4] * 16
    assert players.groups.view(8, 8)[:2, :2].unique().tolist() == [0]
    assert players.groups.view(8, 8)[6:, 6:].unique().tolist() == [15]
    some = Players.image_patches((2, 4), (1, 8, 8), select=[5, 1], rest="baseline")
    x = torch.ones(1, 1, 8, 8)
    out = some.mask(x, torch.tensor([[True, False]]), baseline=torch.zeros(1, 8, 8))
    assert out.sum() == 8 and out[0, 0, 4:, 2:4].sum() == 8  # patch 5 = row 1, col 1 kept; the rest baseline
    with pytest.raises(ValueError, match="divide"):
        Players.image_patches((3, 3), (8, 8))


def test_players_must_partition_the_input() -> None:
    with pytest.raises(ValueError, match="overlap"):
        Players.features([[0, 1], [1, 2]], num_features=4)
    with pytest.raises(ValueError, match="outside"):
        Players.features([[0, 9]], num_features=4)
    with pytest.raises(ValueError, match="own no input"):
        Players(torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match="shape"):
        Players.features([0, 1], num_features=2).mask(torch.ones(1, 3), torch.ones(1, 2, dtype=torch.bool), 0.0)


def test_token_players_mask_embeddings_and_ids() -> None:
    players = Players.tokens([0, [1, 2]], seq_len=4)
    emb = torch.ones(1, 4, 3)
    out = players.mask(emb, torch.tensor([[False, True]]), baseline=torch.zeros(4, 3))
    assert out[0].sum(-1).tolist() == [0.0, 3.0, 3.0, 3.0]  # position 3 is no player: kept
    ids = torch.tensor([[5, 6, 7, 8]])
    assert players.mask(ids, torch.tensor([[True, False]]), baseline=0).tolist() == [[5, 0, 0, 8]]


def test_masked_outputs_are_batch_size_independent_and_match_masks() -> None:
    torch.manual_seed(0)
    net = nn.Linear(6, 3)
    players = Players.features([[0, 1], [2], [3, 4, 5]], num_features=6)
    x = torch.randn(5, 6)
    with torch.no_grad():
        small = masked_outputs(net, x, players, batch_size=7)
        big = masked_outputs(lambda z: {"out": net(z)}, x, players, batch_size=10_000)["out"]
        torch.testing.assert_close(small, big)
        base = x.mean(0)
        keep = subset_masks(3)[5]  # players 0 and 2
        direct = net(torch.where(players.element_mask(keep[None])[0], x[2], base))
    torch.testing.assert_close(small[2, 5], direct)


def test_log_odds_equals_softmax_formula_and_flags_saturation() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, dtype=F64, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    p = logits.softmax(-1)[torch.arange(6), y]
    out = log_odds(logits, y)
    torch.testing.assert_close(out.values, torch.log(p / (1 - p)))
    assert not out.clamped.any()
    binary = log_odds(torch.tensor([[2.0], [2.0]]), torch.tensor([1, 0]))
    assert binary.values.tolist() == [2.0, -2.0]
    sat = log_odds(torch.tensor([[100.0, 0.0]]), torch.tensor([1]))
    assert sat.clamped.tolist() == [True] and sat.values.item() == -16.0
    with pytest.raises(ValueError, match="classification"):
        log_odds(torch.randn(2, 3), torch.randn(2))


# ------------------------------------------------------------------------- salient sets and change terms
def test_change_terms_by_hand_and_identities() -> None:
    layer = (torch.tensor([[0.0, 2.0, 1.0, -1.0]]), torch.tensor([[0.0, 0.0, 0.0, 0.5]]))
    final = (torch.tensor([[0.0, 3.0, -1.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 1.0]]))
    ml, mf = salient_mask(*layer), salient_mask(*final)
    ch = interaction_change(layer, final, ml, mf)
    # order 1: {0} shared 2 (3 new-side excess 1); {1} signs differ (forget 1, new 1)
    # order 2: AND {0,1} only in layer (forget 1); OR {0,1} shared 0.5 (new excess 0.5)
    assert ch.overlap.tolist() == [[0.0, 2.0, 0.5]]
    assert ch.forget.tolist() == [[0.0, 1.0, 1.0]]
    assert ch.new.tolist() == [[0.0, 2.0, 0.5]]
    torch.testing.assert_close(ch.completeness[1:], torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(ch.redundancy[1:], torch.tensor([1 / 3, 2 / 3]))
    same = interaction_change(layer, layer, ml, ml)
    assert same.completeness[1:].tolist() == [1.0, 1.0] and same.redundancy[1:].tolist() == [0.0, 0.0]
    assert math.isnan(same.completeness[0])  # no interaction of order 0
    assert salient_iou(ml, ml).item() == 1.0
    assert salient_iou(ml, mf).item() == pytest.approx(3 / 4)  # AND {0}, {1}, OR {0,1} of 4 in the union


def test_linear_probe_fits_layer_features() -> None:
    g = torch.Generator().manual_seed(0)
    centers = 4 * torch.randn(3, 5, generator=g)
    y = torch.arange(60) % 3
    f = centers[y] + torch.randn(60, 5, generator=g)
    probe = fit_linear_probe(f, y, 3)
    assert probe.accuracy == 1.0
    assert probe(f[None]).shape == (1, 60, 3)
