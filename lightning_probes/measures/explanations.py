"""Clustered Compositional Explanations: logical concept formulas for each activation range of a unit.

La Rosa, Gilpin, Capobianco, "Towards a fuller understanding of neurons with Clustered Compositional
Explanations", NeurIPS 2023 (arXiv 2310.18443), building on Compositional Explanations (Mu & Andreas 2020)
and Network Dissection (Bau et al. 2017). SCIENCE.md section 5.

Pipeline for one unit (:func:`explain_unit` runs all of it):

1. :func:`activation_ranges` pools the unit's activations over the probe data, drops zeros when all values
   are >= 0, and splits the values into K ranges with *exact* 1-D k-means (dynamic programming, so the
   ranges are deterministic and globally optimal); K = 1 gives the classic top-0.5% threshold.
2. :func:`range_masks` binarises the activation map (upsampled to the concept-mask size with
   :func:`upsample_activations`) into one unit mask per range.
3. :func:`best_formula` finds the formula of at most ``max_length`` atomic concepts joined by AND, OR,
   AND NOT that maximises IoU with the unit mask: an exact branch-and-bound search with admissible IoU upper
   bounds (``method="exact"``) or the paper's beam search (``method="beam"``).
4. :func:`explanation_metrics` scores the formula: IoU, detection accuracy, activation and sample coverage,
   explanation coverage.

Formulas are grown one atom at a time, ``F' = F op c`` (the grammar of Mu & Andreas 2020 and of the
paper's beam search), so length-3 formulas are ``(a op b) op c``; atoms do not repeat inside a formula
(a repeated atom only ever yields the mask of a shorter formula or the empty mask).

Concept data is compressed once per probe set (:func:`prepare_concepts`): positions whose concept vector is
identical are merged into one weighted column, which is exact for every count a formula needs and makes
the search cost depend on the number of distinct concept combinations, not on the number of pixels.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "Atom",
    "Compound",
    "ConceptTable",
    "ExplanationMetrics",
    "Formula",
    "InactiveUnitError",
    "Op",
    "RangeExplanation",
    "SearchResult",
    "activation_ranges",
    "best_formula",
    "exhaustive_search",
    "explain_unit",
    "explanation_metrics",
    "kmeans_1d",
    "prepare_concepts",
    "range_masks",
    "upsample_activations",
]

NETDISSECT_QUANTILE = 0.005  # top 0.5% of activations (Bau et al. 2017; Mu & Andreas 2020)


class InactiveUnitError(ValueError):
    """Raised when a unit has no activation value to cluster (a ReLU unit that never fires)."""


# ----------------------------------------------------------------------------------------------------------
# 1. Activation ranges
# ----------------------------------------------------------------------------------------------------------


def kmeans_1d(values: Tensor, num_clusters: int, weights: Tensor | None = None) -> Tensor:
    """Exact (globally optimal) k-means of 1-D values by dynamic programming.

    The clusters of an optimal 1-D k-means are intervals of the sorted values, so the optimum is
    ``D_k(i) = min_j D_{k-1}(j) + SSE(j..i-1)`` over split points j. The optimal split point is monotone in
    i (the SSE cost is a Monge matrix), so each layer is solved by divide and conquer in O(n log n)
    (Grønlund et al. 2017, "Fast exact k-means, k-medians and Bregman divergence clustering in 1D");
    here every recursion depth is one batch of tensor operations.

    Args:
        values: sorted, strictly increasing values, shape (n,).
        num_clusters: K >= 1; at most n.
        weights: positive multiplicity of each value, shape (n,); ones if omitted.

    Returns:
        Cluster boundaries as indices into ``values``, shape (K + 1,), int64: cluster c holds
        ``values[b[c]:b[c + 1]]``.

    Example:
        >>> kmeans_1d(torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 9.0]), 3).tolist()
        [0, 3, 5, 6]
    """
    n = values.numel()
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, {n}] for {n} distinct values, got {num_clusters}.")
    x = values.to(torch.float64)
    x = x - x.mean()  # centring keeps the prefix sums of squares well conditioned
    w = torch.ones_like(x) if weights is None else weights.to(torch.float64)
    zero = x.new_zeros(1)
    cum_w = torch.cat([zero, w.cumsum(0)])  # (n + 1,)
    cum_x = torch.cat([zero, (w * x).cumsum(0)])
    cum_xx = torch.cat([zero, (w * x * x).cumsum(0)])

    def sse(j: Tensor, i: Tensor) -> Tensor:  # weighted SSE of values[j:i], j < i
        s = cum_x[i] - cum_x[j]
        return (cum_xx[i] - cum_xx[j] - s * s / (cum_w[i] - cum_w[j])).clamp_min(0.0)

    cost = torch.full((n + 1,), math.inf, dtype=torch.float64)
    cost[1:] = sse(torch.zeros(n, dtype=torch.long), torch.arange(1, n + 1))
    split = torch.zeros(num_clusters, n + 1, dtype=torch.long)  # split[k, i]: start of the last cluster
    for k in range(1, num_clusters):
        new_cost = torch.full_like(cost, math.inf)
        lo, hi = torch.tensor([k + 1]), torch.tensor([n])  # points i whose optimum is still open
        opt_lo, opt_hi = torch.tensor([k]), torch.tensor([n - 1])  # allowed split points j
        while lo.numel():
            mid = (lo + hi) // 2
            top = torch.minimum(opt_hi, mid - 1)
            count = top - opt_lo + 1  # (T,) candidates per task, >= 1
            task = torch.repeat_interleave(torch.arange(mid.numel()), count)
            j = opt_lo[task] + torch.arange(task.numel()) - torch.repeat_interleave(count.cumsum(0) - count, count)
            val = cost[j] + sse(j, mid[task])
            best = torch.full((mid.numel(),), math.inf, dtype=torch.float64).scatter_reduce(0, task, val, "amin")
            arg = torch.full_like(mid, n).scatter_reduce(
                0, task, torch.where(val == best[task], j, n), "amin"
            )  # leftmost argmin keeps the split points monotone
            new_cost[mid], split[k, mid] = best, arg
            go_left, go_right = lo <= mid - 1, mid + 1 <= hi
            lo = torch.cat([lo[go_left], (mid + 1)[go_right]])
            hi = torch.cat([(mid - 1)[go_left], hi[go_right]])
            opt_lo, opt_hi = torch.cat([opt_lo[go_left], arg[go_right]]), torch.cat([arg[go_left], opt_hi[go_right]])
        cost = new_cost
    bounds = [n]
    for k in range(num_clusters - 1, 0, -1):
        bounds.append(int(split[k, bounds[-1]]))
    bounds.append(0)
    return torch.tensor(bounds[::-1], dtype=torch.long)


def activation_ranges(
    activations: Tensor, num_clusters: int = 5, quantile: float = NETDISSECT_QUANTILE
) -> Tensor:
    """Activation ranges of one unit: exact 1-D k-means clusters of its pooled activations.

    Step 1 of SCIENCE.md section 5 (La Rosa et al. 2023, Sec. 3): all values (every sample and position) are
    pooled; if all are >= 0 (a ReLU unit) the zeros are dropped; the remaining values are clustered with
    exact 1-D k-means and each cluster c gives the closed range [min_c, max_c]. Ranges are sorted from the
    lowest (c = 1) to the highest. ``num_clusters=1`` is the classic threshold of Network Dissection /
    Compositional Explanations: the top ``quantile`` of *all* values (zeros included), range [T, +inf).

    Args:
        activations: the unit's activations, any shape (pooled).
        num_clusters: K >= 1.
        quantile: top share used when K = 1.

    Returns:
        Ranges, shape (R, 2) float64 with R = min(K, number of distinct values), rows (low, high).

    Raises:
        InactiveUnitError: the unit has no value to cluster (only zeros, or no data).

    Example:
        >>> acts = torch.tensor([0.0, 0.0, 1.0, 1.1, 4.0, 4.2, 9.0], dtype=torch.float64)
        >>> activation_ranges(acts, num_clusters=3).tolist()
        [[1.0, 1.1], [4.0, 4.2], [9.0, 9.0]]
    """
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}.")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
    values = activations.detach().reshape(-1).to(torch.float64)
    if not torch.isfinite(values).all():
        raise ValueError("activations contain NaN or infinite values; check the model before explaining it.")
    if num_clusters == 1:
        if values.numel() == 0 or not (values != 0).any():
            raise InactiveUnitError("the unit never activates (all activations are zero).")
        ordered = values.sort().values
        position = (1.0 - quantile) * (ordered.numel() - 1)  # linear interpolation, as numpy.quantile
        below = int(math.floor(position))
        above = min(below + 1, ordered.numel() - 1)
        threshold = ordered[below] + (position - below) * (ordered[above] - ordered[below])
        return torch.stack([threshold, threshold.new_tensor(math.inf)]).reshape(1, 2)
    if values.numel() and (values >= 0).all():
        values = values[values > 0]
    if values.numel() == 0:
        raise InactiveUnitError("the unit never activates (no non-zero activation in the probe data).")
    distinct, counts = torch.unique(values, return_counts=True)  # sorted; ties can never be split
    bounds = kmeans_1d(distinct, min(num_clusters, distinct.numel()), counts)
    return torch.stack([distinct[bounds[:-1]], distinct[bounds[1:] - 1]], dim=1)


def upsample_activations(activations: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of activation maps to the concept-mask size (Bau et al. 2017).

    Args:
        activations: maps, shape (N, U, h, w) or one unit's maps (N, h, w).
        size: target (H, W).

    Returns:
        Shape (N, U, H, W) or (N, H, W); returned unchanged when already of that size.

    Example:
        >>> upsample_activations(torch.ones(2, 3, 4, 4), (8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """
    if activations.dim() not in (3, 4):
        raise ValueError(f"activation maps must be (N, U, h, w) or (N, h, w), got shape {tuple(activations.shape)}.")
    if tuple(activations.shape[-2:]) == tuple(size):
        return activations
    single = activations.dim() == 3
    maps = activations.unsqueeze(1) if single else activations
    out = F.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return out.squeeze(1) if single else out


