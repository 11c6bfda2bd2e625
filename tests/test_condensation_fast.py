"""The faster forms inside the condensation probe equal the direct float64 formulas (SCIENCE.md §2).

Direct forms: the torch Gram ``w @ w.T`` and ``torch.linalg.eigvalsh`` for the singular values, SciPy's
average linkage on all neurons for the condensed directions, the full ``torch.linalg.eigh`` for the heatmap
order. Checked on random (initialisation-like), condensed and rank-deficient / ill-conditioned layers: the
condensed layers of the papers are rank-deficient (many neurons on a few lines), so the small singular values and
exact duplicates are the cases that matter.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform
from test_condensation_measures import condensed_layer

from lightning_probes.measures.condensation import (
    _average_linkage_clusters,
    _eigvalsh,
    _gram,
    _leading_eigenvector,
    _relabel_by_size,
    all_finite,
    cluster_order,
    condensation_stats,
    condensed_directions,
    cosine_matrix,
    eigenvector_order,
    singular_values,
)


def direct_labels(cosine: torch.Tensor, threshold: float = 0.95, signed: bool = False) -> torch.Tensor:
    """SciPy's average linkage on every alive neuron at once (the form used before), labels by size."""
    alive = cosine.diagonal() > 0.5
    idx = alive.nonzero().squeeze(1)
    c = cosine[idx][:, idx]
    dist = (1.0 - (c if signed else c.abs())).clamp_min(0.0).numpy()
    np.fill_diagonal(dist, 0.0)
    flat = fcluster(linkage(squareform(dist, checks=False), "average"), t=1.0 - threshold, criterion="distance")
    labels = torch.full((cosine.shape[0],), -1, dtype=torch.long)
    labels[idx] = _relabel_by_size(torch.as_tensor(flat, dtype=torch.long) - 1)
    return labels


def direct_singular_values(w: torch.Tensor) -> torch.Tensor:
    """σ from torch's float64 Gram and torch's eigvalsh, zeros below r·ε·λ_max (the form used before)."""
    w = w.double()
    lam = torch.linalg.eigvalsh(w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w).flip(0)
    tol = lam.shape[0] * torch.finfo(lam.dtype).eps * lam[0].clamp_min(0)
    return torch.where(lam > tol, lam, 0.0).sqrt()


