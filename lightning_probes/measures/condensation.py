"""Condensation of neurons' input-weight directions in small-initialised networks.

With a small initialisation the hidden neurons of a network first align their input weights to a few
directions ("condensation") during an initial stage in which the weights barely grow; then the magnitudes rise
quickly. Two-layer nets: Luo, Xu, Ma & Zhang (JMLR 2021, phase diagram) and Zhou, Zhang, Xu et al.
(NeurIPS 2022, initial condensation); three-layer nets: Chen & Luo (2024, arXiv 2402.15958). The quantities
here are the ones of SCIENCE.md section 2, for one ``nn.Linear`` layer with weight W (m, d) and bias b (m,):

- neuron direction u_k = [W_k, b_k] / ‖[W_k, b_k]‖ and the cosine matrix C = U Uᵀ (m, m);
- condensed directions: average-linkage clusters under the distance 1 - |C_kj| (``signed=True``: 1 - C_kj, so
  a direction and its opposite stay apart), cut at 1 - threshold, with the share of neurons in the largest
  1, 2 and 4 clusters;
- effective rank exp(H(σ / Σσ)) of the singular values σ of W (Roy & Vetterli 2007), stable rank
  ‖W‖_F² / ‖W‖_2², the norm ‖W‖_F and the relative change ‖W_t - W_0‖_F / ‖W_0‖_F.

Everything is plain torch (float64 for the Gram matrices and the eigenvalues) plus SciPy's hierarchical
clustering; no Lightning import.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse.linalg
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from torch import Tensor

__all__ = [
    "CondensationStats",
    "GrowthPeak",
    "HeatmapOrder",
    "all_finite",
    "cluster_order",
    "cluster_shares",
    "condensation_stats",
    "condensed_directions",
    "cosine_matrix",
    "effective_rank",
    "eigenvector_order",
    "heavy_directions",
    "neuron_directions",
    "norm_shares",
    "orientation_amplitude",
    "random_directions_baseline",
    "relative_change",
    "sample_neurons",
    "singular_values",
    "stable_rank",
]

HeatmapOrder = Literal["eigenvector", "cluster"]
"""The neuron order of the cosine heatmap: by the leading eigenvector (the papers'), or clusters as blocks."""


def _check_layer(weight: Tensor, bias: Tensor | None) -> None:
    if weight.ndim != 2:
        raise ValueError(
            f"weight must be a 2-D (out_features, in_features) matrix like nn.Linear.weight, got shape "
            f"{tuple(weight.shape)}; flatten convolution kernels to (out_channels, -1) first."
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(
            f"bias must have shape ({weight.shape[0]},) to match weight {tuple(weight.shape)}, got "
            f"{tuple(bias.shape)}."
        )
    if not all_finite(weight) or (bias is not None and not all_finite(bias)):
        raise ValueError("The layer's weight or bias contains NaN or inf; condensation is undefined for it.")


def all_finite(t: Tensor) -> bool:
    """True when no entry of ``t`` is NaN or ±inf: ``bool(torch.isfinite(t).all())``, in one pass.

    A NaN or an inf entry makes the float64 sum NaN or inf, so a finite sum proves every entry finite; only a
    non-finite sum (a bad entry, or finite float64 entries whose sum overflows) takes the elementwise test, which
    decides. Narrower floats cannot overflow the float64 sum. One reduction instead of a boolean copy and a second
    pass: measured 3x faster on a 1024 x 1024 float32 weight; checked against the elementwise test in the tests.

    Example:
        >>> all_finite(torch.tensor([1.0, -2.0])), all_finite(torch.tensor([1.0, float("nan")]))
        (True, False)
    """
    if not t.is_floating_point():
        return True
    if math.isfinite(float(t.sum(dtype=torch.float64))):
        return True
    return bool(torch.isfinite(t).all())


def _augmented(weight: Tensor, bias: Tensor | None) -> Tensor:
    """[W, b] in float64: (m, d) and (m,) -> (m, d + 1) (or (m, d) without bias)."""
    w = weight.detach().to(torch.float64)
    if bias is None:
        return w
    return torch.cat([w, bias.detach().to(torch.float64).unsqueeze(1)], dim=1)  # (m, d+1)


def neuron_directions(weight: Tensor, bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Unit input-weight directions u_k = [W_k, b_k] / ‖[W_k, b_k]‖ of a layer's neurons (SCIENCE.md §2).

    Args:
        weight: W, shape (m, d): one row of input weights per neuron (``nn.Linear.weight``).
        bias: b, shape (m,), appended to each row as the weight of a constant input; None for no bias.

    Returns:
        ``(directions, alive)``: directions (m, d + 1) in float64 (d columns without bias), the rows of
        zero-norm ("dead") neurons left at zero; alive (m,) bool, False for those neurons.

    Raises:
        ValueError: weight not 2-D, bias not (m,), or NaN/Inf in either.

    Example:
        >>> u, alive = neuron_directions(torch.tensor([[3.0, 0.0], [0.0, 0.0]]), torch.tensor([4.0, 0.0]))
        >>> u
        tensor([[0.6000, 0.0000, 0.8000],
                [0.0000, 0.0000, 0.0000]], dtype=torch.float64)
        >>> alive
        tensor([ True, False])
    """
    _check_layer(weight, bias)
    a = _augmented(weight, bias)  # (m, d+1)
    norms = torch.linalg.vector_norm(a, dim=1)  # (m,)
    alive = norms > 0
    return a / torch.where(alive, norms, 1.0).unsqueeze(1), alive


def cosine_matrix(weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Cosine similarity of every pair of neuron directions, C = U Uᵀ with U from :func:`neuron_directions`.

    Computed from the Gram matrix G = [W, b][W, b]ᵀ as C_kj = G_kj / √(G_kk G_jj) (one matrix product, the same
    numbers as normalising first; the tests check both). Values are clipped to [-1, 1]. Dead (zero-norm)
    neurons have an all-zero row and column, including their diagonal entry.

    Args:
        weight: W, shape (m, d).
        bias: b, shape (m,), or None.

    Returns:
        C, shape (m, m), float64, symmetric, diagonal 1 for the alive neurons.

    Raises:
        ValueError: weight not 2-D, bias not (m,), or NaN/Inf in either.

    Example:
        >>> cosine_matrix(torch.tensor([[1.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
        tensor([[ 1.0000,  0.7071, -1.0000],
                [ 0.7071,  1.0000, -0.7071],
                [-1.0000, -0.7071,  1.0000]], dtype=torch.float64)
    """
    _check_layer(weight, bias)
    a = _augmented(weight, bias)  # (m, d+1)
    return _cosine_from_gram(a @ a.T)


def _cosine_from_gram(gram: Tensor) -> Tensor:
    """(m, m) Gram of the augmented rows -> (m, m) cosine matrix, dead neurons zeroed."""
    norms = gram.diagonal().clamp_min(0).sqrt()  # (m,)
    inv = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)  # (m,)
    cos = gram * inv.unsqueeze(0) * inv.unsqueeze(1)  # (m, m)
    cos.diagonal().copy_((norms > 0).to(cos.dtype))  # exact 1 on the diagonal (0 for dead neurons)
    return cos.clamp_(-1.0, 1.0)


def condensed_directions(cosine: Tensor, threshold: float = 0.95, signed: bool = False) -> Tensor:
    """Cluster neurons into condensed directions by average linkage on 1 - |cos| (SCIENCE.md §2).

    Neurons k, j are compared by the distance 1 - |C_kj| (a direction and its opposite are one line, the right
    notion for odd activations such as tanh) or, with ``signed=True``, 1 - C_kj. SciPy's average-linkage
    hierarchy is cut at distance 1 - ``threshold``: every cluster's average pairwise distance to any cluster it
    would merge with exceeds that, so clusters are sets of neurons with average |cos| ≥ threshold.

    Args:
        cosine: C, shape (m, m), from :func:`cosine_matrix`; neurons whose diagonal entry is 0 are dead and
            are left out.
        threshold: cosine level at which two groups of neurons count as one direction, in (0, 1].
        signed: keep a direction and its opposite apart.

    Returns:
        labels, shape (m,), int64: 0 for the largest cluster, 1 for the next (ties broken by the lowest neuron
        index), ...; -1 for dead neurons. The number of directions is ``labels.max() + 1``.

    Raises:
        ValueError: threshold outside (0, 1], or cosine not a square matrix.

    Example:
        >>> w = torch.tensor([[1.0, 0.0], [-1.0, 0.01], [0.0, 1.0], [1.0, 0.02]])
        >>> condensed_directions(cosine_matrix(w))
        tensor([0, 0, 1, 0])
        >>> condensed_directions(cosine_matrix(w), signed=True)
        tensor([0, 1, 2, 0])
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a cosine level in (0, 1] (0.95 in the papers), got {threshold}.")
    if cosine.ndim != 2 or cosine.shape[0] != cosine.shape[1]:
        raise ValueError(f"cosine must be a square (m, m) matrix, got shape {tuple(cosine.shape)}.")
    if not all_finite(cosine):
        raise ValueError("cosine must hold only finite values (NaN or Inf: the weights it came from are not finite).")
    m = cosine.shape[0]
    alive = cosine.diagonal() > 0.5  # (m,) the diagonal is exactly 1 (alive) or 0 (dead)
    labels = torch.full((m,), -1, dtype=torch.long)
    idx = alive.nonzero().squeeze(1)  # (m_alive,)
    if idx.numel() == 0:
        return labels
    if idx.numel() == 1:
        labels[idx] = 0
        return labels
    c = cosine.detach().to(torch.float64)
    if len(idx) < m:
        c = c[idx][:, idx]  # (m_alive, m_alive)
    dist = (1.0 - (c if signed else c.abs())).clamp_min_(0.0).cpu().numpy()  # (m_alive, m_alive)
    labels[idx] = _relabel_by_size(_average_linkage_clusters(dist, 1.0 - threshold))
    return labels


def _average_linkage_clusters(dist: np.ndarray, cut: float) -> Tensor:
    """Flat average-linkage clusters of a (n, n) distance matrix cut at ``cut``: (n,) int64 ids, arbitrary order.

    The same partition as ``fcluster(linkage(squareform(dist), "average"), cut, "distance")`` on all n points,
    computed per connected component of the graph "distance ≤ cut" (the tests check the two agree): two clusters
    merge below the cut only if their average distance is ≤ cut, so some pair across them is ≤ cut, and a merge
    below the cut never joins two components; the merges inside one component only read distances inside it
    (Lance-Williams update), so each component's hierarchy below the cut is the one it has among all n points.
    A neuron with no partner within the cut is a singleton at once: at initialisation that is nearly every
    neuron, and the O(n²) linkage only runs on the few groups that did condense.
    """
    n = dist.shape[0]
    close = dist <= cut  # (n, n) the diagonal is 0, so every point is close to itself
    n_comp, comp = connected_components(csr_matrix(close), directed=False)
    raw = np.empty(n, dtype=np.int64)
    next_id = 0
    members = np.argsort(comp, kind="stable")  # points grouped by component, ascending index inside each
    bounds = np.searchsorted(comp[members], np.arange(n_comp + 1))
    for k in range(n_comp):
        group = members[bounds[k]:bounds[k + 1]]  # (n_k,) ascending
        if len(group) == 1:
            raw[group] = next_id
            next_id += 1
            continue
        sub = dist[np.ix_(group, group)]  # (n_k, n_k)
        iu = np.triu_indices(len(group), k=1)  # SciPy's condensed order: i < j
        flat = fcluster(linkage(sub[iu], method="average"), t=cut, criterion="distance")  # (n_k,) 1-based
        raw[group] = next_id + flat - 1
        next_id += int(flat.max())
    return torch.from_numpy(raw)


def _relabel_by_size(raw: Tensor) -> Tensor:
    """Renumber cluster ids so 0 is the largest cluster (ties: the one whose first member comes first)."""
    n_clusters = int(raw.max()) + 1
    sizes = torch.bincount(raw, minlength=n_clusters)  # (K,)
    first = torch.full((n_clusters,), len(raw), dtype=torch.long).scatter_reduce(
        0, raw, torch.arange(len(raw)), reduce="amin"
    )  # (K,) first neuron of each cluster
    by_first = torch.argsort(first)  # secondary key, then a stable sort on the primary (size, descending)
    rank_order = by_first[torch.argsort(-sizes[by_first], stable=True)]  # (K,) cluster ids, largest first
    new_id = torch.empty(n_clusters, dtype=torch.long)
    new_id[rank_order] = torch.arange(n_clusters)
    return new_id[raw]


def cluster_order(labels: Tensor, cosine: Tensor) -> Tensor:
    """Order of the neurons for the cosine heatmap: clusters as contiguous blocks, largest first.

    Within a cluster the neurons are sorted by their cosine with the cluster's first neuron, descending, so a
    direction's aligned members come first and its opposite members (unsigned clustering) last. Dead neurons
    (label -1) go to the end.

    Args:
        labels: (m,) from :func:`condensed_directions`.
        cosine: (m, m) from :func:`cosine_matrix`.

    Returns:
        perm, shape (m,), int64: ``cosine[perm][:, perm]`` is the block picture of the papers.

    Raises:
        ValueError: cosine does not match labels (m, m).

    Example:
        >>> w = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, -1.0], [1.0, 0.01]])
        >>> c = cosine_matrix(w)
        >>> labels = condensed_directions(c)
        >>> perm = cluster_order(labels, c)
        >>> perm, labels[perm]
        (tensor([0, 2, 1, 3]), tensor([0, 0, 1, 1]))
    """
    m = labels.shape[0]
    if cosine.shape != (m, m):
        raise ValueError(f"cosine must be ({m}, {m}) to match labels, got {tuple(cosine.shape)}.")
    block = torch.where(labels >= 0, labels, int(labels.max()) + 1)  # (m,) dead neurons last
    n_blocks = int(block.max()) + 1
    first = torch.full((n_blocks,), m, dtype=torch.long).scatter_reduce(
        0, block, torch.arange(m), reduce="amin"
    )  # (K+1,) reference neuron of each block
    to_ref = cosine.detach().to(torch.float64)[first[block], torch.arange(m)]  # (m,) cos with the reference
    within = torch.argsort(-to_ref, stable=True)  # secondary key first, then a stable sort by block
    return within[torch.argsort(block[within], stable=True)]


def cluster_shares(labels: Tensor, top: tuple[int, ...] = (1, 2, 4)) -> tuple[float, ...]:
    """Share of the alive neurons that sit in the largest ``k`` clusters, for each k in ``top``.

    Args:
        labels: (m,) from :func:`condensed_directions` (0 = largest cluster, -1 = dead).
        top: the numbers of clusters k.

    Returns:
        One share in [0, 1] per k (0.0 for every k when no neuron is alive).

    Example:
        >>> cluster_shares(torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, -1]))
        (0.375, 0.625, 0.875)
    """
    alive = labels[labels >= 0]
    if alive.numel() == 0:
        return tuple(0.0 for _ in top)
    sizes = torch.bincount(alive).sort(descending=True).values  # (K,)
    cumulative = sizes.cumsum(0)
    return tuple(float(cumulative[min(k, len(sizes)) - 1]) / alive.numel() for k in top)


def singular_values(weight: Tensor) -> Tensor:
    """Singular values of W, descending, from the eigenvalues of its smaller Gram matrix in float64.

    σ_i = √λ_i(W Wᵀ) (or WᵀW, whichever is smaller): a symmetric eigenvalue problem after one BLAS-3 product,
    cheaper than an SVD. Eigenvalues below r·ε·λ_max (the rounding level of the Gram) are set to 0, so an
    exactly low-rank W has exactly that many non-zero values; the rest agree with ``torch.linalg.svdvals`` (checked
    in the tests).

    Args:
        weight: W, shape (m, d).

    Returns:
        σ, shape (min(m, d),), float64, non-negative, descending.

    Raises:
        ValueError: weight not 2-D, bias not (m,), or NaN/Inf in either.

    Example:
        >>> singular_values(torch.tensor([[3.0, 0.0, 0.0], [0.0, -4.0, 0.0]]))
        tensor([4., 3.], dtype=torch.float64)
    """
    _check_layer(weight, None)
    w = weight.detach().to(torch.float64)
    gram = _gram(w) if w.shape[0] <= w.shape[1] else _gram(w.T)  # (r, r), r = min(m, d)
    return _sv_from_gram(gram)


def _eigvalsh(gram: Tensor) -> Tensor:
    """Ascending eigenvalues of a symmetric float64 matrix (r, r) -> (r,).

    On the CPU through SciPy's LAPACK (the same tridiagonal reduction as ``torch.linalg.eigvalsh``, equal to it to
    rounding, checked in the tests): measured 1.7x faster than torch's at r = 1024 on one thread
    (benchmarks/condensation.py).
    """
    if gram.device.type != "cpu" or gram.shape[0] < 2:
        return torch.linalg.eigvalsh(gram)
    lam = scipy.linalg.eigh(gram.numpy(), eigvals_only=True, check_finite=False, driver="evd")
    return torch.from_numpy(lam)


def _gram(a: Tensor) -> Tensor:
    """A Aᵀ for a float64 (m, k) matrix -> (m, m); on the CPU by NumPy's BLAS (measured faster than torch's there,
    the same dot products to rounding)."""
    if a.device.type != "cpu":
        return a @ a.T
    x = a.numpy()
    return torch.from_numpy(x @ x.T)


def _sv_from_gram(gram: Tensor) -> Tensor:
    lam = _eigvalsh(gram).flip(0)  # (r,) descending
    if lam.numel() == 0:
        return lam
    # eigenvalues below the Gram's own rounding level (r·ε·λ_max) are zeros in disguise: as singular values they
    # would come back as ~√ε·σ_max and add a spurious tail to the effective rank of an exactly low-rank W
    tol = lam.shape[0] * torch.finfo(lam.dtype).eps * lam[0].clamp_min(0)
    return torch.where(lam > tol, lam, 0.0).sqrt()


def _effective_rank(sv: Tensor) -> float:
    total = sv.sum()
    if total <= 0:
        return 0.0
    p = sv / total
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def _stable_rank(sv: Tensor) -> float:
    if sv.numel() == 0 or sv[0] <= 0:
        return 0.0
    return float((sv**2).sum() / sv[0] ** 2)


def effective_rank(weight: Tensor) -> float:
    """Effective rank exp(H(p)), p_i = σ_i / Σ_j σ_j, of W's singular values (Roy & Vetterli 2007, eq. 2-3).

    It lies between 1 and rank(W), equals r for r equal non-zero singular values, and falls when the neurons
    condense. The zero matrix has effective rank 0.

    Args:
        weight: W, shape (m, d).

    Returns:
        The effective rank as a float.

    Example:
        >>> round(effective_rank(torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0]))), 4)
        3.0
        >>> round(effective_rank(torch.diag(torch.tensor([3.0, 1.0]))), 4)
        1.7548
    """
    return _effective_rank(singular_values(weight))


def stable_rank(weight: Tensor) -> float:
    """Stable rank ‖W‖_F² / ‖W‖_2² = Σσ_i² / σ_1² (between 1 and rank(W); 0 for the zero matrix).

    Args:
        weight: W, shape (m, d).

    Returns:
        The stable rank as a float.

    Example:
        >>> round(stable_rank(torch.diag(torch.tensor([2.0, 1.0, 1.0]))), 4)
        1.5
    """
    return _stable_rank(singular_values(weight))


def relative_change(weight: Tensor, initial: Tensor) -> float:
    """Relative distance from the initial weights, ‖W_t - W_0‖_F / ‖W_0‖_F (the order parameter RD of
    Luo et al. 2021; small during the initial stage of a small-initialised net, then a sudden rise).

    Args:
        weight: W_t, shape (m, d).
        initial: W_0, same shape.

    Returns:
        The ratio; ``inf`` when W_0 = 0 and W_t ≠ 0, 0.0 when both are zero.

    Raises:
        ValueError: the initial weights do not match the weights' shape, or either holds NaN or Inf.

    Example:
        >>> relative_change(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 4.0]]))
        0.75
    """
    if weight.shape != initial.shape:
        raise ValueError(
            f"initial weights of shape {tuple(initial.shape)} do not match the weights {tuple(weight.shape)}; "
            "was the layer replaced after fit start?"
        )
    if not all_finite(weight) or not all_finite(initial):
        raise ValueError("weight or initial weights contain NaN or inf; the relative change is undefined.")
    w0 = initial.detach().to(torch.float64)
    return _relative_change(weight.detach().to(torch.float64), w0.to(weight.device), float(torch.linalg.norm(w0)))


def _relative_change(w: Tensor, w0: Tensor, norm_0: float) -> float:
    """‖w - w0‖_F / norm_0 for float64 (m, d) matrices of one device, norm_0 = ‖w0‖_F."""
    diff = float(torch.linalg.norm(w - w0))
    if norm_0 == 0.0:
        return math.inf if diff > 0 else 0.0
    return diff / norm_0


def sample_neurons(n_neurons: int, max_neurons: int, seed: int = 0) -> Tensor:
    """Deterministic subset of neurons for layers wider than ``max_neurons`` (all of them otherwise).

    The same (n_neurons, max_neurons, seed) always gives the same sorted indices, so a neuron keeps its place
    across probes and runs; the global RNG is not touched.

    Args:
        n_neurons: the layer's width m.
        max_neurons: the largest number of neurons to keep (≥ 2).
        seed: seed of the private generator.

    Returns:
        indices, shape (min(m, max_neurons),), int64, ascending.

    Raises:
        ValueError: max_neurons below 2.

    Example:
        >>> sample_neurons(5, 10)
        tensor([0, 1, 2, 3, 4])
        >>> bool((sample_neurons(100, 8) == sample_neurons(100, 8)).all()), len(sample_neurons(100, 8))
        (True, 8)
    """
    if max_neurons < 2:
        raise ValueError(f"max_neurons must be at least 2 (a cosine needs two neurons), got {max_neurons}.")
    if n_neurons <= max_neurons:
        return torch.arange(n_neurons)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_neurons, generator=generator)[:max_neurons].sort().values


@dataclass(frozen=True)
class CondensationStats:
    """Everything :func:`condensation_stats` measures on one layer.

    Attributes:
        n_neurons: the layer's width m.
        neuron_indices: (m_s,) the neurons the direction and rank figures describe (all of them unless the
            layer is wider than ``max_neurons``).
        dead_neurons: number of neurons (over all m) whose [W_k, b_k] is exactly zero.
        n_directions: number of condensed directions among the alive sampled neurons.
        largest_cluster_share, top2_share, top4_share: share of the alive sampled neurons in the largest 1, 2, 4
            clusters.
        effective_rank, stable_rank: of the weight rows in ``neuron_indices`` (the whole W when not sampled);
            for a layer whose input is 1-D, of [W, b] (W alone is one column: rank 1 whatever the neurons do).
        weight_norm: ‖W‖_F of the whole layer.
        relative_change: ‖W - W_0‖_F / ‖W_0‖_F of the whole layer, None without W_0.
        cosine: (m_s, m_s) cosine matrix of the sampled neurons, float64.
        labels: (m_s,) cluster labels (-1 = dead).
        order: (m_s,) heatmap order (:func:`eigenvector_order` by default, or :func:`cluster_order`, as
            ``heatmap_order`` says); computed when first read, so a probe that draws no heatmap does not pay for it.
        norm_ratio: ‖W‖_F / ‖W_0‖_F (the amplitude growth that ends the initial stage), None without W_0.
        largest_cluster_norm_share, top2_norm_share, top4_norm_share: share of Σ‖[W_k, b_k]‖² of the sampled
            neurons held by the heaviest 1, 2, 4 clusters (:func:`norm_shares`).
        n_directions_weighted: directions among the neurons carrying 99% of that norm (:func:`heavy_directions`).
        n_directions_random: the chance level of ``n_directions``: the mean count for as many random directions of
            the same dimension (:func:`random_directions_baseline`, 5 seeded draws).
    """

    n_neurons: int
    neuron_indices: Tensor
    dead_neurons: int
    n_directions: int
    largest_cluster_share: float
    top2_share: float
    top4_share: float
    effective_rank: float
    stable_rank: float
    weight_norm: float
    relative_change: float | None
    cosine: Tensor
    labels: Tensor
    heatmap_order: HeatmapOrder
    norm_ratio: float | None = None
    largest_cluster_norm_share: float = 0.0
    top2_norm_share: float = 0.0
    top4_norm_share: float = 0.0
    n_directions_weighted: int = 0
    n_directions_random: float = 0.0

    @functools.cached_property
    def order(self) -> Tensor:
        """(m_s,) the heatmap order of the sampled neurons (see the class's attributes)."""
        if self.heatmap_order == "eigenvector":
            return eigenvector_order(self.cosine)
        return cluster_order(self.labels, self.cosine)

    @property
    def sampled(self) -> bool:
        """True when only ``len(neuron_indices) < n_neurons`` neurons were analysed."""
        return len(self.neuron_indices) < self.n_neurons

    def scalars(self) -> dict[str, float]:
        """The monitorable numbers by name (relative_change left out when unknown)."""
        out = {
            "n_directions": float(self.n_directions),
            "largest_cluster_share": self.largest_cluster_share,
            "top2_share": self.top2_share,
            "top4_share": self.top4_share,
            "effective_rank": self.effective_rank,
            "stable_rank": self.stable_rank,
            "weight_norm": self.weight_norm,
            "dead_neurons": float(self.dead_neurons),
            "largest_cluster_norm_share": self.largest_cluster_norm_share,
            "top2_norm_share": self.top2_norm_share,
            "top4_norm_share": self.top4_norm_share,
            "n_directions_weighted": float(self.n_directions_weighted),
            "n_directions_random": self.n_directions_random,
        }
        if self.relative_change is not None:
            out["relative_change"] = self.relative_change
        if self.norm_ratio is not None:
            out["norm_ratio"] = self.norm_ratio
        return out


def condensation_stats(
    weight: Tensor,
    bias: Tensor | None = None,
    initial_weight: Tensor | None = None,
    *,
    threshold: float = 0.95,
    signed: bool = False,
    max_neurons: int = 2048,
    seed: int = 0,
    order: HeatmapOrder = "eigenvector",
    baseline: bool = True,
) -> CondensationStats:
    """All condensation figures of one layer from one Gram matrix (SCIENCE.md §2).

    The rows W_S of the (possibly sampled) neurons give G_W = W_S W_Sᵀ once; G_W + b bᵀ is the Gram of the
    augmented rows [W, b] behind the cosines, and G_W's eigenvalues are the squared singular values of W_S
    (when m_s ≤ d; otherwise the d×d Gram W_Sᵀ W_S is used for them).

    Args:
        weight: W, shape (m, d).
        bias: b, shape (m,), or None.
        initial_weight: W_0, shape (m, d), for the relative change; None to skip it.
        threshold: cosine level of one condensed direction (cut at 1 - threshold), in (0, 1].
        signed: keep a direction and its opposite apart.
        max_neurons: analyse at most this many neurons (a deterministic sample from :func:`sample_neurons`).
        seed: seed of that sample (and of the random-direction baseline's draws).
        order: heatmap order, ``"eigenvector"`` (the leading eigenvector of the cosine matrix, the papers' ordering)
            or ``"cluster"`` (clusters as blocks, largest first).
        baseline: compute ``n_directions_random`` (cached per shape: paid once).

    Returns:
        A :class:`CondensationStats`.

    Raises:
        ValueError: weight not 2-D with at least one row, bias not (m,), NaN/Inf, initial_weight of another shape,
            max_neurons below 2, threshold outside (0, 1], or an unknown order.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> lines = torch.randn(3, 8, generator=g)  # three directions in R^8
        >>> pick = torch.arange(30) % 3
        >>> signs = torch.where(torch.rand(30, 1, generator=g) < 0.5, -1.0, 1.0)
        >>> amplitudes = 0.5 + torch.rand(30, 1, generator=g)
        >>> w = signs * amplitudes * lines[pick] + 1e-3 * torch.randn(30, 8, generator=g)
        >>> s = condensation_stats(w)
        >>> s.n_directions, round(s.largest_cluster_share, 3), round(s.effective_rank, 2)
        (3, 0.333, 2.74)
        >>> condensation_stats(w, signed=True).n_directions
        6
    """
    _check_layer(weight, bias)
    if initial_weight is not None and initial_weight.shape != weight.shape:
        raise ValueError(
            f"initial_weight of shape {tuple(initial_weight.shape)} does not match weight {tuple(weight.shape)}."
        )
    m, d = weight.shape
    if m == 0:
        raise ValueError(f"weight {tuple(weight.shape)} has no neurons (rows); condensation needs at least one.")
    idx = sample_neurons(m, max_neurons, seed).to(weight.device)  # (m_s,)
    w = weight.detach().to(torch.float64)  # (m, d)
    w_s = w if len(idx) == m else w[idx]  # (m_s, d)
    gram_w = _gram(w_s)  # (m_s, m_s)
    gram = gram_w
    if bias is not None:
        b_s = bias.detach().to(torch.float64)[idx]  # (m_s,)
        gram = gram_w + torch.outer(b_s, b_s)
    cosine = _cosine_from_gram(gram).cpu()  # (m_s, m_s)
    if d == 1 and bias is not None:  # a 1-D input: the bias column is half of what the neurons can vary
        aug = torch.stack([w_s[:, 0], bias.detach().to(torch.float64)[idx]], 1)  # (m_s, 2)
        sv = _sv_from_gram(aug.T @ aug)  # (2,)
    else:
        sv = _sv_from_gram(gram_w if len(idx) <= d else _gram(w_s.T))  # (min(m_s, d),)
    labels = condensed_directions(cosine, threshold=threshold, signed=signed)
    shares = cluster_shares(labels, (1, 2, 4))
    weight_sq = (w * w).sum(dim=1)  # (m,) ‖W_k‖²
    row_sq = weight_sq if bias is None else weight_sq + bias.detach().to(torch.float64) ** 2  # (m,) ‖[W_k, b_k]‖²
    row_sq_s = row_sq[idx].cpu()  # (m_s,)
    weighted = norm_shares(labels, row_sq_s, (1, 2, 4))
    n_alive = int((labels >= 0).sum())
    dim = d + (bias is not None)
    if order not in ("eigenvector", "cluster"):
        raise ValueError(f"order must be 'eigenvector' or 'cluster', got {order!r}.")
    norm = math.sqrt(float(weight_sq.sum()))
    w0 = None if initial_weight is None else initial_weight.detach().to(device=w.device, dtype=torch.float64)
    if w0 is not None and not all_finite(w0):
        raise ValueError("initial_weight contains NaN or inf; the relative change is undefined.")
    norm_0 = None if w0 is None else float(torch.linalg.norm(w0))
    return CondensationStats(
        n_neurons=m,
        neuron_indices=idx.cpu(),
        dead_neurons=int((row_sq == 0).sum()),
        n_directions=int(labels.max()) + 1,
        largest_cluster_share=shares[0],
        top2_share=shares[1],
        top4_share=shares[2],
        effective_rank=_effective_rank(sv),
        stable_rank=_stable_rank(sv),
        weight_norm=norm,
        relative_change=None if w0 is None or norm_0 is None else _relative_change(w, w0, norm_0),
        cosine=cosine,
        labels=labels,
        heatmap_order=order,
        norm_ratio=None if norm_0 is None else (norm / norm_0 if norm_0 > 0 else math.inf),
        largest_cluster_norm_share=weighted[0],
        top2_norm_share=weighted[1],
        top4_norm_share=weighted[2],
        n_directions_weighted=heavy_directions(labels, row_sq_s),
        n_directions_random=random_directions_baseline(n_alive, dim, threshold, signed, seed) if baseline
        and n_alive > 0 else 0.0,
    )


# ---------------------------------------------------------------- amplitude-weighted figures
def norm_shares(labels: Tensor, row_sq: Tensor, top: tuple[int, ...] = (1, 2, 4)) -> tuple[float, ...]:
    """Share of the layer's squared norm Σ_k ‖[W_k, b_k]‖² held by the heaviest 1, 2, 4 clusters.

    The unweighted :func:`cluster_shares` counts neurons: a few aligned, large neurons and many small ones that
    never aligned read as "40 directions". Weighting each neuron by its squared norm shows where the layer's weight
    actually sits. Clusters are ranked by their norm, dead neurons (label -1) carry none.

    Args:
        labels: (m,) from :func:`condensed_directions`.
        row_sq: (m,) ‖[W_k, b_k]‖² of the same neurons.
        top: the numbers of clusters k.

    Example:
        >>> norm_shares(torch.tensor([0, 0, 1, 2]), torch.tensor([4.0, 4.0, 1.0, 1.0]), (1, 2))
        (0.8, 0.9)
    """
    alive = labels >= 0
    total = float(row_sq[alive].sum())
    if not alive.any() or total <= 0:
        return tuple(0.0 for _ in top)
    mass = torch.zeros(int(labels.max()) + 1, dtype=torch.float64).index_add_(
        0, labels[alive], row_sq[alive].to(torch.float64)
    ).sort(descending=True).values  # (K,) norm per cluster, heaviest first
    cumulative = mass.cumsum(0)
    return tuple(float(cumulative[min(k, len(mass)) - 1]) / total for k in top)


def heavy_directions(labels: Tensor, row_sq: Tensor, share: float = 0.99) -> int:
    """Condensed directions among the fewest neurons that carry ``share`` of the squared norm.

    Small neurons that never aligned add singleton clusters to ``n_directions``; this count leaves them out.

    Example:
        >>> heavy_directions(torch.tensor([0, 0, 1, 2, 3]), torch.tensor([50.0, 49.5, 0.2, 0.2, 0.1]))
        1
    """
    alive = labels >= 0
    if not alive.any():
        return 0
    sq, lab = row_sq[alive].to(torch.float64), labels[alive]
    order = torch.argsort(sq, descending=True, stable=True)
    cumulative = sq[order].cumsum(0)
    total = float(cumulative[-1])
    if total <= 0:
        return 0
    n_heavy = int((cumulative < share * total * (1 - 1e-12)).sum()) + 1  # the fewest neurons reaching the share
    return int(torch.unique(lab[order[:n_heavy]]).numel())


@functools.lru_cache(maxsize=64)
def random_directions_baseline(n_neurons: int, dim: int, threshold: float = 0.95, signed: bool = False,
                               seed: int = 0, draws: int = 5) -> float:
    """What ``n_directions`` gives for random directions of the same shape: the chance level of the count.

    ``n_neurons`` directions drawn uniformly on the unit sphere of R^dim (isotropic Gaussian rows), clustered as
    :func:`condensed_directions` does; the mean count over ``draws`` seeded draws (a private generator, so the
    global RNG is untouched; cached, so a monitor pays for it once). In 2 dimensions (a 1-D input with its bias)
    random lines already fall into a handful of clusters, so a low count there is no evidence of condensation; in
    many dimensions random directions stay apart and the baseline is ≈ n_neurons.

    Raises:
        ValueError: n_neurons or dim not positive.

    Example:
        >>> random_directions_baseline(100, 50)
        100.0
        >>> 3 < random_directions_baseline(100, 2) < 15
        True
    """
    if n_neurons < 1 or dim < 1:
        raise ValueError(f"n_neurons and dim must be positive, got {n_neurons}, {dim}.")
    generator = torch.Generator().manual_seed(seed)
    counts = []
    for _ in range(draws):
        rows = torch.randn(n_neurons, dim, generator=generator, dtype=torch.float64)
        labels = condensed_directions(cosine_matrix(rows), threshold=threshold, signed=signed)
        counts.append(int(labels.max()) + 1)
    return float(sum(counts)) / draws


def eigenvector_order(cosine: Tensor) -> Tensor:
    """Neurons sorted by their entry in the leading eigenvector of the cosine matrix (the ordering of the
    condensation papers' heatmaps): neurons on one line sit together, a direction's opposite at the other end.

    The eigenvector's sign is fixed (its largest-magnitude entry positive) so the order is deterministic; dead
    neurons (zero rows) have entry 0 and fall between the two signs.

    Args:
        cosine: (m, m) from :func:`cosine_matrix`.

    Returns:
        perm, shape (m,), int64, descending by eigenvector entry.

    Example:
        >>> c = cosine_matrix(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.01], [1.0, 0.02]]))
        >>> eigenvector_order(c).tolist()
        [0, 3, 1, 2]
    """
    lead = _leading_eigenvector(cosine.detach().to(torch.float64).cpu())  # (m,)
    if lead[lead.abs().argmax()] < 0:
        lead = -lead
    return torch.argsort(-lead, stable=True)


def _leading_eigenvector(c: Tensor, tol: float = 1e-10) -> Tensor:
    """Unit eigenvector (m,) of the largest eigenvalue of a symmetric (m, m) float64 matrix, sign arbitrary.

    Lanczos (ARPACK, a fixed start vector, converged to machine precision) instead of the full ``eigh``: one
    vector of m, not all m, about 8x faster at m = 1024. Accepted when its residual ‖C v - λ v‖ is at most
    ``tol``·‖C‖_F, i.e. v agrees with ``eigh``'s vector to tol / gap (checked against ``eigh`` in the tests);
    otherwise, and for small m, the full ``eigh``.
    """
    m = c.shape[0]
    if m >= 64:
        x = c.numpy()
        v0 = np.random.default_rng(0).standard_normal(m)  # fixed: the same order for the same matrix
        try:
            lam, vec = scipy.sparse.linalg.eigsh(x, k=1, which="LA", tol=0, v0=v0, ncv=min(m - 1, 40))
            v = vec[:, 0]
            if np.linalg.norm(x @ v - lam[0] * v) <= tol * np.linalg.norm(x):
                return torch.from_numpy(v)
        except scipy.sparse.linalg.ArpackError:
            pass
    return torch.linalg.eigh(c)[1][:, -1]


def orientation_amplitude(weight: Tensor, bias: Tensor | None, outgoing: Tensor | None) -> tuple[Tensor, Tensor]:
    """For a layer with a 1-D input: each neuron's orientation angle and amplitude (Zhou et al. 2022's picture).

    The angle is that of (w_k, b_k) in the plane, atan2(b_k, w_k) ∈ (-π, π]; the amplitude is |a_k|·‖(w_k, b_k)‖
    with |a_k| the norm of the neuron's outgoing weights (the column k of the next layer; 1 without it).

    Args:
        weight: (m, 1) input weights.
        bias: (m,) biases, or None.
        outgoing: (m_next, m) next layer's weight, or None.

    Returns:
        ``(angle, amplitude)``, each (m,) float64.

    Raises:
        ValueError: weight is not (m, 1), bias not (m,), outgoing without one column per neuron, or NaN/Inf.

    Example:
        >>> ang, amp = orientation_amplitude(torch.tensor([[1.0], [0.0]]), torch.tensor([0.0, 2.0]),
        ...                                  torch.tensor([[3.0, 1.0]]))
        >>> [round(float(a), 4) for a in ang], amp.tolist()
        ([0.0, 1.5708], [3.0, 2.0])
    """
    _check_layer(weight, bias)
    if weight.shape[1] != 1:
        raise ValueError(f"orientation angles are defined for a 1-D input, got weight {tuple(weight.shape)}.")
    w = weight.detach().to(torch.float64)[:, 0]  # (m,)
    b = torch.zeros_like(w) if bias is None else bias.detach().to(torch.float64)
    if outgoing is None:
        a = torch.ones_like(w)
    else:
        a = torch.linalg.vector_norm(outgoing.detach().to(torch.float64), dim=0)
        if a.shape != w.shape:
            raise ValueError(f"outgoing weight {tuple(outgoing.shape)} must have one column per neuron ({len(w)}).")
    return torch.atan2(b, w), a * torch.sqrt(w * w + b * b)


# ---------------------------------------------------------------- the end of the initial stage
@dataclass
class GrowthPeak:
    """The end of the initial stage from the amplitude growth: the peak of d log‖W‖ / d step.

    The initial stage of a small-initialised net is a plateau in which the neurons rotate (condense) while their
    amplitudes barely grow; it ends when the amplitudes blow up (Chen & Luo 2024: a finite-time blow-up for three
    layers). Relative change ‖W_t - W_0‖/‖W_0‖ cannot see that end, because rotation already moves the weights;
    the growth rate of log‖W_t‖ peaks where the blow-up stops, at the plateau's end, whatever the init scale
    (measured on ThreeLayerNet with full-batch GD: within 20% of the step at which the loss first falls below
    0.9 of its start, over init scales 0.01, 0.005, 0.0025).

    Feed it every probe's ‖W_t‖/‖W_0‖. When the rate first falls below half of the peak so far, the peak is the
    stage's end if the norm has by then grown at least ``min_ratio`` times and the peak is at least ``rise`` times
    the first measured rate (a plateau: slow growth first, then fast); otherwise that bump is forgotten and the
    search goes on. A net with no initial stage (γ = 0.5, whose weights move fastest at the very start and then
    grow slowly) reports none.

    Attributes:
        min_ratio: the growth ‖W_t‖/‖W_0‖ the norm must have reached for the peak to count.
        rise: how many times the first measured rate the peak must be.
        first_rate: the rate between the first two probes.
        prev_step, prev_log: the previous probe's step and log‖W‖/‖W_0‖.
        peak_rate, peak_step: the fastest growth seen so far and the probe step it ended at.
        end: the detected end of the stage (None until then).

    Example:
        >>> peak = GrowthPeak(min_ratio=2.0)
        >>> norms = [1.0, 1.01, 1.05, 1.3, 2.5, 3.0, 3.1]  # slow, a blow-up, then saturation
        >>> rates = [peak.update(step, r) for step, r in enumerate(norms)]
        >>> peak.end, round(rates[4], 3)
        (4, 0.654)
    """

    min_ratio: float = 2.0
    rise: float = 2.0
    first_rate: float | None = None
    prev_step: int | None = None
    prev_log: float = 0.0
    peak_rate: float = 0.0
    peak_step: int | None = None
    end: int | None = None

    def update(self, step: int, ratio: float) -> float | None:
        """Add one probe; returns d log(‖W‖/‖W_0‖)/d step since the previous probe (None at the first one)."""
        if not ratio > 0 or not math.isfinite(ratio):
            return None
        log = math.log(ratio)
        rate = None
        if self.prev_step is not None and step > self.prev_step:
            rate = (log - self.prev_log) / (step - self.prev_step)
            if self.first_rate is None:
                self.first_rate = rate
            if self.end is None:
                if rate > self.peak_rate:
                    self.peak_rate, self.peak_step = rate, step
                elif self.peak_step is not None and rate < 0.5 * self.peak_rate:
                    if ratio >= self.min_ratio and self.peak_rate >= self.rise * max(self.first_rate, 0.0):
                        self.end = self.peak_step
                    else:  # a bump that did not grow the norm (SGD noise, a net without a plateau): look further
                        self.peak_rate, self.peak_step = 0.0, None
        if self.prev_step is None or step > self.prev_step:
            self.prev_step, self.prev_log = step, log
        return rate

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
