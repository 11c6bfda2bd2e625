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
   bounds (``method="exact"``) or the paper's beam search (``method="beam"``). Formulas, concept tables and
   the searches live in :mod:`lightning_probes.measures.formula_search` and are re-exported here.
4. :func:`explanation_metrics` scores the formula: IoU, detection accuracy, activation and sample coverage,
   explanation coverage.

Formulas are grown one atom at a time, ``F' = F op c`` (the grammar of Mu & Andreas 2020 and of the
paper's beam search), so length-3 formulas are ``(a op b) op c``; atoms do not repeat inside a formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from lightning_probes.measures.formula_search import (
    Atom,
    Compound,
    ConceptTable,
    Formula,
    Op,
    SearchResult,
    best_formula,
    exhaustive_search,
    prepare_concepts,
)

__all__ = [
    "Atom",
    "Compound",
    "ConceptTable",
    "ExplanationMetrics",
    "Formula",
    "InactiveUnitError",
    "MaskStatistics",
    "Op",
    "RangeExplanation",
    "SearchResult",
    "activation_ranges",
    "best_formula",
    "exhaustive_search",
    "explain_unit",
    "explanation_metrics",
    "kmeans_1d",
    "label_masked_inputs",
    "label_masking_score",
    "mask_statistics",
    "prediction_change_rate",
    "prepare_concepts",
    "range_masks",
    "upsample_activations",
    "zero_range",
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
    if values.ndim != 1:
        raise ValueError(f"values must be a 1-D tensor, got shape {tuple(values.shape)}.")
    n = values.numel()
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, {n}] for {n} distinct values, got {num_clusters}.")
    if not bool(torch.isfinite(values).all()) or not bool((values[1:] > values[:-1]).all()):
        raise ValueError("values must be finite, sorted and strictly increasing (e.g. torch.unique(...)).")
    if weights is not None and (weights.shape != values.shape or not bool((weights > 0).all())):
        raise ValueError(f"weights must be positive, one per value {tuple(values.shape)}, got shape "
                         f"{tuple(weights.shape)}.")
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
        # points i whose optimum is needed: room must remain for the later clusters; the last layer needs i = n
        hi = n - (num_clusters - 1 - k)
        lo, hi = torch.tensor([k + 1 if k < num_clusters - 1 else n]), torch.tensor([hi])
        opt_lo, opt_hi = torch.tensor([k]), hi - 1  # allowed split points j
        while lo.numel():
            mid = (lo + hi) // 2
            count = torch.minimum(opt_hi, mid - 1) - opt_lo + 1  # (T,) candidates per task, >= 1
            task = torch.repeat_interleave(count)  # task of every candidate
            j = (opt_lo - (count.cumsum(0) - count))[task] + torch.arange(task.numel())
            val = cost[j] + sse(j, mid[task])
            best = torch.full(mid.shape, math.inf, dtype=torch.float64).scatter_reduce(0, task, val, "amin")
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
    Compositional Explanations: T = the top ``quantile`` of *all* values (zeros included), range [T, +inf).
    For a ReLU unit (all values >= 0) zeros never enter that range: when fewer than ``quantile`` of the values
    are non-zero, T is 0 and the paper's strict ``a > T`` keeps only the firing positions; the closed range
    used here gets the same set by raising T to the smallest non-zero value (so a sparse unit that fires on a
    rare concept is explained by it, not by everything).

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
        if bool((ordered[0] >= 0).item()) and not bool((threshold > 0).item()):  # ReLU: a > 0 as a closed range
            threshold = ordered[ordered > 0][0]
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

    Closed ranges [min_c, max_c], deliberately: on the raw activations M_c is then exactly cluster c. The
    paper's reference code and SCIENCE.md step 2 use strict inequalities min_c < a < max_c, which drop each
    cluster's own extreme values (and empty a cluster of one distinct value: its range would explain nothing);
    after bilinear upsampling the two differ only on positions whose value equals a range end. For K = 1 the
    range is [T, +inf), and for a ReLU unit T > 0 (see :func:`activation_ranges`), so zeros never fire.

    Args:
        activations: one unit's (upsampled) activations, any shape S.
        ranges: (R, 2) from :func:`activation_ranges`.

    Returns:
        Boolean masks, shape (R, *S).

    Example:
        >>> range_masks(torch.tensor([0.5, 1.0, 2.0, 3.0]), torch.tensor([[1.0, 2.0]])).int().tolist()
        [[0, 1, 1, 0]]
    """
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ValueError(f"ranges must have shape (R, 2) (low, high), got {tuple(ranges.shape)}.")
    a = activations.to(torch.float64).unsqueeze(0)  # (1, *S)
    view = (-1,) + (1,) * activations.dim()
    return (a >= ranges[:, 0].reshape(view)) & (a <= ranges[:, 1].reshape(view))


# ----------------------------------------------------------------------------------------------------------
# 2. Metrics and the whole pipeline for one unit
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
    if unit_mask.ndim == 0 or unit_mask.shape[0] == 0:
        raise ValueError(f"masks must have shape (N, ...) with N >= 1 samples, got {tuple(unit_mask.shape)}.")
    for label, mask in (("unit mask", unit_mask), ("formula mask", formula_mask)):
        _check_binary(mask, label)
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


def _check_binary(mask: Tensor, label: str) -> None:
    if mask.dtype != torch.bool and (mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all())):
        raise ValueError(f"{label} must be a boolean (or 0/1 integer) tensor, got dtype {mask.dtype}.")


@dataclass(frozen=True)
class MaskStatistics:
    """Sizes of the masks of one (unit, range) and its formula (the paper's mask-size analysis).

    Each is the mean, over the samples where that mask is non-empty, of the share of a sample's positions it
    covers: size(X) = mean_{x: X(x) != ∅} |X(x)| / P, P positions per sample (the reference's ``avg_mask_size``
    and ``avg_overlapping``). NaN when the mask is empty on every sample.

    Attributes:
        unit_mask_size: size(M), M the range's unit mask.
        formula_mask_size: size(F), F the formula's mask.
        overlap_size: size(M ∧ F).
        unit_mask_samples: #{x: M(x) != ∅} / N, the share of samples where the range fires.
    """

    unit_mask_size: float
    formula_mask_size: float
    overlap_size: float
    unit_mask_samples: float


def _mean_size(mask: Tensor) -> float:
    sizes = mask.sum(1, dtype=torch.float64)  # (N,)
    sizes = sizes[sizes > 0]
    return float(sizes.mean() / mask.shape[1]) if sizes.numel() else math.nan


def mask_statistics(unit_mask: Tensor, formula_mask: Tensor) -> MaskStatistics:
    """Mask sizes of a unit mask M and a formula mask F, see :class:`MaskStatistics`.

    Args:
        unit_mask: M, boolean, shape (N, *S). formula_mask: F, boolean, same shape.

    Returns:
        :class:`MaskStatistics`.

    Example:
        >>> m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()
        >>> f = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]]).bool()
        >>> mask_statistics(m, f)
        MaskStatistics(unit_mask_size=0.5, formula_mask_size=0.625, overlap_size=0.25, unit_mask_samples=0.5)
    """
    if unit_mask.shape != formula_mask.shape or unit_mask.ndim == 0 or unit_mask.shape[0] == 0:
        raise ValueError(f"masks must share a shape (N, ...) with N >= 1, got {tuple(unit_mask.shape)} and "
                         f"{tuple(formula_mask.shape)}.")
    m = unit_mask.reshape(unit_mask.shape[0], -1).bool()  # (N, P)
    f = formula_mask.reshape(formula_mask.shape[0], -1).bool()
    return MaskStatistics(_mean_size(m), _mean_size(f), _mean_size(m & f), float(m.any(1).double().mean()))


def label_masked_inputs(inputs: Tensor, label_mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Inputs with everything outside a label's region perturbed (the paper's label masking).

    x'(p) = x(p) where the label mask L is set, x(p)·ε(p) elsewhere, ε ~ U[0, 1) per input element (as the
    authors' reference code does): the concept's own pixels are intact, the rest is damped by noise. L is
    resized to the input's spatial size by nearest neighbour.

    Args:
        inputs: (N, C, H, W) images (or (N, H, W)).
        label_mask: (N, h, w) boolean region of the label in each sample.
        generator: for the noise (seed it for reproducible figures).

    Returns:
        Tensor of the inputs' shape.

    Example:
        >>> x = torch.ones(1, 1, 2, 2); keep = torch.tensor([[[True, False], [False, False]]])
        >>> out = label_masked_inputs(x, keep, torch.Generator().manual_seed(0))
        >>> out[0, 0, 0, 0].item(), bool((out[0, 0].flatten()[1:] < 1).all())
        (1.0, True)
    """
    if label_mask.ndim != 3 or label_mask.shape[0] != inputs.shape[0] or inputs.ndim not in (3, 4):
        raise ValueError(f"label_mask must be (N, h, w) for inputs (N, [C,] H, W), got {tuple(label_mask.shape)} and "
                         f"{tuple(inputs.shape)}.")
    keep = F.interpolate(label_mask[:, None].float(), size=tuple(inputs.shape[-2:]), mode="nearest")  # (N, 1, H, W)
    if inputs.ndim == 3:
        keep = keep[:, 0]
    noise = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype if inputs.is_floating_point()
                       else torch.float32).to(inputs.device)
    return inputs * (keep.to(inputs.device) + (1 - keep.to(inputs.device)) * noise)