def range_masks(activations: Tensor, ranges: Tensor) -> Tensor:
    """Unit masks M_c(x) = 1[min_c <= a(x) <= max_c], one per range.

    Args:
        activations: one unit's (upsampled) activations, any shape S.
        ranges: (R, 2) from :func:`activation_ranges`.

    Returns:
        Boolean masks, shape (R, *S).

    Example:
        >>> range_masks(torch.tensor([0.5, 1.0, 2.0, 3.0]), torch.tensor([[1.0, 2.0]])).int().tolist()
        [[0, 1, 1, 0]]
    """
    a = activations.to(torch.float64).unsqueeze(0)  # (1, *S)
    view = (-1,) + (1,) * activations.dim()
    return (a >= ranges[:, 0].reshape(view)) & (a <= ranges[:, 1].reshape(view))


# ----------------------------------------------------------------------------------------------------------
# 2. Formulas
# ----------------------------------------------------------------------------------------------------------


class Op(enum.Enum):
    """Binary operators of the formula grammar."""

    AND = "AND"
    OR = "OR"
    AND_NOT = "AND NOT"


@dataclass(frozen=True)
class Atom:
    """An atomic concept, by its index in the concept tensor."""

    index: int

    @property
    def length(self) -> int:
        return 1

    def atoms(self) -> tuple[int, ...]:
        return (self.index,)

    def name(self, concept_names: Sequence[str] | None = None) -> str:
        return concept_names[self.index] if concept_names is not None else f"c{self.index}"

    def evaluate(self, concepts: Tensor) -> Tensor:
        """Mask of the formula from concept masks of shape (K, *S); returns (*S,) bool."""
        return concepts[self.index].bool()

    def __str__(self) -> str:
        return self.name()


