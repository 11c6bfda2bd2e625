"""Logical formulas of atomic concepts and the search for the one that best matches a unit mask.

Step 3 of SCIENCE.md section 5 (La Rosa, Gilpin, Capobianco, NeurIPS 2023, arXiv 2310.18443; Mu & Andreas,
"Compositional Explanations of Neurons", NeurIPS 2020): maximise IoU(M, F) = |M ∧ F| / |M ∨ F| over formulas
F of at most 3 atomic concepts joined by AND, OR, AND NOT. Formulas grow one atom at a time, F' = F op c (the
grammar of both papers' beam search), so length-3 formulas are ``(a op b) op c``; atoms do not repeat (a
repeated atom only yields the mask of a shorter formula, or the empty mask).

How it is made fast and exact:

* Concept masks are compressed once (:func:`prepare_concepts`): positions with the same concept vector become
  one weighted column. Every count a formula needs is a weighted sum over columns, so this is exact.
* An IoU needs only two numbers, I = |M ∧ F| and O = |F \\ M| (IoU = I / (|M| + O)), and for F = (a op b) op c
  both follow by inclusion-exclusion from counts of single atoms, pairs |a ∧ c| and triples |a ∧ b ∧ c|,
  counted inside and outside M. Pairs are one matrix product; the triples of one pair (a, b) with every c
  are one pass over the columns, shared by its four prefixes a AND b, a OR b, a AND NOT b, b AND NOT a.
* The exact search (branch and bound) bounds each triple count from the pair counts (Bonferroni:
  max(0, |ab| + |ac| - |a|, ...) <= |abc| <= min(|ab|, |ac|, |bc|)), which bounds I from above and O from below
  for every extension — an admissible IoU upper bound per pair. Pairs are visited best bound first and skipped
  once their bound cannot beat the best formula found, so the result is the optimum of the whole space.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "Atom",
    "Compound",
    "ConceptTable",
    "Formula",
    "Op",
    "SearchResult",
    "best_formula",
    "exhaustive_search",
    "prepare_concepts",
]


# ----------------------------------------------------------------------------------------------------------
# Formulas
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
        """Readable form, e.g. ``"(circle AND red) OR square"``."""
        left = self.left.name(concept_names)
        if isinstance(self.left, Compound):
            left = f"({left})"
        return f"{left} {self.op.value} {self.right.name(concept_names)}"

    def evaluate(self, concepts: Tensor) -> Tensor:
        """Mask of the formula from concept masks of shape (K, *S); returns (*S,) bool."""
        left, right = self.left.evaluate(concepts), self.right.evaluate(concepts)
        if self.op is Op.AND:
            return left & right
        if self.op is Op.OR:
            return left | right
        return left & ~right

    def __str__(self) -> str:
        return self.name()


Formula = Atom | Compound

_OPS = (Op.AND, Op.OR, Op.AND_NOT)
# the four length-2 prefixes of an unordered pair a < b
_KINDS = ("a AND b", "a OR b", "a AND NOT b", "b AND NOT a")


def _prefix(kind: int, a: int, b: int) -> Compound:
    if kind == 0:
        return Compound(Op.AND, Atom(a), Atom(b))
    if kind == 1:
        return Compound(Op.OR, Atom(a), Atom(b))
    if kind == 2:
        return Compound(Op.AND_NOT, Atom(a), Atom(b))
    return Compound(Op.AND_NOT, Atom(b), Atom(a))


# ----------------------------------------------------------------------------------------------------------
# Concept data
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
        if flat.dtype != torch.bool and (flat.is_floating_point() or not bool(((flat == 0) | (flat == 1)).all())):
            raise ValueError(f"the unit mask must be a boolean (or 0/1 integer) tensor, got dtype {flat.dtype}.")
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
        >>> table.masks.int().tolist(), table.weight.tolist()  # two distinct columns: (1, 0) twice, (0, 1) once
        ([[1, 0], [0, 1]], [2.0, 1.0])
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
        if len(spatial_size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in spatial_size):
            raise ValueError(f"spatial_size must be (h, w) of positive integers, got {tuple(spatial_size)}.")
        concepts = concepts[:, :, None, None].expand(n, k, *spatial_size)
    size = tuple(concepts.shape[2:])
    columns = concepts.reshape(n, k, -1).permute(0, 2, 1).reshape(-1, k)  # (N * S, K)
    if k <= 62:  # one int64 key per position: a 1-D unique is much faster than a row-wise one
        bits = torch.arange(k)
        keys = (columns.long() << bits).sum(1)  # (N * S,)
        distinct_keys, group, counts = torch.unique(keys, return_inverse=True, return_counts=True)
        masks = ((distinct_keys[None, :] >> bits[:, None]) & 1).bool()  # (K, G)
    else:
        distinct, group, counts = torch.unique(columns, dim=0, return_inverse=True, return_counts=True)
        masks = distinct.T.contiguous()
    return ConceptTable(masks, group, counts.to(torch.float64), n, size)


# ----------------------------------------------------------------------------------------------------------
# Counts
# ----------------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class _Region:
    """Counts of atoms, pairs and (lazily) triples restricted to one region: inside M, or outside M."""

    weight: Tensor  # (G,) positions of the region per column
    single: Tensor  # (K,) |c ∧ region|
    pair: Tensor  # (K, K) |a ∧ c ∧ region|


@dataclass
class _Stats:
    columns: Tensor  # (K, G) 0/1 in the matmul dtype
    inside: _Region
    outside: _Region
    m: float  # |M|

    @classmethod
    def build(cls, table: ConceptTable, unit_mask: Tensor) -> _Stats:
        inside = table.column_counts(unit_mask)  # (G,)
        # float32 products are exact for integer counts below 2**24; beyond that use float64
        dtype = torch.float32 if table.weight.sum() < 2**24 else torch.float64
        columns = table.masks.to(dtype)
        regions = []
        for weight in (inside, table.weight - inside):
            w = weight.to(dtype)
            single = (columns @ w).to(torch.float64)  # (K,)
            pair = ((columns * w) @ columns.T).to(torch.float64)  # (K, K)
            regions.append(_Region(w, single, pair))
        return cls(columns, regions[0], regions[1], float(inside.sum()))

    def triples(self, region: _Region, a: Tensor, b: Tensor) -> Tensor:
        """|a ∧ b ∧ c ∧ region| for pairs (a, b) and every atom c: one pass over the columns, (B, K)."""
        both = self.columns[a] * self.columns[b] * region.weight  # (B, G)
        return (both @ self.columns.T).to(torch.float64)

    def iou(self, inside: Tensor, outside: Tensor) -> Tensor:
        """IoU = I / (|M| + O) from I = |M ∧ F| and O = |F \\ M| (|M| > 0)."""
        return inside / (self.m + outside)


def _prefix_count(kind: int, x_a: Tensor, x_b: Tensor, x_ab: Tensor) -> Tensor:
    """|prefix| in a region from |a|, |b|, |a ∧ b| (inclusion-exclusion)."""
    return (x_ab, x_a + x_b - x_ab, x_a - x_ab, x_b - x_ab)[kind]


def _final_count(kind: int, op: Op, x_a: Tensor, x_b: Tensor, x_ab: Tensor, x_c: Tensor, x_ac: Tensor,
                 x_bc: Tensor, x_abc: Tensor) -> Tensor:
    """|prefix op c| in a region from the counts of a, b, c, their pairs and the triple."""
    f = _prefix_count(kind, x_a, x_b, x_ab)
    f_and_c = _prefix_count(kind, x_ac, x_bc, x_abc)  # |prefix ∧ c|: the same identity one level down
    if op is Op.AND:
        return f_and_c
    if op is Op.OR:
        return f + x_c - f_and_c
    return f - f_and_c


def _region_args(region: _Region, a: Tensor, b: Tensor, abc: Tensor) -> tuple[Tensor, ...]:
    """(|a|, |b|, |ab|, |c|, |ac|, |bc|, |abc|) shaped (B, 1) / (1, K) / (B, K) for pairs (a, b)."""
    return (region.single[a, None], region.single[b, None], region.pair[a, b][:, None], region.single[None, :],
            region.pair[a], region.pair[b], abc)


def _triple_ious(stats: _Stats, a: Tensor, b: Tensor, abc_in: Tensor, abc_out: Tensor) -> Tensor:
    """IoU of every (prefix kind of (a, b)) op c: shape (B, 4, 3, K); -1 where c is a or b."""
    args_in = _region_args(stats.inside, a, b, abc_in)
    args_out = _region_args(stats.outside, a, b, abc_out)
    out = torch.stack([
        torch.stack([stats.iou(_final_count(kind, op, *args_in), _final_count(kind, op, *args_out)) for op in _OPS], 1)
        for kind in range(4)
    ], 1)
    k = stats.inside.single.numel()
    repeated = (torch.arange(k) == a[:, None]) | (torch.arange(k) == b[:, None])  # (B, K)
    return out.masked_fill(repeated[:, None, None, :], -1.0)


def _triple_range(region: _Region, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Bonferroni bounds on |a ∧ b ∧ c| in a region from its pair and single counts, each (B, K)."""
    ab, ac, bc = region.pair[a, b][:, None], region.pair[a], region.pair[b]
    upper = torch.minimum(torch.minimum(ab.expand_as(ac), ac), bc)
    lower = torch.stack([ab + ac - region.single[a, None], ab + bc - region.single[b, None],
                         ac + bc - region.single[None, :]]).amax(0).clamp_min(0)
    return lower, torch.maximum(lower, upper)


