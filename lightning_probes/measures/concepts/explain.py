"""The explanation of every activation range of one unit: ranges, masks, best formulas and their metrics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_probes.measures.concepts.formulas import Formula
from lightning_probes.measures.concepts.metrics import (
    ExplanationMetrics,
    MaskStatistics,
    explanation_metrics,
    mask_statistics,
)
from lightning_probes.measures.concepts.ranges import activation_ranges, range_masks, upsample_activations
from lightning_probes.measures.concepts.search import SearchMethod, best_formula
from lightning_probes.measures.concepts.table import ConceptTable

__all__ = ["RangeExplanation", "explain_unit"]


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
    method: SearchMethod = "exact",
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
        max_length: longest formula (see :func:`best_formula`).
        method: ``"exact"`` or ``"beam"`` (see :func:`best_formula`).
        beam_width: beam size for ``"beam"``.
        first_beam: atoms in the first beam.
        time_budget: seconds allowed for the exact search, or None for no limit.

    Returns:
        One :class:`RangeExplanation` per range, lowest first.

    Raises:
        InactiveUnitError: the unit never activates.
        ValueError: concept names or activations that do not match the table, or the arguments
            :func:`best_formula` refuses.

    Example:
        >>> concepts = torch.zeros(4, 2, 2, 2, dtype=torch.bool)  # (N, K, H, W)
        >>> concepts[:, 0, 0, :] = True  # "top" row
        >>> concepts[:2, 1] = True  # "first two images"
        >>> acts = concepts[:, 0].float() * (1 + concepts[:, 1].float())  # 2 on top of the first two
        >>> from lightning_probes.measures.concepts import prepare_concepts
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
    size = table.spatial_size  # (H, W) of spatial concepts, () for per-sample ones
    if activations.dim() == 3 and size and tuple(activations.shape[1:]) != size:
        maps = upsample_activations(activations, (size[0], size[1]))
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