@dataclass(frozen=True)
class Compound:
    """``left op right``: a formula extended by one atom."""

    op: Op
    left: Formula
    right: Atom

    @property
    def length(self) -> int:
        return self.left.length + 1

    def atoms(self) -> tuple[int, ...]:
        return self.left.atoms() + self.right.atoms()

    def name(self, concept_names: Sequence[str] | None = None) -> str:
        left = self.left.name(concept_names)
        if isinstance(self.left, Compound):
            left = f"({left})"
        return f"{left} {self.op.value} {self.right.name(concept_names)}"

    def evaluate(self, concepts: Tensor) -> Tensor:
        left, right = self.left.evaluate(concepts), self.right.evaluate(concepts)
        if self.op is Op.AND:
            return left & right
        if self.op is Op.OR:
            return left | right
        return left & ~right

    def __str__(self) -> str:
        return self.name()


Formula = Atom | Compound


def _pair(op: Op, a: int, b: int) -> Compound:
    return Compound(op, Atom(a), Atom(b))


# ----------------------------------------------------------------------------------------------------------
# 3. Concept data and search
# ----------------------------------------------------------------------------------------------------------


@dataclass
class ConceptTable:
    """Concept masks compressed to their distinct columns (exact for every count a formula needs).

    Attributes:
        masks: distinct concept columns, shape (K, G) bool.
        group: column of every position, shape (N * S,) int64 (positions sample-major).
        weight: number of positions in each column, shape (G,) float64.
        num_samples: N.
        spatial_size: (H, W) of the masks, or () for per-sample concepts.
    """

    masks: Tensor
    group: Tensor
    weight: Tensor
    num_samples: int
    spatial_size: tuple[int, ...]
    _pair_sizes: Tensor | None = field(default=None, repr=False)

    @property
    def num_concepts(self) -> int:
        return self.masks.shape[0]

    @property
    def positions_per_sample(self) -> int:
        return self.group.numel() // max(self.num_samples, 1)

    def expand(self, column_mask: Tensor) -> Tensor:
        """A mask on columns (G,) as a mask on positions (N, S)."""
        return column_mask[self.group].reshape(self.num_samples, -1)

    def column_counts(self, unit_mask: Tensor) -> Tensor:
        """Number of unit-mask positions in each column, shape (G,) float64."""
        flat = unit_mask.reshape(-1)
        if flat.numel() != self.group.numel():
            raise ValueError(
                f"unit mask has {flat.numel()} positions but the concepts have {self.group.numel()} "
                f"({self.num_samples} samples x {self.positions_per_sample}); upsample the activations to "
                f"the concept size {self.spatial_size}."
            )
        return torch.zeros_like(self.weight).index_add_(0, self.group, flat.to(torch.float64))


