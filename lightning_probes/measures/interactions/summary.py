"""The figures one interaction probe reports (SCIENCE.md §3): salient counts of the output, emergence and forgetting
since the previous probe, each layer against the output, and each layer against the one before it.

Ratios of strength: ``emerged = new / (new + overlap)`` (the share of today's salient strength that is new) and
``forgotten = forget / (forget + overlap)`` (the share of the earlier strength that is gone), 0 when nothing is
salient on either side; IoUs and the per-layer ratios pooled over orders are 0 where they are undefined (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_probes.measures.interactions.change import (
    InteractionChange,
    count_by_order,
    interaction_change,
    merge_first_order,
    salient_iou,
    salient_mask,
)
from lightning_probes.measures.interactions.solvers import AndOrDecomposition
from lightning_probes.measures.interactions.transforms import _num_players

__all__ = [
    "InteractionSummary",
    "LayerAgreement",
    "SalientInteractions",
    "SolverCertificate",
    "Turnover",
    "interaction_summary",
    "salient_interactions",
    "solver_certificate",
]


class SalientInteractions(NamedTuple):
    """One source's interactions with first-order OR merged into AND, and its salient set.

    Attributes:
        i_and: (B, 2^n). i_or: (B, 2^n). mask: salient set (B, 2, 2^n).
        objective: Σ_{S≠∅} |I_and(S)| + |I_or(S)| of each game before merging, (B,); None where not known.
    """

    i_and: Tensor
    i_or: Tensor
    mask: Tensor
    objective: Tensor | None = None


def salient_interactions(result: AndOrDecomposition, rows: slice, tau: float) -> SalientInteractions:
    """The rows ``rows`` of a batched decomposition, singletons merged (:func:`merge_first_order`), salient at τ.

    Example:
        >>> from lightning_probes.measures.interactions import sparse_and_or
        >>> result = sparse_and_or(torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0]]), kappa=0.0)
        >>> second = salient_interactions(result, slice(1, 2), tau=0.05)
        >>> second.mask[0].int().tolist(), second.objective.tolist()
        ([[0, 0, 0, 1], [0, 0, 0, 0]], [2.0])
    """
    i_and, i_or = merge_first_order(result.i_and[rows], result.i_or[rows])
    return SalientInteractions(i_and, i_or, salient_mask(i_and, i_or, tau), result.objective[rows])


class SolverCertificate(NamedTuple):
    """How far from the sparsest decomposition the reported ones can be, over all games of one probe.

    Attributes:
        gap_max: the largest certified relative gap (objective ≤ (1 + gap)·optimum). gap_mean: its mean.
        exact_fallback_fraction: the share of games the exact LP re-solved.
    """

    gap_max: float
    gap_mean: float
    exact_fallback_fraction: float


def solver_certificate(result: AndOrDecomposition) -> SolverCertificate:
    """The certified gaps and the LP fallback share of a decomposition.

    Example:
        >>> from lightning_probes.measures.interactions import sparse_and_or
        >>> certificate = solver_certificate(sparse_and_or(torch.tensor([[0.0, 1.0, 1.0, 3.0]]), method="lp"))
        >>> certificate.exact_fallback_fraction, certificate.gap_max < 1e-6
        (1.0, True)
    """
    gap = result.relative_gap
    exact = result.exact if result.exact is not None else torch.zeros_like(gap, dtype=torch.bool)
    return SolverCertificate(float(gap.max()), float(gap.mean()), float(exact.double().mean()))


class Turnover(NamedTuple):
    """Emergence and forgetting from one salient set to another: new / (new + overlap), forget / (forget + overlap)."""

    emerged: float
    forgotten: float


class LayerAgreement(NamedTuple):
    """A layer's interactions against the output's (Cheng et al. 2024's layerwise comparison).

    Attributes:
        completeness: overlap / (overlap + new) per order, (n + 1,) (NaN where an order has nothing salient).
        redundancy: forget / (overlap + forget) per order, (n + 1,).
        pooled_completeness: the same ratio of the terms summed over orders (0 when nothing is salient).
        pooled_redundancy: likewise.
        completeness_mean_over_orders: the mean of the per-order ratios over orders 1..n that are defined.
        redundancy_mean_over_orders: likewise.
        iou: the mean IoU of the layer's and the output's salient sets.
    """

    completeness: Tensor
    redundancy: Tensor
    pooled_completeness: float
    pooled_redundancy: float
    completeness_mean_over_orders: float
    redundancy_mean_over_orders: float
    iou: float


class InteractionSummary(NamedTuple):
    """One probe's figures.

    Attributes:
        n_salient: salient interactions per sample (mean). mean_order: their mean order.
        objective: the mean sparse objective of the output's games (NaN when not given).
        n_salient_by_order: salient interactions per sample of order k = 1..n (entry k - 1).
        since_previous: :class:`Turnover` from the previous probe's output to this one's; None without one.
        iou_previous: mean IoU of the output's salient sets now and at the previous probe; None without one.
        layers: :class:`LayerAgreement` of each layer against the output, in the order given.
        between_layers: :class:`Turnover` of each source from the one before it in the order (layers..., output):
            entry j compares source j + 1 with source j.
    """

    n_salient: float
    mean_order: float
    objective: float
    n_salient_by_order: tuple[float, ...]
    since_previous: Turnover | None
    iou_previous: float | None
    layers: dict[str, LayerAgreement]
    between_layers: tuple[Turnover, ...]


def interaction_summary(
    output: SalientInteractions,
    layers: Mapping[str, SalientInteractions] | None = None,
    previous: SalientInteractions | None = None,
) -> InteractionSummary:
    """Summarise the salient interactions of the output, the layers and the previous probe's output.

    Args:
        output: the output's salient interactions now (B samples).
        layers: each layer's, from the layer probes on the same masked inputs, in forward order.
        previous: the output's at the previous probe; ignored when its salient set has another shape (the number
            of samples or players changed), as there is nothing to compare sample by sample.

    Returns:
        An :class:`InteractionSummary`.

    Raises:
        ValueError: the last dimension of the interactions is not 2^n.

    Example:
        >>> i_and = torch.tensor([[0.0, 2.0, 0.0, 1.0]])  # two players: ∅, {0}, {1}, {0, 1}
        >>> now = SalientInteractions(i_and, torch.zeros(1, 4), salient_mask(i_and, torch.zeros(1, 4)))
        >>> s = interaction_summary(now, previous=now)
        >>> s.n_salient, s.mean_order, s.n_salient_by_order, s.since_previous, s.iou_previous
        (2.0, 1.5, (1.0, 1.0), Turnover(emerged=0.0, forgotten=0.0), 1.0)
    """
    layers = {} if layers is None else dict(layers)
    n = _num_players(output.i_and.shape[-1])
    counts = count_by_order(output.mask).to(torch.float64)  # (B, n+1)
    orders = torch.arange(n + 1, dtype=torch.float64)
    since, iou_previous = None, None
    if previous is not None and previous.mask.shape == output.mask.shape:
        prev = SalientInteractions(previous.i_and.to(output.i_and), previous.i_or.to(output.i_or),
                                   previous.mask.to(output.mask.device))
        since = _turnover(_change(prev, output))  # previous probe -> now: new emerged, forget was forgotten
        iou_previous = _nan_to_num(salient_iou(output.mask, prev.mask).mean())
    agreement = {name: _agreement(layer, output) for name, layer in layers.items()}
    chain = [*layers.values(), output]  # forward order: each source against the one before it
    return InteractionSummary(
        n_salient=float(counts.sum(-1).mean()),
        mean_order=float((counts * orders).sum() / counts.sum().clamp_min(1)),
        objective=math.nan if output.objective is None else float(output.objective.mean()),
        n_salient_by_order=tuple(float(counts[:, k].mean()) for k in range(1, n + 1)),
        since_previous=since,
        iou_previous=iou_previous,
        layers=agreement,
        between_layers=tuple(_turnover(_change(before, after)) for before, after in zip(chain, chain[1:])),
    )


def _change(before: SalientInteractions, after: SalientInteractions) -> InteractionChange:
    return interaction_change((before.i_and, before.i_or), (after.i_and, after.i_or), before.mask, after.mask)


def _agreement(layer: SalientInteractions, output: SalientInteractions) -> LayerAgreement:
    change = _change(layer, output)
    return LayerAgreement(
        completeness=change.completeness,
        redundancy=change.redundancy,
        pooled_completeness=_nan_to_num(change.pooled_completeness),
        pooled_redundancy=_nan_to_num(change.pooled_redundancy),
        completeness_mean_over_orders=_nan_to_num(torch.nanmean(change.completeness[1:])),
        redundancy_mean_over_orders=_nan_to_num(torch.nanmean(change.redundancy[1:])),
        iou=_nan_to_num(salient_iou(layer.mask, output.mask).mean()),
    )


def _turnover(change: InteractionChange) -> Turnover:
    return Turnover(_ratio(change.new.sum(), change.overlap.sum()), _ratio(change.forget.sum(), change.overlap.sum()))


def _ratio(part: Tensor, rest: Tensor) -> float:
    total = float(part + rest)
    return float(part) / total if total > 0 else 0.0


def _nan_to_num(value: Tensor) -> float:
    number = float(value)
    return 0.0 if math.isnan(number) else number
