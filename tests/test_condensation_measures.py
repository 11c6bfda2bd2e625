"""Condensation measures (SCIENCE.md §2): known answers first, then properties and fast == direct formulas."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.spatial.distance import squareform

from lightning_probes.measures.condensation import (
    cluster_order,
    cluster_shares,
    condensation_stats,
    condensed_directions,
    cosine_matrix,
    effective_rank,
    neuron_directions,
    relative_change,
    sample_neurons,
    singular_values,
    stable_rank,
)


def condensed_layer(
    k: int, m: int = 60, d: int = 12, noise: float = 1e-3, seed: int = 0, both_signs: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A layer whose augmented rows [W_k, b_k] lie on exactly k lines (random signs and lengths, small noise).

    Returns W (m, d), b (m,), the line of each neuron (m,) and its sign (m,).
    """
    g = torch.Generator().manual_seed(seed)
    lines = torch.linalg.qr(torch.randn(d + 1, k, generator=g)).Q.T  # (k, d+1) orthonormal: far apart
    line = torch.arange(m) % k  # (m,) every line used
    sign = torch.where(torch.arange(m) // k % 2 == 0, 1.0, -1.0) if both_signs else torch.ones(m)
    sign = sign[torch.randperm(m, generator=g)] if both_signs else sign
    # make sure each line carries both signs when asked (the permutation could break that for tiny m)
    if both_signs:
        for j in range(k):
            members = (line == j).nonzero().squeeze(1)
            sign[members[0]], sign[members[1]] = 1.0, -1.0
    length = 0.5 + torch.rand(m, 1, generator=g)  # (m, 1)
    rows = sign[:, None] * length * lines[line] + noise * torch.randn(m, d + 1, generator=g)  # (m, d+1)
    return rows[:, :d].contiguous(), rows[:, d].contiguous(), line, sign


# --- known answers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_k_lines_give_k_directions_and_2k_signed(k: int) -> None:
    w, b, line, sign = condensed_layer(k)
    labels = condensed_directions(cosine_matrix(w, b))
    assert int(labels.max()) + 1 == k
    # the clusters are exactly the lines (up to renaming)
    for j in range(k):
        assert len(set(labels[line == j].tolist())) == 1
    signed = condensed_directions(cosine_matrix(w, b), signed=True)
    assert int(signed.max()) + 1 == 2 * k
    pairs = {(int(a), float(s)) for a, s in zip(line, sign)}
    assert len(set(zip(signed.tolist(), [p for p in zip(line.tolist(), sign.tolist())]))) == len(pairs)


def test_signed_counts_only_the_signs_present() -> None:
    w, b, _, _ = condensed_layer(4, both_signs=False)
    assert int(condensed_directions(cosine_matrix(w, b), signed=True).max()) + 1 == 4


def test_bias_is_part_of_the_direction() -> None:
    # identical input weights, biases of opposite sign: two lines only once the bias counts
    w = torch.ones(6, 1)
    b = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0])
    assert int(condensed_directions(cosine_matrix(w)).max()) + 1 == 1
    assert int(condensed_directions(cosine_matrix(w, b)).max()) + 1 == 2


def test_threshold_is_the_cut_in_cosine() -> None:
    angle = math.acos(0.9)
    w = torch.tensor([[1.0, 0.0], [math.cos(angle), math.sin(angle)]])  # cos = 0.9 exactly
    assert int(condensed_directions(cosine_matrix(w), threshold=0.89).max()) + 1 == 1
    assert int(condensed_directions(cosine_matrix(w), threshold=0.91).max()) + 1 == 2


def test_average_linkage_not_single_linkage() -> None:
    # a chain of directions 10 degrees apart: neighbours have cos 0.985 > 0.95, but the chain's average does not
    angles = torch.deg2rad(torch.arange(0.0, 90.0, 10.0))
    w = torch.stack([angles.cos(), angles.sin()], dim=1)  # (9, 2)
    labels = condensed_directions(cosine_matrix(w), threshold=0.95)
    assert 1 < int(labels.max()) + 1 < 9
    # each cluster's average pairwise |cos| clears the threshold
    c = cosine_matrix(w)
    for j in range(int(labels.max()) + 1):
        members = (labels == j).nonzero().squeeze(1)
        if len(members) > 1:
            block = c[members][:, members].abs()
            n = len(members)
            assert float((block.sum() - n) / (n * (n - 1))) >= 0.95