def prepare_concepts(concepts: Tensor, spatial_size: tuple[int, int] | None = None) -> ConceptTable:
    """Validate and compress concept masks once per probe set.

    Args:
        concepts: boolean masks, shape (N, K) per sample or (N, K, H, W) per position.
        spatial_size: for per-sample concepts explained on spatial maps, the (h, w) of the maps: each
            sample's concepts then hold at every position of its map.

    Returns:
        A :class:`ConceptTable`.

    Example:
        >>> table = prepare_concepts(torch.tensor([[1, 0], [1, 0], [0, 1]]).bool())
        >>> table.masks.int().tolist(), table.weight.tolist()
        ([[0, 1], [1, 0]], [1.0, 2.0])
    """
    if concepts.dtype != torch.bool:
        if concepts.is_floating_point() or not ((concepts == 0) | (concepts == 1)).all():
            raise ValueError(f"concepts must be a boolean (or 0/1 integer) tensor, got dtype {concepts.dtype}.")
        concepts = concepts.bool()
    if concepts.dim() not in (2, 4):
        raise ValueError(f"concepts must have shape (N, K) or (N, K, H, W), got {tuple(concepts.shape)}.")
    n, k = concepts.shape[:2]
    if n == 0 or k == 0:
        raise ValueError(f"concepts are empty (shape {tuple(concepts.shape)}): give at least one sample and concept.")
    if not concepts.any():
        raise ValueError("no concept is present anywhere (all masks are False); check the concept annotations.")
    if concepts.dim() == 2 and spatial_size is not None:
        concepts = concepts[:, :, None, None].expand(n, k, *spatial_size)
    size = tuple(concepts.shape[2:])
    columns = concepts.reshape(n, k, -1).permute(0, 2, 1).reshape(-1, k)  # (N * S, K)
    distinct, group, counts = torch.unique(columns, dim=0, return_inverse=True, return_counts=True)
    return ConceptTable(distinct.T.contiguous(), group, counts.to(torch.float64), n, size)


@dataclass(frozen=True)
class SearchResult:
    """Best formula for one unit mask.

    Attributes:
        formula: the formula, or None when the unit mask is empty.
        iou: its IoU with the unit mask.
        method: ``"exact"``, ``"beam"`` or ``"beam (fallback: ...)"`` when the exact search ran out of time.
        num_evaluated: number of formulas whose IoU was computed.
    """

    formula: Formula | None
    iou: float
    method: str
    num_evaluated: int


@dataclass
class _Stats:
    """Counts over weighted columns: everything an IoU needs."""

    columns: Tensor  # (K, G) 0/1, float
    weight: Tensor  # (G,) positions per column
    inside: Tensor  # (G,) unit-mask positions per column
    size: Tensor  # (K,) |c|
    hit: Tensor  # (K,) |M ∧ c|
    m: float  # |M|
    total: float  # number of positions

    @classmethod
    def build(cls, table: ConceptTable, unit_mask: Tensor) -> _Stats:
        inside = table.column_counts(unit_mask)
        # float32 matmuls are exact for integer counts below 2**24; beyond that use float64
        dtype = torch.float32 if table.weight.sum() < 2**24 else torch.float64
        columns = table.masks.to(dtype)
        weight, inside_t = table.weight.to(dtype), inside.to(dtype)
        size = (columns @ weight).to(torch.float64)
        hit = (columns @ inside_t).to(torch.float64)
        return cls(columns, weight, inside_t, size, hit, float(inside.sum()), float(table.weight.sum()))

    def iou(self, inter: Tensor, size: Tensor) -> Tensor:
        union = self.m + size - inter
        return torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))

    def extension_counts(self, masks: Tensor) -> tuple[Tensor, Tensor]:
        """For formula masks on columns (B, G): |F ∧ c| and |M ∧ F ∧ c| for every atom c, each (B, K)."""
        both = (masks * self.weight) @ self.columns.T
        inter = (masks * self.inside) @ self.columns.T
        return both.to(torch.float64), inter.to(torch.float64)

    def pairs(self) -> tuple[Tensor, Tensor]:
        """|a ∧ b| and |M ∧ a ∧ b| for all atom pairs, each (K, K)."""
        return self.extension_counts(self.columns)


_OPS = (Op.AND, Op.OR, Op.AND_NOT)


def _combine(op: Op, size_f: Tensor, inter_f: Tensor, size_c: Tensor, inter_c: Tensor, both: Tensor,
             both_inter: Tensor) -> tuple[Tensor, Tensor]:
    """|F op c| and |M ∧ (F op c)| from |F|, |M∧F|, |c|, |M∧c|, |F∧c|, |M∧F∧c| (inclusion-exclusion)."""
    if op is Op.AND:
        return both, both_inter
    if op is Op.OR:
        return size_f + size_c - both, inter_f + inter_c - both_inter
    return size_f - both, inter_f - both_inter


def _column_mask(op: Op, left: Tensor, right: Tensor) -> Tensor:
    if op is Op.AND:
        return left * right
    if op is Op.OR:
        return torch.maximum(left, right)
    return left * (1 - right)