def label_masking_score(before: Tensor, after: Tensor, low: float, high: float) -> float:
    """How much of a range's activation survives label masking (La Rosa et al. 2023, label masking).

    With b(x) = 1[low <= a(x) <= high] the range's bitmap on the unmasked activations a (closed bounds, as
    everywhere here), the score is the mean over samples of cos(a ⊙ b, a' ⊙ b), a' the activations on the
    label-masked input (:func:`label_masked_inputs`). 1: the range fires the same way on the label alone, so
    the label is what drives it; near 0: the activation came from the context. Samples whose bitmap is empty
    are left out (the reference counts them as 0, which measures how often the range fires, not the label).

    Args:
        before: the unit's activations (N, *S) on the samples that contain the label. after: the same on the
            label-masked samples. low, high: the range.

    Returns:
        The score, NaN when no sample has a position in the range.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 0.0]]); round(label_masking_score(a, 2 * a, 1.0, 2.0), 12)
        1.0
    """
    if before.shape != after.shape or before.ndim == 0:
        raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} must be (N, ...) alike.")
    a = before.reshape(before.shape[0], -1).to(torch.float64)
    a2 = after.reshape(after.shape[0], -1).to(torch.float64)
    bitmap = (a >= low) & (a <= high)
    rows = bitmap.any(1)
    if not bool(rows.any()):
        return math.nan
    x, y = (a * bitmap)[rows], (a2 * bitmap)[rows]
    cos = (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-300)
    return float(torch.where(y.norm(dim=1) > 0, cos, torch.zeros_like(cos)).mean())


