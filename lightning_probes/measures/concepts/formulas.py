r"""Logical formulas of atomic concepts and the counts that give their IoU with a unit mask, with its bounds.

Step 3 of SCIENCE.md section 5 (La Rosa, Gilpin, Capobianco, NeurIPS 2023, arXiv 2310.18443; Mu & Andreas,
"Compositional Explanations of Neurons", NeurIPS 2020): maximise IoU(M, F) = |M ∧ F| / |M ∨ F| over formulas
F of at most 3 atomic concepts joined by AND, OR, AND NOT. Formulas grow one atom at a time, F' = F op c (the
grammar of both papers' beam search), so length-3 formulas are ``(a op b) op c``; atoms do not repeat (a
repeated atom only yields the mask of a shorter formula, or the empty mask).

* An IoU needs only two numbers, I = |M ∧ F| and O = |F \ M| (IoU = I / (|M| + O)), and for F = (a op b) op c
  both follow by inclusion-exclusion from counts of single atoms, pairs |a ∧ c| and triples |a ∧ b ∧ c|,
  counted inside and outside M. Pairs are one matrix product; the triples of one pair (a, b) with every c
  are one pass over the columns, shared by its four prefixes a AND b, a OR b, a AND NOT b, b AND NOT a.
* Each triple count is bounded from the pair counts (Bonferroni:
  max(0, |ab| + |ac| - |a|, ...) <= |abc| <= min(|ab|, |ac|, |bc|)), which bounds I from above and O from below
  for every extension — an admissible IoU upper bound per pair (:func:`_pair_bounds`), used by the exact
  search in :mod:`lightning_probes.measures.concepts.search`.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_probes.measures.concepts.table import ConceptTable

__all__ = ["Atom", "Compound", "Formula", "Op"]

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
# Counts
# ----------------------------------------------------------------------------------------------------------

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
        r"""IoU = I / (|M| + O) from I = |M ∧ F| and O = |F \ M| (|M| > 0)."""
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