@dataclass
class _Prefixes:
    """All length-2 formulas (a op b), a != b, with their counts; AND and OR keep only a < b."""

    op: Tensor  # (Q,) index into _OPS
    a: Tensor  # (Q,)
    b: Tensor  # (Q,)
    size: Tensor  # (Q,) |F|
    inter: Tensor  # (Q,) |M ∧ F|

    @classmethod
    def build(cls, stats: _Stats, both: Tensor, both_inter: Tensor) -> _Prefixes:
        k = stats.size.numel()
        a, b = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
        ops, aa, bb, sizes, inters = [], [], [], [], []
        for index, op in enumerate(_OPS):
            keep = (a < b) if op is not Op.AND_NOT else (a != b)
            pa, pb = a[keep], b[keep]
            size, inter = _combine(op, stats.size[pa], stats.hit[pa], stats.size[pb], stats.hit[pb],
                                   both[pa, pb], both_inter[pa, pb])
            ops.append(torch.full_like(pa, index))
            aa.append(pa)
            bb.append(pb)
            sizes.append(size)
            inters.append(inter)
        return cls(torch.cat(ops), torch.cat(aa), torch.cat(bb), torch.cat(sizes), torch.cat(inters))

    def formula(self, q: int) -> Compound:
        return _pair(_OPS[int(self.op[q])], int(self.a[q]), int(self.b[q]))

    def masks(self, stats: _Stats, rows: Tensor) -> Tensor:  # (B, G) column masks of prefixes ``rows``
        left, right = stats.columns[self.a[rows]], stats.columns[self.b[rows]]
        out = torch.empty_like(left)
        for index, op in enumerate(_OPS):
            sel = self.op[rows] == index
            out[sel] = _column_mask(op, left[sel], right[sel])
        return out


def _extension_ious(stats: _Stats, pre: _Prefixes, rows: Tensor, both: Tensor, both_inter: Tensor) -> Tensor:
    """IoU of (prefix op c) for prefixes ``rows``, every op and atom: shape (B, 3, K); -1 where c repeats."""
    size_f, inter_f = pre.size[rows, None], pre.inter[rows, None]  # (B, 1)
    ious = []
    for op in _OPS:
        size, inter = _combine(op, size_f, inter_f, stats.size, stats.hit, both, both_inter)  # (B, K) each
        ious.append(stats.iou(inter, size))
    out = torch.stack(ious, dim=1)  # (B, 3, K)
    k = stats.size.numel()
    repeated = (torch.arange(k) == pre.a[rows, None]) | (torch.arange(k) == pre.b[rows, None])  # (B, K)
    return out.masked_fill(repeated[:, None, :], -1.0)


def _extension_bounds(stats: _Stats, pre: _Prefixes) -> Tensor:
    """Admissible upper bound on IoU(prefix op c) over every op and atom c, shape (Q,).

    With i = |M ∧ F'| and o = |F' \\ M| the IoU i / (|M| + o) grows with i and falls with o. For F' = F op c,
    from i_F, o_F (prefix), i_c, o_c (atom) and O = #positions outside M:
        AND:     i <= min(i_F, i_c),           o >= max(0, o_F + o_c - O)
        AND NOT: i <= min(i_F, |M| - i_c),     o >= max(0, o_F - o_c)
        OR:      i <= min(|M|, i_F + i_c),     o >= max(o_F, o_c)
    """
    m, outside = stats.m, stats.total - stats.m
    i_f, o_f = pre.inter[:, None], (pre.size - pre.inter)[:, None]  # (Q, 1)
    i_c, o_c = stats.hit[None, :], (stats.size - stats.hit)[None, :]  # (1, K)
    bound_and = torch.minimum(i_f, i_c) / (m + (o_f + o_c - outside).clamp_min(0))
    bound_not = torch.minimum(i_f, m - i_c) / (m + (o_f - o_c).clamp_min(0))
    bound_or = torch.minimum(i_f + i_c, torch.full_like(i_c, m)) / (m + torch.maximum(o_f, o_c))
    return torch.maximum(torch.maximum(bound_and, bound_not), bound_or).amax(dim=1)


def _best_short(stats: _Stats, pre: _Prefixes, max_length: int) -> tuple[Formula, float]:
    """Best formula of length 1 or 2 (ties: the shorter, then the first)."""
    single = stats.iou(stats.hit, stats.size)
    best_formula: Formula = Atom(int(single.argmax()))
    best = float(single.max())
    if max_length >= 2:
        pair = stats.iou(pre.inter, pre.size)
        if float(pair.max()) > best:
            best, best_formula = float(pair.max()), pre.formula(int(pair.argmax()))
    return best_formula, best


