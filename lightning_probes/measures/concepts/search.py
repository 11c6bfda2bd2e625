"""The search for the formula that best matches a unit mask: exact branch and bound, exhaustive, beam.

The exact search visits pairs (a, b) best IoU bound first (the admissible bounds of
:mod:`lightning_probes.measures.concepts.formulas`) and skips them once their bound cannot beat the best formula
found, so the result is the optimum of the whole space; the paper's beam search is kept as an option and as the
fallback when a time budget runs out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lightning_probes.measures.concepts.formulas import (
    _OPS,
    Atom,
    Compound,
    Formula,
    Op,
    _pair_bounds,
    _prefix,
    _prefix_count,
    _Stats,
    _triple_ious,
)
from lightning_probes.measures.concepts.table import ConceptTable

__all__ = ["SearchMethod", "SearchResult", "best_formula", "exhaustive_search"]

SearchMethod = Literal["exact", "beam"]
"""A formula search of :func:`best_formula`: exact branch-and-bound, or the paper's beam search."""


@dataclass(frozen=True)
class SearchResult:
    """Best formula for one unit mask.

    Attributes:
        formula: the formula, or None when the unit mask is empty.
        iou: its IoU with the unit mask.
        method: ``"exact"``, ``"exhaustive"``, ``"beam"``, or ``"beam (fallback: ...)"`` when the exact search
            ran out of time.
        num_evaluated: number of formulas whose IoU was computed.
    """

    formula: Formula | None
    iou: float
    method: str
    num_evaluated: int


def _best_short(stats: _Stats, max_length: int) -> tuple[Formula, float, int]:
    """Best formula of length 1 or 2 (ties: the shorter, then the first); also the number scored."""
    single = stats.iou(stats.inside.single, stats.outside.single)  # (K,)
    formula: Formula = Atom(int(single.argmax()))
    best = float(single.max())
    k = single.numel()
    if max_length < 2:
        return formula, best, k
    a, b = torch.triu_indices(k, k, 1)
    for kind in range(4):
        ious = stats.iou(
            _prefix_count(kind, stats.inside.single[a], stats.inside.single[b], stats.inside.pair[a, b]),
            _prefix_count(kind, stats.outside.single[a], stats.outside.single[b], stats.outside.pair[a, b]),
        )
        if float(ious.max()) > best:
            q = int(ious.argmax())
            best, formula = float(ious.max()), _prefix(kind, int(a[q]), int(b[q]))
    return formula, best, k + 4 * a.numel()


def _unflatten(a: Tensor, b: Tensor, ious: Tensor) -> Compound:
    row, kind, op, c = (int(i) for i in torch.unravel_index(ious.argmax(), ious.shape))
    return Compound(_OPS[op], _prefix(kind, int(a[row]), int(b[row])), Atom(c))