def zero_range(activations: Tensor, low: float, high: float) -> Tensor:
    """The activations with every value in [low, high] set to 0 (for range importance).

    Example:
        >>> zero_range(torch.tensor([0.5, 1.0, 2.0, 3.0]), 1.0, 2.0).tolist()
        [0.5, 0.0, 0.0, 3.0]
    """
    inside = (activations >= low) & (activations <= high)
    return torch.where(inside, torch.zeros_like(activations), activations)


def prediction_change_rate(logits: Tensor, ablated_logits: Tensor) -> float:
    """Range importance (La Rosa et al. 2023): the share of samples whose predicted class changes when one
    range's activations are zeroed, #{x: argmax f(x) != argmax f_c(x)} / N, f_c the network with the unit's
    values in range c set to 0 (:func:`zero_range`, applied by a forward hook on the concept layer).

    Args:
        logits: (N, C) of the intact network. ablated_logits: (N, C) with the range zeroed.

    Example:
        >>> prediction_change_rate(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        0.5
    """
    if logits.shape != ablated_logits.shape or logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits {tuple(logits.shape)} and ablated_logits {tuple(ablated_logits.shape)} must both be "
                         "(N, C) with N >= 1.")
    return float((logits.argmax(-1) != ablated_logits.argmax(-1)).double().mean())


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
        sizes: :class:`MaskStatistics` of the range's mask and the formula's.
        formula_mask: F on the concept grid, (N, *S) bool (for label masking).
    """

    range_index: int
    low: float
    high: float
    formula: Formula | None
    name: str
    metrics: ExplanationMetrics
    method: str
    sizes: MaskStatistics | None = None
    formula_mask: Tensor | None = None


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
                                    result.method, mask_statistics(mask, formula_mask), formula_mask))
    return out