def _chunk_rows(stats: _Stats) -> int:
    """Prefixes per batch: keeps a (B, G) block near 2**22 numbers."""
    return max(1, min(4096, 2**22 // max(stats.columns.shape[1], 1)))


def _check_search_args(table: ConceptTable, max_length: int) -> int:
    """Validate ``max_length``; returns the usable length (atoms never repeat, so at most K)."""
    if not 1 <= max_length <= 3:
        raise ValueError(f"max_length must be 1, 2 or 3, got {max_length}.")
    return min(max_length, table.num_concepts)


def exhaustive_search(table: ConceptTable, unit_mask: Tensor, max_length: int = 3) -> SearchResult:
    """IoU of every formula of length <= ``max_length`` (batched), and the best one.

    The reference the exact search is measured against: no pruning, every prefix extended by every atom.

    Args:
        table: concepts from :func:`prepare_concepts`.
        unit_mask: boolean unit mask, shape (N, *S) matching the concepts.
        max_length: 1, 2 or 3.

    Returns:
        A :class:`SearchResult` with ``method="exhaustive"``.
    """
    max_length = _check_search_args(table, max_length)
    stats = _Stats.build(table, unit_mask)
    if stats.m == 0:
        return SearchResult(None, 0.0, "exhaustive", 0)
    both, both_inter = stats.pairs()
    pre = _Prefixes.build(stats, both, both_inter)
    formula, best = _best_short(stats, pre, max_length)
    k = table.num_concepts
    evaluated = k + (pre.op.numel() if max_length >= 2 else 0)
    if max_length == 3:
        step = _chunk_rows(stats)
        for start in range(0, pre.op.numel(), step):
            rows = torch.arange(start, min(start + step, pre.op.numel()))
            ious = _extension_ious(stats, pre, rows, *stats.extension_counts(pre.masks(stats, rows)))
            evaluated += rows.numel() * 3 * (k - 2)
            top = float(ious.max())
            if top > best:
                best = top
                formula = _unflatten(pre, rows, ious)
    return SearchResult(formula, best, "exhaustive", evaluated)


def _unflatten(pre: _Prefixes, rows: Tensor, ious: Tensor) -> Compound:
    flat = int(ious.argmax())
    b, rest = divmod(flat, ious.shape[1] * ious.shape[2])
    op, c = divmod(rest, ious.shape[2])
    return Compound(_OPS[op], pre.formula(int(rows[b])), Atom(c))


def _exact_search(table: ConceptTable, unit_mask: Tensor, max_length: int,
                  deadline: float | None) -> SearchResult | None:
    """Branch and bound; None when the deadline passes before the optimum is proven."""
    stats = _Stats.build(table, unit_mask)
    if stats.m == 0:
        return SearchResult(None, 0.0, "exact", 0)
    both, both_inter = stats.pairs()
    pre = _Prefixes.build(stats, both, both_inter)
    formula, best = _best_short(stats, pre, max_length)
    k = table.num_concepts
    evaluated = k + (pre.op.numel() if max_length >= 2 else 0)
    if max_length == 3:
        bounds = _extension_bounds(stats, pre)  # (Q,)
        order = torch.argsort(bounds, descending=True, stable=True)
        bounds = bounds[order]
        step = _chunk_rows(stats)
        start = 0
        # most promising prefixes first: a good incumbent early prunes the rest
        while start < order.numel() and float(bounds[start]) > best:
            if deadline is not None and time.perf_counter() > deadline:
                return None
            stop = min(start + step, order.numel())
            rows = order[start:stop][bounds[start:stop] > best]
            ious = _extension_ious(stats, pre, rows, *stats.extension_counts(pre.masks(stats, rows)))
            evaluated += rows.numel() * 3 * (k - 2)
            top = float(ious.max())
            if top > best:
                best, formula = top, _unflatten(pre, rows, ious)
            start = stop
    return SearchResult(formula, best, "exact", evaluated)


def _canonical(formula: Formula) -> object:
    """A key equal for formulas that differ only by commuting AND / OR operands."""
    if isinstance(formula, Atom):
        return formula.index
    if formula.op is not Op.AND_NOT:
        if isinstance(formula.left, Compound) and formula.left.op is formula.op:
            return (formula.op, frozenset(formula.atoms()))
        return (formula.op, frozenset([_canonical(formula.left), formula.right.index]))
    return (formula.op, _canonical(formula.left), formula.right.index)


def _beam_search(table: ConceptTable, unit_mask: Tensor, max_length: int, beam_width: int,
                 first_beam: int) -> SearchResult:
    """Beam search of La Rosa et al. 2023 / Mu & Andreas 2020: best ``first_beam`` atoms, then repeatedly
    extend every beam formula by every atom and operator and keep the ``beam_width`` best seen so far."""
    stats = _Stats.build(table, unit_mask)
    if stats.m == 0:
        return SearchResult(None, 0.0, "beam", 0)
    k = table.num_concepts
    single = stats.iou(stats.hit, stats.size)  # (K,)
    order = torch.argsort(single, descending=True, stable=True)[:first_beam]
    beam: list[tuple[float, Formula]] = [(float(single[i]), Atom(int(i))) for i in order]
    evaluated = k
    for _ in range(max_length - 1):
        formulas = [f for _, f in beam]
        masks = torch.stack([f.evaluate(table.masks) for f in formulas]).to(stats.columns.dtype)  # (B, G)
        size_f = (masks @ stats.weight).to(torch.float64)[:, None]
        inter_f = (masks @ stats.inside).to(torch.float64)[:, None]
        both, both_inter = stats.extension_counts(masks)
        pool = {_canonical(f): (iou, f) for iou, f in beam}
        for index, op in enumerate(_OPS):
            size, inter = _combine(op, size_f, inter_f, stats.size, stats.hit, both, both_inter)
            ious = stats.iou(inter, size)  # (B, K)
            for row, f in enumerate(formulas):
                used = set(f.atoms())
                for c in range(k):
                    if c in used:
                        continue
                    g = Compound(op, f, Atom(c))
                    pool.setdefault(_canonical(g), (float(ious[row, c]), g))
                    evaluated += 1
        # stable sort: among equal IoUs the shorter / earlier formula stays ahead
        ranked = sorted(pool.values(), key=lambda item: (-item[0], item[1].length))
        beam = ranked[:beam_width]
    best_iou, best = max(beam, key=lambda item: (item[0], -item[1].length))
    return SearchResult(best, best_iou, "beam", evaluated)


def best_formula(
    table: ConceptTable,
    unit_mask: Tensor,
    max_length: int = 3,
    method: str = "exact",
    beam_width: int = 5,
    first_beam: int = 10,
    time_budget: float | None = None,
) -> SearchResult:
    """The formula maximising IoU(M, F) = |M ∧ F| / |M ∨ F| (SCIENCE.md section 5, step 3).

    ``method="exact"`` is a branch-and-bound search that returns the optimum of the whole formula space:
    lengths 1 and 2 are scored in full from pair counts (two matrix products), then the length-2 prefixes
    are extended most-promising-first and a prefix is skipped once its admissible IoU upper bound (see
    ``_extension_bounds``) cannot beat the best formula found. ``method="beam"`` is the paper's beam search
    (width ``beam_width``, first beam = the ``first_beam`` best atoms); it can miss the optimum. With a
    ``time_budget`` (seconds) the exact search falls back to beam search when it runs out of time and says
    so in ``method``.

    Args:
        table: concepts from :func:`prepare_concepts`.
        unit_mask: boolean unit mask, shape (N, *S) matching the concepts.
        max_length: longest formula, 1 to 3 (at most the number of concepts K, since atoms do not repeat).
        method: ``"exact"`` or ``"beam"``.
        beam_width: beam size for ``"beam"`` (paper: 5).
        first_beam: atoms in the first beam (paper: 10).
        time_budget: seconds allowed for the exact search, or None for no limit.

    Returns:
        A :class:`SearchResult`.

    Example:
        >>> concepts = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]]).bool()  # (N=4, K=3)
        >>> table = prepare_concepts(concepts)
        >>> unit = torch.tensor([True, False, False, False])  # exactly "a AND b"
        >>> result = best_formula(table, unit, max_length=1)
        >>> result.formula.name(["a", "b", "c"]), round(result.iou, 2)
        ('a', 0.5)
        >>> result = best_formula(table, unit, max_length=3)
        >>> result.formula.name(["a", "b", "c"]), round(result.iou, 2), result.method
        ('a AND b', 1.0, 'exact')
    """
    max_length = _check_search_args(table, max_length)
    if method not in ("exact", "beam"):
        raise ValueError(f"method must be 'exact' or 'beam', got {method!r}.")
    if beam_width < 1 or first_beam < 1:
        raise ValueError(f"beam_width and first_beam must be >= 1, got {beam_width} and {first_beam}.")
    if time_budget is not None and time_budget <= 0:
        raise ValueError(f"time_budget must be positive seconds or None, got {time_budget}.")
    if method == "beam":
        return _beam_search(table, unit_mask, max_length, beam_width, first_beam)
    deadline = None if time_budget is None else time.perf_counter() + time_budget
    result = _exact_search(table, unit_mask, max_length, deadline)
    if result is not None:
        return result
    beam = _beam_search(table, unit_mask, max_length, beam_width, first_beam)
    reason = f"beam (fallback: exact search exceeded {time_budget:g} s for {table.num_concepts} concepts)"
    return SearchResult(beam.formula, beam.iou, reason, beam.num_evaluated)


# ----------------------------------------------------------------------------------------------------------
# 4. Metrics and the whole pipeline for one unit
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplanationMetrics:
    """Quality of a formula F for a unit mask M (La Rosa et al. 2023, Sec. 4); 0 when a denominator is 0.

    Attributes:
        iou: |M ∧ F| / |M ∨ F|.
        detection_accuracy: |M ∧ F| / |F|.
        activation_coverage: |M ∧ F| / |M|.
        sample_coverage: #{x: M ∧ F != ∅} / #{x: F != ∅}.
        explanation_coverage: #{x: M ∧ F != ∅} / #{x: M != ∅}.
    """

    iou: float
    detection_accuracy: float
    activation_coverage: float
    sample_coverage: float
    explanation_coverage: float


def _ratio(num: Tensor, den: Tensor) -> float:
    return float(num) / float(den) if float(den) > 0 else 0.0


def explanation_metrics(unit_mask: Tensor, formula_mask: Tensor) -> ExplanationMetrics:
    """Metrics of SCIENCE.md section 5 for one (unit, range) and its formula.

    Args:
        unit_mask: M, boolean, shape (N, *S) (first axis = samples).
        formula_mask: F, boolean, same shape.

    Returns:
        :class:`ExplanationMetrics`.

    Example:
        >>> m = torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
        >>> f = torch.tensor([[1, 0, 0], [1, 0, 0]]).bool()
        >>> explanation_metrics(m, f)
        ExplanationMetrics(iou=0.3333333333333333, detection_accuracy=0.5, activation_coverage=0.5, \
sample_coverage=0.5, explanation_coverage=1.0)
    """
    if unit_mask.shape != formula_mask.shape:
        raise ValueError(f"unit mask {tuple(unit_mask.shape)} and formula mask {tuple(formula_mask.shape)} differ.")
    m = unit_mask.reshape(unit_mask.shape[0], -1).bool()  # (N, S)
    f = formula_mask.reshape(formula_mask.shape[0], -1).bool()
    both = m & f
    inter = both.sum()
    overlapping = both.any(dim=1).sum()  # samples where M and F meet
    return ExplanationMetrics(
        iou=_ratio(inter, (m | f).sum()),
        detection_accuracy=_ratio(inter, f.sum()),
        activation_coverage=_ratio(inter, m.sum()),
        sample_coverage=_ratio(overlapping, f.any(dim=1).sum()),
        explanation_coverage=_ratio(overlapping, m.any(dim=1).sum()),
    )


@dataclass(frozen=True)
class RangeExplanation:
    """The explanation of one activation range of one unit.

    Attributes:
        range_index: c, 0 = lowest range.
        low: min_c.
        high: max_c.
        formula: best formula, or None when the range mask is empty at the concept resolution.
        name: its readable name (``"(circle AND red) OR square"``), ``"-"`` when there is none.
        metrics: :class:`ExplanationMetrics` of the formula.
        method: search used (see :class:`SearchResult`).
    """

    range_index: int
    low: float
    high: float
    formula: Formula | None
    name: str
    metrics: ExplanationMetrics
    method: str


def explain_unit(
    activations: Tensor,
    table: ConceptTable,
    concept_names: Sequence[str] | None = None,
    num_clusters: int = 5,
    max_length: int = 3,
    method: str = "exact",
    beam_width: int = 5,
    first_beam: int = 10,
    time_budget: float | None = None,
) -> list[RangeExplanation]:
    """Explain every activation range of one unit (steps 1-3 of SCIENCE.md section 5 and the metrics).

    Ranges come from the raw activations; the masks from the activations upsampled to the concept size.

    Args:
        activations: the unit's activations, shape (N,) or (N, h, w).
        table: concepts from :func:`prepare_concepts` (for (N, h, w) maps with per-sample concepts, built
            with ``spatial_size=(h, w)``).
        concept_names: K names for readable formulas; ``c<index>`` if omitted.
        num_clusters: K ranges (1 = classic top-0.5% threshold).
        max_length, method, beam_width, first_beam, time_budget: see :func:`best_formula`.

    Returns:
        One :class:`RangeExplanation` per range, lowest first.

    Raises:
        InactiveUnitError: the unit never activates.

    Example:
        >>> concepts = torch.zeros(4, 2, 2, 2, dtype=torch.bool)  # (N, K, H, W)
        >>> concepts[:, 0, 0, :] = True  # "top" row
        >>> concepts[:2, 1] = True  # "first two images"
        >>> acts = concepts[:, 0].float() * (1 + concepts[:, 1].float())  # 2 on top of the first two
        >>> table = prepare_concepts(concepts)
        >>> [(e.name, e.metrics.iou) for e in explain_unit(acts, table, ["top", "early"], num_clusters=2)]
        [('top AND NOT early', 1.0), ('top AND early', 1.0)]
    """
    if concept_names is not None and len(concept_names) != table.num_concepts:
        raise ValueError(f"{len(concept_names)} concept names for {table.num_concepts} concepts.")
    if activations.shape[0] != table.num_samples:
        raise ValueError(f"activations have {activations.shape[0]} samples, the concepts {table.num_samples}.")
    ranges = activation_ranges(activations, num_clusters)
    maps = activations
    if activations.dim() == 3 and table.spatial_size and tuple(activations.shape[1:]) != table.spatial_size:
        maps = upsample_activations(activations, table.spatial_size)
    out = []
    for c, mask in enumerate(range_masks(maps, ranges)):
        result = best_formula(table, mask, max_length, method, beam_width, first_beam, time_budget)
        if result.formula is None:
            formula_mask = torch.zeros_like(mask)
            name = "-"
        else:
            formula_mask = table.expand(result.formula.evaluate(table.masks)).reshape(mask.shape)
            name = result.formula.name(concept_names)
        low, high = (float(v) for v in ranges[c])
        out.append(RangeExplanation(c, low, high, result.formula, name, explanation_metrics(mask, formula_mask),
                                    result.method))
    return out