def _chunk_pairs(stats: _Stats) -> int:
    """Pairs per batch: keeps a (B, G) block near 2**21 numbers."""
    return max(1, min(2048, 2**21 // max(stats.columns.shape[1], 1)))


def _check_search_args(table: ConceptTable, max_length: int) -> int:
    """Validate ``max_length``; returns the usable length (atoms never repeat, so at most K)."""
    if not 1 <= max_length <= 3:
        raise ValueError(f"max_length must be 1, 2 or 3, got {max_length}.")
    return min(max_length, table.num_concepts)


def _search(table: ConceptTable, unit_mask: Tensor, max_length: int, prune: bool,
            deadline: float | None) -> SearchResult | None:
    """Exhaustive (``prune=False``) or branch and bound; None when the deadline passes first."""
    method = "exact" if prune else "exhaustive"
    stats = _Stats.build(table, unit_mask)
    if stats.m == 0:
        return SearchResult(None, 0.0, method, 0)
    formula, best, evaluated = _best_short(stats, max_length)
    if max_length < 3:
        return SearchResult(formula, best, method, evaluated)
    k = table.num_concepts
    a, b = torch.triu_indices(k, k, 1)
    bounds = torch.full(a.shape, torch.inf, dtype=torch.float64)
    if prune:
        parts, step = [], max(1, 2**20 // k)  # (pairs, K) blocks of bounded size, whatever K
        for start in range(0, a.numel(), step):
            if deadline is not None and time.perf_counter() > deadline:
                return None
            parts.append(_pair_bounds(stats, a[start : start + step], b[start : start + step]))
        bounds = torch.cat(parts)
        order = torch.argsort(bounds, descending=True, stable=True)  # most promising first: prunes the rest
        a, b, bounds = a[order], b[order], bounds[order]
    step, start = _chunk_pairs(stats), 0
    while start < a.numel() and float(bounds[start]) > best:
        if deadline is not None and time.perf_counter() > deadline:
            return None
        rows = torch.arange(start, min(start + step, a.numel()))
        rows = rows[bounds[rows] > best]
        ra, rb = a[rows], b[rows]
        ious = _triple_ious(stats, ra, rb, stats.triples(stats.inside, ra, rb), stats.triples(stats.outside, ra, rb))
        evaluated += rows.numel() * 12 * (k - 2)
        if float(ious.max()) > best:
            best, formula = float(ious.max()), _unflatten(ra, rb, ious)
        start += step
    return SearchResult(formula, best, method, evaluated)


def exhaustive_search(table: ConceptTable, unit_mask: Tensor, max_length: int = 3) -> SearchResult:
    """Score every formula of length <= ``max_length`` (batched, no pruning) and return the best.

    The baseline the exact search is measured against.

    Args:
        table: concepts from :func:`prepare_concepts`.
        unit_mask: boolean unit mask, shape (N, *S) matching the concepts.
        max_length: 1, 2 or 3.

    Returns:
        A :class:`SearchResult` with ``method="exhaustive"``.

    Raises:
        ValueError: max_length not 1, 2 or 3.
    """
    result = _search(table, unit_mask, _check_search_args(table, max_length), prune=False, deadline=None)
    assert result is not None
    return result


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
    """Beam search of La Rosa et al. 2023 / Mu & Andreas 2020: the ``first_beam`` best atoms, then repeatedly
    extend every beam formula by every atom and operator and keep the ``beam_width`` best seen so far."""
    stats = _Stats.build(table, unit_mask)
    if stats.m == 0:
        return SearchResult(None, 0.0, "beam", 0)
    k = table.num_concepts
    single = stats.iou(stats.inside.single, stats.outside.single)  # (K,)
    order = torch.argsort(single, descending=True, stable=True)[:first_beam]
    beam: list[tuple[float, Formula]] = [(float(single[i]), Atom(int(i))) for i in order]
    evaluated = k
    for _ in range(max_length - 1):
        formulas = [f for _, f in beam]
        masks = torch.stack([f.evaluate(table.masks) for f in formulas]).to(stats.columns.dtype)  # (B, G)
        counts = []
        for region in (stats.inside, stats.outside):
            f = (masks @ region.weight).to(torch.float64)[:, None]  # (B, 1) |F|
            f_and_c = ((masks * region.weight) @ stats.columns.T).to(torch.float64)  # (B, K) |F ∧ c|
            counts.append((f, f_and_c, region.single[None, :]))
        pool = {_canonical(f): (iou, f) for iou, f in beam}
        for op in _OPS:
            (fi, fci, ci), (fo, fco, co) = counts
            if op is Op.AND:
                ious = stats.iou(fci, fco)
            elif op is Op.OR:
                ious = stats.iou(fi + ci - fci, fo + co - fco)
            else:
                ious = stats.iou(fi - fci, fo - fco)  # (B, K)
            for row, formula in enumerate(formulas):
                used = set(formula.atoms())
                for c in range(k):
                    if c not in used:
                        g = Compound(op, formula, Atom(c))
                        pool.setdefault(_canonical(g), (float(ious[row, c]), g))
                        evaluated += 1
        # stable sort: among equal IoUs the shorter / earlier formula stays ahead
        beam = sorted(pool.values(), key=lambda item: (-item[0], item[1].length))[:beam_width]
    best_iou, best = max(beam, key=lambda item: (item[0], -item[1].length))
    return SearchResult(best, best_iou, "beam", evaluated)


def best_formula(
    table: ConceptTable,
    unit_mask: Tensor,
    max_length: int = 3,
    method: SearchMethod = "exact",
    beam_width: int = 5,
    first_beam: int = 10,
    time_budget: float | None = None,
) -> SearchResult:
    """The formula maximising IoU(M, F) = |M ∧ F| / |M ∨ F| (SCIENCE.md section 5, step 3).

    ``method="exact"`` is a branch-and-bound search returning the optimum of the whole formula space (see the
    module docstring for the bounds). ``method="beam"`` is the paper's beam search (width ``beam_width``,
    first beam = the ``first_beam`` best atoms); it can miss the optimum. With a ``time_budget`` (seconds) the
    exact search falls back to beam search when it runs out of time, and says so in ``method``.

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

    Raises:
        ValueError: max_length not 1, 2 or 3; an unknown method; beam_width or first_beam below 1; time_budget not
            positive.

    Example:
        >>> concepts = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]]).bool()  # (N=4, K=3)
        >>> from lightning_probes.measures.concepts import prepare_concepts
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
    result = _search(table, unit_mask, max_length, prune=True, deadline=deadline)
    if result is not None:
        return result
    beam = _beam_search(table, unit_mask, max_length, beam_width, first_beam)
    reason = f"beam (fallback: exact search exceeded {time_budget:g} s for {table.num_concepts} concepts)"
    return SearchResult(beam.formula, beam.iou, reason, beam.num_evaluated)