def test_effective_and_stable_rank_of_diagonal_matrices() -> None:
    assert effective_rank(torch.eye(5)) == pytest.approx(5.0)
    assert effective_rank(torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0]))) == pytest.approx(3.0)
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == pytest.approx(float(torch.exp(-(p * p.log()).sum())))
    assert effective_rank(torch.diag(torch.tensor([-2.0, 0.0, 0.0]))) == pytest.approx(1.0)
    assert stable_rank(torch.diag(torch.tensor([2.0, 1.0, 1.0]))) == pytest.approx(1.5)
    assert stable_rank(torch.eye(4)) == pytest.approx(4.0)
    assert effective_rank(torch.zeros(3, 3)) == 0.0 and stable_rank(torch.zeros(3, 3)) == 0.0


def test_ranks_are_invariant_to_rotations_and_rectangular_shape() -> None:
    g = torch.Generator().manual_seed(1)
    q1 = torch.linalg.qr(torch.randn(7, 7, generator=g, dtype=torch.float64)).Q
    q2 = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64)).Q
    d = torch.zeros(7, 4, dtype=torch.float64)
    d[:4, :4] = torch.diag(torch.tensor([4.0, 2.0, 1.0, 1.0]))
    w = q1 @ d @ q2  # (7, 4), singular values 4, 2, 1, 1
    p = torch.tensor([4.0, 2.0, 1.0, 1.0], dtype=torch.float64) / 8
    assert effective_rank(w) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-10)
    assert effective_rank(w.T) == pytest.approx(effective_rank(w), rel=1e-10)
    assert stable_rank(w) == pytest.approx(22 / 16, rel=1e-10)


def test_cluster_shares_known_answer() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, -1])
    assert cluster_shares(labels) == (3 / 8, 5 / 8, 7 / 8)
    assert cluster_shares(torch.tensor([0, 1])) == (0.5, 1.0, 1.0)
    assert cluster_shares(torch.tensor([-1, -1])) == (0.0, 0.0, 0.0)


def test_relative_change_known_answer() -> None:
    assert relative_change(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 4.0]])) == pytest.approx(0.75)
    assert relative_change(torch.ones(2, 2), torch.ones(2, 2)) == 0.0
    assert relative_change(torch.ones(2, 2), torch.zeros(2, 2)) == math.inf
    assert relative_change(torch.zeros(2, 2), torch.zeros(2, 2)) == 0.0


# --- fast == direct ---------------------------------------------------------------------------------------


def test_cosine_matrix_equals_the_direct_formula() -> None:
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(9, 5, generator=g), torch.randn(9, generator=g)
    a = torch.cat([w, b[:, None]], dim=1).double()  # (m, d+1)
    direct = torch.tensor(
        [[float(a[i] @ a[j] / (a[i].norm() * a[j].norm())) for j in range(9)] for i in range(9)], dtype=torch.float64
    )
    assert torch.allclose(cosine_matrix(w, b), direct, atol=1e-12)
    u, alive = neuron_directions(w, b)
    assert alive.all()
    assert torch.allclose(u.norm(dim=1), torch.ones(9, dtype=torch.float64))
    assert torch.allclose(cosine_matrix(w, b), u @ u.T, atol=1e-12)


def test_singular_values_from_the_gram_equal_svdvals() -> None:
    g = torch.Generator().manual_seed(3)
    for shape in [(30, 12), (12, 30), (25, 25)]:
        w = torch.randn(*shape, generator=g)
        direct = torch.linalg.svdvals(w.double())
        assert torch.allclose(singular_values(w), direct, rtol=1e-8, atol=1e-10)
        p = direct / direct.sum()
        assert effective_rank(w) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-10)
        assert stable_rank(w) == pytest.approx(float((direct**2).sum() / direct[0] ** 2), rel=1e-10)


