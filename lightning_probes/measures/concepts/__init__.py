"""Clustered Compositional Explanations: logical concept formulas for each activation range of a unit.

La Rosa, Gilpin, Capobianco, "Towards a fuller understanding of neurons with Clustered Compositional
Explanations", NeurIPS 2023 (arXiv 2310.18443), building on Compositional Explanations (Mu & Andreas 2020)
and Network Dissection (Bau et al. 2017). SCIENCE.md section 5.

Pipeline for one unit (:func:`explain_unit`, in :mod:`.explain`, runs all of it):

1. :func:`activation_ranges` (:mod:`.ranges`) pools the unit's activations over the probe data, drops zeros when
   all values are >= 0, and splits the values into K ranges with *exact* 1-D k-means (dynamic programming, so the
   ranges are deterministic and globally optimal); K = 1 gives the classic top-0.5% threshold.
2. :func:`range_masks` binarises the activation map (upsampled to the concept-mask size with
   :func:`upsample_activations`) into one unit mask per range.
3. :func:`best_formula` (:mod:`.search`) finds the formula of at most ``max_length`` atomic concepts joined by
   AND, OR, AND NOT that maximises IoU with the unit mask: an exact branch-and-bound search with admissible IoU
   upper bounds (``method="exact"``) or the paper's beam search (``method="beam"``). The formulas and their IoU
   counts and bounds are in :mod:`.formulas`, the compressed concept masks in :mod:`.table`.
4. :func:`explanation_metrics` (:mod:`.metrics`) scores the formula: IoU, detection accuracy, activation and
   sample coverage, explanation coverage; the paper's further measures (mask sizes, label masking, range
   importance) are there too. :mod:`.summary` turns the explanations of a layer's units into one probe's figures.

Formulas are grown one atom at a time, ``F' = F op c`` (the grammar of Mu & Andreas 2020 and of the
paper's beam search), so length-3 formulas are ``(a op b) op c``; atoms do not repeat inside a formula.
The old paths :mod:`lightning_probes.measures.explanations` and :mod:`lightning_probes.measures.formula_search`
re-export these names.
"""

from lightning_probes.measures.concepts.explain import RangeExplanation, explain_unit
from lightning_probes.measures.concepts.formulas import Atom, Compound, Formula, Op
from lightning_probes.measures.concepts.metrics import (
    ExplanationMetrics,
    MaskStatistics,
    explanation_metrics,
    label_masked_inputs,
    label_masking_score,
    mask_statistics,
    prediction_change_rate,
    zero_range,
)
from lightning_probes.measures.concepts.ranges import NETDISSECT_QUANTILE as NETDISSECT_QUANTILE
from lightning_probes.measures.concepts.ranges import (
    InactiveUnitError,
    activation_ranges,
    kmeans_1d,
    range_masks,
    upsample_activations,
)
from lightning_probes.measures.concepts.search import SearchMethod, SearchResult, best_formula, exhaustive_search
from lightning_probes.measures.concepts.summary import ConceptSummary, RangeFigures, concept_summary
from lightning_probes.measures.concepts.table import ConceptTable, prepare_concepts

__all__ = [
    "Atom",
    "Compound",
    "ConceptSummary",
    "ConceptTable",
    "ExplanationMetrics",
    "Formula",
    "InactiveUnitError",
    "MaskStatistics",
    "Op",
    "RangeExplanation",
    "RangeFigures",
    "SearchMethod",
    "SearchResult",
    "activation_ranges",
    "best_formula",
    "concept_summary",
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