def _pair_bounds(stats: _Stats, a: Tensor, b: Tensor) -> Tensor:
    """Admissible upper bound on the IoU of every length-3 extension of the pairs (a, b), shape (B,).

    I (inside count) depends only on the inside triple count and O (outside count) only on the outside one,
    both affinely, so the largest I and smallest O over the Bonferroni intervals sit at interval ends.
    """
    lo_in, hi_in = _triple_range(stats.inside, a, b)
    lo_out, hi_out = _triple_range(stats.outside, a, b)
    best = torch.full(a.shape, -1.0, dtype=torch.float64)
    k = stats.inside.single.numel()
    repeated = (torch.arange(k) == a[:, None]) | (torch.arange(k) == b[:, None])
    for kind in range(4):
        for op in _OPS:
            i_max = torch.maximum(_final_count(kind, op, *_region_args(stats.inside, a, b, lo_in)),
                                  _final_count(kind, op, *_region_args(stats.inside, a, b, hi_in)))
            o_min = torch.minimum(_final_count(kind, op, *_region_args(stats.outside, a, b, lo_out)),
                                  _final_count(kind, op, *_region_args(stats.outside, a, b, hi_out)))
            bound = stats.iou(i_max, o_min.clamp_min(0)).masked_fill(repeated, -1.0)  # (B, K)
            best = torch.maximum(best, bound.amax(1))
    return best


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
            for row, f in enumerate(formulas):
                used = set(f.atoms())
                for c in range(k):
                    if c not in used:
                        g = Compound(op, f, Atom(c))
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
    method: str = "exact",
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
    result = _search(table, unit_mask, max_length, prune=True, deadline=deadline)
    if result is not None:
        return result
    beam = _beam_search(table, unit_mask, max_length, beam_width, first_beam)
    reason = f"beam (fallback: exact search exceeded {time_budget:g} s for {table.num_concepts} concepts)"
    return SearchResult(beam.formula, beam.iou, reason, beam.num_evaluated)