def test_effective_rank_of_a_condensed_layer_matches_svdvals() -> None:
    # few large singular values and many tiny ones: the Gram route loses the tiny ones' digits below
    # sqrt(eps) * sigma_max, which must not move the effective rank
    w, _, _, _ = condensed_layer(3, m=120, d=100, noise=1e-4)
    direct = torch.linalg.svdvals(w.double())
    p = direct / direct.sum()
    assert effective_rank(w) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-6)


def test_exactly_low_rank_matrices_keep_their_rank() -> None:
    # rank 3 in float64: svdvals gives three values and ~1e-15 noise; the Gram route must not turn the noise
    # into a ~1e-8 tail that would lift the effective rank
    g = torch.Generator().manual_seed(8)
    w = torch.randn(200, 3, generator=g, dtype=torch.float64) @ torch.randn(3, 150, generator=g, dtype=torch.float64)
    sv = singular_values(w)
    assert int((sv > 0).sum()) == 3
    direct = torch.linalg.svdvals(w)[:3]
    assert torch.allclose(sv[:3], direct, rtol=1e-10)
    p = direct / direct.sum()
    assert effective_rank(w) == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-10)
    assert effective_rank(torch.ones(50, 40)) == pytest.approx(1.0, rel=1e-12)


def test_condensed_distances_are_in_scipy_order() -> None:
    # our triu-gather must give the same condensed vector as scipy's squareform: same clustering as direct
    from scipy.cluster.hierarchy import fcluster, linkage

    w, b, _, _ = condensed_layer(5, m=40, noise=0.05, seed=4)
    c = cosine_matrix(w, b)
    dist = (1 - c.abs()).clamp_min(0).numpy()
    dist[range(40), range(40)] = 0.0
    direct = fcluster(linkage(squareform(dist, checks=False), "average"), t=0.05, criterion="distance")
    ours = condensed_directions(c)
    # same partition: a pair is together in one iff together in the other
    same_direct = torch.as_tensor(direct)[:, None] == torch.as_tensor(direct)[None, :]
    assert torch.equal(ours[:, None] == ours[None, :], same_direct)


def test_stats_agree_with_the_single_functions() -> None:
    w, b, _, _ = condensed_layer(3, m=50, d=20, noise=1e-2)
    w0 = torch.randn(50, 20, generator=torch.Generator().manual_seed(5))
    s = condensation_stats(w, b, w0)
    assert torch.allclose(s.cosine, cosine_matrix(w, b), atol=1e-12)
    assert s.effective_rank == pytest.approx(effective_rank(w), rel=1e-10)
    assert s.stable_rank == pytest.approx(stable_rank(w), rel=1e-10)
    assert s.weight_norm == pytest.approx(float(w.double().norm()), rel=1e-10)
    assert s.relative_change == pytest.approx(float((w - w0).double().norm() / w0.double().norm()), rel=1e-6)
    assert s.n_directions == 3 and not s.sampled and s.dead_neurons == 0
    assert set(s.scalars()) == {
        "n_directions", "largest_cluster_share", "top2_share", "top4_share", "effective_rank", "stable_rank",
        "weight_norm", "dead_neurons", "relative_change", "norm_ratio", "largest_cluster_norm_share",
        "top2_norm_share", "top4_norm_share", "n_directions_weighted", "n_directions_random",
    }
    assert s.norm_ratio == pytest.approx(float(w.double().norm() / w0.double().norm()), rel=1e-10)
    assert not {"relative_change", "norm_ratio"} & set(condensation_stats(w, b).scalars())


# --- properties -------------------------------------------------------------------------------------------


def test_cluster_order_groups_clusters_with_aligned_members_first() -> None:
    w, b, _, _ = condensed_layer(4, m=40, noise=1e-3, seed=6)
    w[7], b[7] = 0.0, 0.0  # a dead neuron goes last
    c = cosine_matrix(w, b)
    labels = condensed_directions(c)
    perm = cluster_order(labels, c)
    assert sorted(perm.tolist()) == list(range(40))
    ordered = labels[perm]
    assert ordered[-1] == -1 and int(perm[-1]) == 7
    assert bool((ordered[:-1].diff() >= 0).all())  # contiguous blocks, largest (label 0) first
    for j in range(4):
        block = perm[ordered == j]
        to_first = c[block[0], block]
        assert bool((to_first.diff() <= 1e-12).all())  # aligned then opposite
        assert to_first[0] == 1.0 and to_first[-1] < 0


