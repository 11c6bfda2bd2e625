"""The figures one concept probe reports: IoU per range over a layer's units, specialisation, formula changes,
and the paper's per-range measures as means over units (SCIENCE.md section 5).

A (unit, range) pair is keyed ``"<unit>/<range>"`` with ranges numbered from 1 (the lowest); the per-range means
are over the units that have all K ranges (a unit with fewer distinct activation values has fewer).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lightning_probes.measures.concepts.explain import RangeExplanation

__all__ = ["ConceptSummary", "RangeFigures", "concept_summary"]


@dataclass(frozen=True)
class RangeFigures:
    """Means over the units with all K ranges of one range's measures (NaN where none applies).

    Attributes:
        mean_iou: IoU of the best formula (NaN without a unit with all K ranges).
        mask_size: share of a sample's positions the range covers, over samples where it fires.
        importance: share of samples whose prediction changes when the range is zeroed; None: not measured.
        label_masking: activation similarity after label masking; None: not measured.
        untrained_iou: the IoU the same (unit, range) had at the untrained baseline.
        iou_gain_over_untrained: mean IoU now minus ``untrained_iou`` (over the pairs with a baseline).
        same_formula_as_untrained: share of pairs whose formula is the baseline's.
    """

    mean_iou: float
    mask_size: float
    importance: float | None
    label_masking: float | None
    untrained_iou: float
    iou_gain_over_untrained: float
    same_formula_as_untrained: float


@dataclass(frozen=True)
class ConceptSummary:
    """One probe's figures over a layer's units.

    Attributes:
        ranges: :class:`RangeFigures` of each range, lowest first (K entries).
        specialisation: mean over explained units of the highest range's IoU minus the lowest's (NaN: none).
        n_units_explained: units whose highest range has IoU >= the threshold.
        n_inactive_units: units that never activate.
        n_formula_changes: (unit, range) pairs whose formula differs from the previous probe's.
        n_beam_fallbacks: exact searches that ran out of time and fell back to beam search.
        formulas: the formula name of every (unit, range) pair, keyed ``"<unit>/<range>"``.
        full_units: the units with all K ranges. ious: their IoUs, (len(full_units), K).
    """

    ranges: tuple[RangeFigures, ...]
    specialisation: float
    n_units_explained: int
    n_inactive_units: int
    n_formula_changes: int
    n_beam_fallbacks: int
    formulas: dict[str, str]
    full_units: tuple[int, ...]
    ious: np.ndarray


def concept_summary(
    explained: Mapping[int, Sequence[RangeExplanation]],
    inactive: Sequence[int],
    num_clusters: int,
    iou_threshold: float,
    previous_formulas: Mapping[str, str] | None = None,
    untrained: Mapping[str, tuple[str, float]] | None = None,
    extra: Mapping[str, Mapping[str, float]] | None = None,
    importance_measured: bool = False,
    label_masking_measured: bool = False,
) -> ConceptSummary:
    """Summarise the explanations of one probe.

    Args:
        explained: the ranges of every explained unit (:func:`~lightning_probes.measures.concepts.explain_unit`).
        inactive: the units that never activate.
        num_clusters: K, the ranges a unit has when all its ranges exist.
        iou_threshold: a unit counts as explained when its highest range reaches this IoU.
        previous_formulas: the previous probe's ``formulas`` (nothing changed where a pair is missing).
        untrained: (formula name, IoU) of each pair at the untrained baseline.
        extra: ``"importance"`` and ``"label_masking"`` of each pair (NaN where not measured).
        importance_measured: whether range importance is defined for this model (else its figures are None).
        label_masking_measured: likewise for label masking.

    Returns:
        A :class:`ConceptSummary`.

    Example:
        >>> from lightning_probes.measures.concepts import ExplanationMetrics, RangeExplanation
        >>> def rng(c, name, iou):
        ...     return RangeExplanation(c, float(c), c + 1.0, None, name, ExplanationMetrics(iou, 0, 0, 0, 0), "exact")
        >>> s = concept_summary({7: [rng(0, "a", 0.2), rng(1, "b", 0.8)]}, [3], 2, 0.5, previous_formulas={"7/2": "c"})
        >>> [r.mean_iou for r in s.ranges], round(s.specialisation, 3), s.n_units_explained, s.n_formula_changes
        ([0.2, 0.8], 0.6, 1, 1)
    """
    previous_formulas, untrained, extra = previous_formulas or {}, untrained or {}, extra or {}
    k = num_clusters
    full = {u: r for u, r in explained.items() if len(r) == k}  # units with fewer distinct values than K
    ious = np.full((len(full), k), np.nan)  # (units, ranges)
    for row, ranges in enumerate(full.values()):
        ious[row] = [r.metrics.iou for r in ranges]
    top = [r[-1].metrics.iou for r in explained.values()]
    formulas = {f"{u}/{r.range_index + 1}": r.name for u, rs in explained.items() for r in rs}
    return ConceptSummary(
        ranges=tuple(_range_figures(c, full, ious, untrained, extra, importance_measured, label_masking_measured)
                     for c in range(k)),
        specialisation=(float(np.mean([r[-1].metrics.iou - r[0].metrics.iou for r in explained.values()]))
                        if explained else math.nan),
        n_units_explained=sum(iou >= iou_threshold for iou in top),
        n_inactive_units=len(inactive),
        n_formula_changes=sum(previous_formulas.get(key, name) != name for key, name in formulas.items()),
        n_beam_fallbacks=sum(r.method.startswith("beam (fallback") for rs in explained.values() for r in rs),
        formulas=formulas,
        full_units=tuple(full),
        ious=ious,
    )


def _range_figures(c: int, full: Mapping[int, Sequence[RangeExplanation]], ious: np.ndarray,
                   untrained: Mapping[str, tuple[str, float]], extra: Mapping[str, Mapping[str, float]],
                   importance_measured: bool, label_masking_measured: bool) -> RangeFigures:
    """The figures of range c (0 = lowest) over the units with all K ranges."""
    keys = [f"{u}/{c + 1}" for u in full]
    ranges = [rs[c] for rs in full.values()]
    base = [untrained[k] for k in keys if k in untrained]
    untrained_iou = _nanmean([iou for _, iou in base])
    now = [r.metrics.iou for k, r in zip(keys, ranges) if k in untrained]
    same = [untrained[k][0] == r.name for k, r in zip(keys, ranges) if k in untrained]
    return RangeFigures(
        mean_iou=float(ious[:, c].mean()) if len(full) else math.nan,
        mask_size=_nanmean([r.sizes.unit_mask_size for r in ranges if r.sizes]),
        importance=(_nanmean([extra.get(k, {}).get("importance", math.nan) for k in keys])
                    if importance_measured else None),  # figures only where the measure is defined
        label_masking=(_nanmean([extra.get(k, {}).get("label_masking", math.nan) for k in keys])
                       if label_masking_measured else None),
        untrained_iou=untrained_iou,
        iou_gain_over_untrained=_nanmean(now) - untrained_iou if base else math.nan,
        same_formula_as_untrained=float(np.mean(same)) if same else math.nan,
    )


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