def layers() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, W, b): random, condensed, exact duplicates, exactly low rank, ill-conditioned, with dead neurons."""
    g = torch.Generator().manual_seed(3)
    out = [("random", torch.randn(300, 200, generator=g) / 15, torch.randn(300, generator=g) / 15)]
    for k, noise in ((3, 1e-3), (6, 0.02), (4, 0.06)):
        w, b, _, _ = condensed_layer(k, m=240, d=40, noise=noise, seed=k)
        out.append((f"condensed k={k} noise={noise}", w, b))
    w, b, _, _ = condensed_layer(5, m=200, d=30, noise=0.0, seed=1)  # exact lines: rank 5, exact duplicates
    out.append(("exact lines", w, b))
    q = torch.linalg.qr(torch.randn(150, 150, generator=g)).Q
    out.append(("ill-conditioned", (q * torch.logspace(0, -9, 150)) @ q.T, torch.zeros(150)))
    w = torch.randn(120, 8, generator=g) @ torch.randn(8, 90, generator=g)  # rank 8
    w[::7] = 0.0  # dead neurons
    b = torch.randn(120, generator=g)
    b[::7] = 0.0
    out.append(("rank 8 with dead neurons", w, b))
    return out


LAYERS = layers()


@pytest.mark.parametrize("name, w, b", LAYERS, ids=[n for n, _, _ in LAYERS])
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("threshold", [0.95, 0.8])
def test_clustering_per_component_equals_linkage_on_all_neurons(name, w, b, signed, threshold) -> None:
    c = cosine_matrix(w, b)
    assert torch.equal(condensed_directions(c, threshold, signed), direct_labels(c, threshold, signed))


def test_component_clustering_has_nontrivial_components_and_singletons() -> None:
    # a mix: 3 condensed lines plus isolated random neurons, so both branches (linkage and singletons) run
    w, b, _, _ = condensed_layer(3, m=90, d=40, noise=0.03, seed=2)
    g = torch.Generator().manual_seed(0)
    w = torch.cat([w, torch.randn(60, 40, generator=g)])
    b = torch.cat([b, torch.randn(60, generator=g)])
    c = cosine_matrix(w, b)
    dist = (1 - c.abs()).clamp_min(0).numpy()
    raw = _average_linkage_clusters(dist, 0.05)
    sizes = torch.bincount(raw)
    assert (sizes == 1).sum() >= 50 and sizes.max() >= 20
    assert torch.equal(condensed_directions(c), direct_labels(c))


@pytest.mark.parametrize("name, w, b", LAYERS, ids=[n for n, _, _ in LAYERS])
def test_singular_values_equal_the_direct_float64_formula(name, w, b) -> None:
    fast = condensation_stats(w, b, baseline=False)
    ref = direct_singular_values(w)
    assert ref.shape[0] == min(w.shape)
    # the same LAPACK reduction in another library: equal to rounding of the Gram (n·ε·λ_max on the eigenvalues)
    lam_fast = _eigvalsh(_gram(w.double()) if w.shape[0] <= w.shape[1] else _gram(w.double().T))
    lam_ref = ref.flip(0) ** 2
    assert torch.allclose(lam_fast.clamp_min(0) * (lam_ref > 0), lam_ref, rtol=0, atol=1e-12 * float(lam_ref.max()))
    # the counted rank is the same, and the reported figures agree to 1e-9 relative
    assert int((singular_values(w) > 0).sum()) == int((ref > 0).sum())
    if name in ("exact lines", "rank 8 with dead neurons"):  # the zeros are found: the rank of the exact lines
        assert int((ref > 0).sum()) == (5 if name == "exact lines" else 8)
    p = ref / ref.sum()
    p = p[p > 0]
    assert fast.effective_rank == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-9)
    assert fast.stable_rank == pytest.approx(float((ref**2).sum() / ref[0] ** 2), rel=1e-9)


@pytest.mark.parametrize("name, w, b", LAYERS, ids=[n for n, _, _ in LAYERS])
def test_gram_equals_torch_product(name, w, b) -> None:
    w = w.double()
    assert torch.allclose(_gram(w), w @ w.T, rtol=0, atol=1e-13 * float((w * w).sum(1).max()))


@pytest.mark.parametrize("name, w, b", [x for x in LAYERS if x[0] != "exact lines"],
                         ids=[n for n, _, _ in LAYERS if n != "exact lines"])
def test_lanczos_heatmap_order_equals_the_full_eigh(name, w, b) -> None:
    c = cosine_matrix(w, b)
    lead = _leading_eigenvector(c)
    ref = torch.linalg.eigh(c)[1][:, -1]
    assert float(lead @ lead) == pytest.approx(1.0, abs=1e-12)
    assert float(torch.minimum((lead - ref).abs().max(), (lead + ref).abs().max())) < 1e-8
    ref = ref if ref[ref.abs().argmax()] > 0 else -ref
    direct = torch.argsort(-ref, stable=True)
    fast = eigenvector_order(c)
    # the same order, except among neurons whose entries agree to 1e-8 (ties that rounding alone decides)
    assert torch.allclose(ref[fast], ref[direct], rtol=0, atol=1e-8)
    gaps = (ref[direct][:-1] - ref[direct][1:]).abs()
    clear = torch.cat([gaps > 1e-8, torch.tensor([True])]) & torch.cat([torch.tensor([True]), gaps > 1e-8])
    assert torch.equal(fast[clear], direct[clear])


def test_lanczos_on_exact_duplicates_keeps_duplicate_blocks_together() -> None:
    # exact lines: the leading eigenvalue may be degenerate (any vector of its space is "the" eigenvector), so
    # compare what the order is for: neurons on one line with one sign have equal entries and sit together
    _, w, b = next(x for x in LAYERS if x[0] == "exact lines")
    c = cosine_matrix(w, b)
    lead = _leading_eigenvector(c)
    assert float(torch.linalg.vector_norm(c @ lead - (lead @ c @ lead) * lead)) < 1e-9
    top = torch.linalg.eigvalsh(c)[-1]
    assert float(lead @ c @ lead) == pytest.approx(float(top), rel=1e-12)


def test_the_large_cosine_matrix_goes_through_lanczos_and_matches() -> None:
    g = torch.Generator().manual_seed(5)
    w = torch.randn(700, 701, generator=g)  # the initialisation-like case of the benchmark, gap small
    c = cosine_matrix(w)
    ref = torch.linalg.eigh(c)[1][:, -1]
    lead = _leading_eigenvector(c)
    assert float(torch.minimum((lead - ref).abs().max(), (lead + ref).abs().max())) < 1e-8


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_all_finite_equals_the_elementwise_test(dtype) -> None:
    g = torch.Generator().manual_seed(3)
    big = torch.finfo(dtype).max
    cases = [torch.randn(40, 30, generator=g), torch.zeros(0), torch.full((8,), big, dtype=dtype),
             torch.full((8,), -big, dtype=dtype)]
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = torch.randn(40, 30, generator=g)
        x[7, 11] = bad
        cases.append(x)
    both = torch.tensor([float("inf"), -float("inf"), 1.0])  # inf + (-inf): the sum is NaN, still non-finite
    cases.append(both)
    for x in cases:
        x = x.to(dtype)
        assert all_finite(x) == bool(torch.isfinite(x).all()), x
    # finite float64 entries whose sum overflows: the sum is inf, the elementwise test decides (finite)
    huge = torch.full((4,), torch.finfo(torch.float64).max, dtype=torch.float64)
    assert math.isinf(float(huge.sum())) and all_finite(huge)
    assert all_finite(torch.arange(5)) and all_finite(torch.tensor([True]))  # integers and booleans are finite


@pytest.mark.parametrize("order", ["eigenvector", "cluster"])
def test_the_heatmap_order_is_computed_on_first_read_and_equals_the_direct_one(order) -> None:
    _, w, b = next(x for x in LAYERS if x[0] == "exact lines")
    stats = condensation_stats(w, b, order=order)
    assert "order" not in vars(stats)  # a probe that draws no heatmap never pays for the order
    direct = eigenvector_order(stats.cosine) if order == "eigenvector" else cluster_order(stats.labels, stats.cosine)
    assert torch.equal(stats.order, direct)
    assert "order" in vars(stats) and stats.order is stats.order  # computed once


def test_relative_change_inside_the_stats_equals_the_public_function() -> None:
    g = torch.Generator().manual_seed(4)
    w0 = torch.randn(64, 9, generator=g)
    w = w0 + 1e-3 * torch.randn(64, 9, generator=g)
    stats = condensation_stats(w, None, w0)
    direct = float(torch.linalg.norm(w.double() - w0.double()) / torch.linalg.norm(w0.double()))
    assert stats.relative_change == pytest.approx(direct, rel=1e-15)
    assert stats.norm_ratio == pytest.approx(float(torch.linalg.norm(w.double()) / torch.linalg.norm(w0.double())),
                                             rel=1e-15)
    bad = w0.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="initial_weight contains NaN"):
        condensation_stats(w, None, bad)