def test_dead_neurons_are_left_out_and_counted() -> None:
    w, b, _, _ = condensed_layer(2, m=20)
    w[[3, 11]], b[[3, 11]] = 0.0, 0.0
    u, alive = neuron_directions(w, b)
    assert alive.sum() == 18 and bool((u[~alive] == 0).all())
    c = cosine_matrix(w, b)
    assert bool((c[3] == 0).all()) and bool((c[:, 11] == 0).all())
    s = condensation_stats(w, b)
    assert s.dead_neurons == 2 and s.n_directions == 2
    assert s.labels[3] == -1 and s.labels[11] == -1
    assert s.largest_cluster_share + (s.top2_share - s.largest_cluster_share) == pytest.approx(1.0)
    # a neuron with zero weights but a bias is alive: its direction is the constant input
    w2, b2 = torch.zeros(3, 2), torch.tensor([1.0, -2.0, 0.0])
    assert condensation_stats(w2, b2).dead_neurons == 1
    assert condensation_stats(w2, b2).n_directions == 1
    assert condensation_stats(torch.zeros(4, 3)).n_directions == 0


def test_sampling_is_deterministic_and_consistent() -> None:
    a, b = sample_neurons(1000, 64, seed=0), sample_neurons(1000, 64, seed=0)
    assert torch.equal(a, b) and len(a.unique()) == 64 and bool((a.diff() > 0).all())
    assert not torch.equal(a, sample_neurons(1000, 64, seed=1))
    state = torch.get_rng_state()
    w, bias, _, _ = condensed_layer(3, m=300, d=10, seed=7)
    s = condensation_stats(w, bias, max_neurons=50)
    assert torch.equal(torch.get_rng_state(), state)
    assert s.sampled and s.n_neurons == 300 and len(s.neuron_indices) == 50 and s.cosine.shape == (50, 50)
    idx = s.neuron_indices
    assert torch.allclose(s.cosine, cosine_matrix(w[idx], bias[idx]), atol=1e-12)
    assert s.effective_rank == pytest.approx(effective_rank(w[idx]), rel=1e-10)
    assert s.weight_norm == pytest.approx(float(w.double().norm()), rel=1e-10)  # the whole layer
    assert s.n_directions == 3


def test_scale_invariance_of_directions() -> None:
    # directions and ranks do not depend on the overall scale of the layer (condensation is about angles)
    w, b, _, _ = condensed_layer(3, noise=0.02)
    s1, s2 = condensation_stats(w, b), condensation_stats(1e-3 * w, 1e-3 * b)
    assert s1.n_directions == s2.n_directions
    assert torch.equal(s1.labels, s2.labels)
    assert s1.effective_rank == pytest.approx(s2.effective_rank, rel=1e-6)  # float32 rounding of 1e-3 * w


# --- bad input --------------------------------------------------------------------------------------------


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        condensation_stats(torch.tensor([[1.0, float("nan")], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="NaN or inf"):
        cosine_matrix(torch.ones(2, 2), torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="2-D"):
        cosine_matrix(torch.ones(3, 2, 2))
    with pytest.raises(ValueError, match="bias must have shape"):
        cosine_matrix(torch.ones(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="threshold"):
        condensed_directions(torch.eye(3), threshold=1.5)
    with pytest.raises(ValueError, match="square"):
        condensed_directions(torch.ones(3, 2))
    with pytest.raises(ValueError, match="max_neurons"):
        sample_neurons(10, 1)
    with pytest.raises(ValueError, match="does not match"):
        condensation_stats(torch.ones(3, 2), initial_weight=torch.ones(2, 3))
    with pytest.raises(ValueError, match="do not match"):
        relative_change(torch.ones(3, 2), torch.ones(2, 3))
