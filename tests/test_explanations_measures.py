"""Clustered Compositional Explanations measures: known answers first, then properties and fast == direct."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from lightning_probes.datasets import make_shapes
from lightning_probes.measures.explanations import (
    Atom,
    Compound,
    InactiveUnitError,
    Op,
    activation_ranges,
    best_formula,
    exhaustive_search,
    explain_unit,
    explanation_metrics,
    kmeans_1d,
    prepare_concepts,
    range_masks,
    upsample_activations,
)
from lightning_probes.measures.formula_search import _pair_bounds, _prefix, _Stats

OPS = (Op.AND, Op.OR, Op.AND_NOT)


# ---------------------------------------------------------------------------------------------- direct formulas
def all_formulas(k: int, max_length: int):
    """Every formula of the grammar, written out one by one (the definition the searches must match)."""
    for a in range(k):
        yield Atom(a)
    if max_length >= 2:
        for a, b in itertools.permutations(range(k), 2):
            for op in OPS:
                yield Compound(op, Atom(a), Atom(b))
    if max_length >= 3:
        for a, b, c in itertools.permutations(range(k), 3):
            for op1, op2 in itertools.product(OPS, OPS):
                yield Compound(op2, Compound(op1, Atom(a), Atom(b)), Atom(c))


def direct_iou(unit: torch.Tensor, formula_mask: torch.Tensor) -> float:
    union = int((unit | formula_mask).sum())
    return int((unit & formula_mask).sum()) / union if union else 0.0


def direct_best(concepts: torch.Tensor, unit: torch.Tensor, max_length: int) -> float:
    """Best IoU by evaluating every formula's mask on the full (uncompressed) positions. concepts: (N, K, *S)."""
    per_concept = concepts.transpose(0, 1)  # (K, N, *S)
    return max(direct_iou(unit, f.evaluate(per_concept)) for f in all_formulas(concepts.shape[1], max_length))


def random_problem(seed: int, n: int = 12, k: int = 6, spatial: tuple[int, ...] = (2, 3)):
    g = torch.Generator().manual_seed(seed)
    density = 0.15 + 0.5 * torch.rand(k, generator=g)
    concepts = torch.rand(n, k, *spatial, generator=g) < density.reshape(1, k, *([1] * len(spatial)))
    # a unit that is partly a formula of the concepts, partly noise: optimum is neither trivial nor 1
    target = (concepts[:, 0] & concepts[:, 1]) | (concepts[:, 2] & ~concepts[:, 3])
    noise = torch.rand(target.shape, generator=g) < 0.2
    return concepts, target ^ noise


# ---------------------------------------------------------------------------------------------- k-means ranges
def sse(values: np.ndarray, bounds: list[int]) -> float:
    return float(sum(((values[a:b] - values[a:b].mean()) ** 2).sum() for a, b in zip(bounds[:-1], bounds[1:])))


def test_kmeans_known_answer():
    values = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 9.0], dtype=torch.float64)
    assert kmeans_1d(values, 3).tolist() == [0, 3, 5, 6]
    assert kmeans_1d(values, 1).tolist() == [0, 6]
    assert kmeans_1d(values, 6).tolist() == [0, 1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("seed", range(6))
def test_kmeans_is_optimal_against_all_partitions(seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.unique(torch.randn(9, generator=g, dtype=torch.float64) * torch.rand(9, generator=g) * 3)
    n = values.numel()
    x = values.numpy()
    for k in range(1, 5):
        best = min(sse(x, [0, *cuts, n]) for cuts in itertools.combinations(range(1, n), k - 1))
        assert sse(x, kmeans_1d(values, k).tolist()) == pytest.approx(best, abs=1e-12)


def test_kmeans_matches_quadratic_dp_with_weights():
    """The divide-and-conquer layers equal the plain O(K n^2) dynamic programme (weighted values)."""
    g = torch.Generator().manual_seed(7)
    values = torch.unique(torch.cat([torch.randn(60, generator=g), 4 + torch.randn(60, generator=g)]).double())
    weights = torch.randint(1, 5, (values.numel(),), generator=g).double()
    x, w = values.numpy(), weights.numpy()
    n, k = len(x), 5

    def cost(a: int, b: int) -> float:
        mean = np.average(x[a:b], weights=w[a:b])
        return float((w[a:b] * (x[a:b] - mean) ** 2).sum())

    table = np.full((k + 1, n + 1), np.inf)
    table[0, 0] = 0.0
    for c in range(1, k + 1):
        for i in range(c, n + 1):
            table[c, i] = min(table[c - 1, j] + cost(j, i) for j in range(c - 1, i))
    bounds = kmeans_1d(values, k, weights).tolist()
    found = sum(cost(a, b) for a, b in zip(bounds[:-1], bounds[1:]))
    assert found == pytest.approx(table[k, n], rel=1e-10)


def test_kmeans_not_worse_than_lloyd():
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(3)
    values = torch.unique(torch.rand(800, generator=g, dtype=torch.float64) ** 3)
    bounds = kmeans_1d(values, 5).tolist()
    lloyd = KMeans(n_clusters=5, n_init=4, random_state=0).fit(values.numpy().reshape(-1, 1))
    assert sse(values.numpy(), bounds) <= lloyd.inertia_ + 1e-9


def test_activation_ranges_drop_relu_zeros_and_partition_values():
    g = torch.Generator().manual_seed(0)
    acts = torch.relu(torch.randn(50, 4, 4, generator=g, dtype=torch.float64))
    ranges = activation_ranges(acts, num_clusters=5)
    assert ranges.shape == (5, 2)
    assert ranges[0, 0] > 0  # zeros of the ReLU dropped
    assert (ranges[:-1, 1] < ranges[1:, 0]).all()  # sorted, disjoint
    inside = range_masks(acts, ranges)  # (5, 50, 4, 4)
    assert torch.equal(inside.sum(0), (acts > 0).long())  # every non-zero value in exactly one range


def test_activation_ranges_keep_negative_values_and_few_distinct_values():
    acts = torch.tensor([-1.0, 0.0, 0.0, 2.0], dtype=torch.float64)
    assert activation_ranges(acts, num_clusters=3).tolist() == [[-1.0, -1.0], [0.0, 0.0], [2.0, 2.0]]
    assert activation_ranges(torch.tensor([0.0, 3.0, 3.0]), num_clusters=5).tolist() == [[3.0, 3.0]]


def test_single_range_is_netdissect_quantile():
    g = torch.Generator().manual_seed(1)
    acts = torch.relu(torch.randn(4000, generator=g, dtype=torch.float64))
    ranges = activation_ranges(acts, num_clusters=1)
    assert float(ranges[0, 0]) == pytest.approx(float(np.quantile(acts.numpy(), 0.995)), rel=1e-12)
    assert math.isinf(float(ranges[0, 1]))
    assert float(range_masks(acts, ranges).double().mean()) == pytest.approx(0.005, abs=1e-3)


def test_activation_ranges_bad_input():
    with pytest.raises(InactiveUnitError, match="never activates"):
        activation_ranges(torch.zeros(10))
    with pytest.raises(InactiveUnitError, match="never activates"):
        activation_ranges(torch.zeros(10), num_clusters=1)
    with pytest.raises(ValueError, match="NaN"):
        activation_ranges(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="num_clusters"):
        activation_ranges(torch.ones(3), num_clusters=0)


def test_range_masks_closed_and_upsampling():
    acts = torch.tensor([[0.5, 1.0], [2.0, 3.0]])
    assert range_masks(acts, torch.tensor([[1.0, 2.0]])).tolist() == [[[False, True], [True, False]]]
    maps = torch.arange(4.0).reshape(1, 1, 2, 2)
    up = upsample_activations(maps, (4, 4))
    assert up.shape == (1, 1, 4, 4)
    assert torch.allclose(up, torch.nn.functional.interpolate(maps, size=(4, 4), mode="bilinear"))
    single = maps[:, 0]
    assert upsample_activations(single, (2, 2)) is single
    with pytest.raises(ValueError, match=r"\(N, U, h, w\)"):
        upsample_activations(torch.zeros(3, 4), (2, 2))


# ---------------------------------------------------------------------------------------------- formulas
def test_formula_names_and_masks():
    names = ["circle", "square", "red"]
    f = Compound(Op.OR, Compound(Op.AND, Atom(0), Atom(2)), Atom(1))
    assert f.name(names) == "(circle AND red) OR square"
    assert Compound(Op.AND_NOT, Atom(0), Atom(2)).name(names) == "circle AND NOT red"
    assert str(Compound(Op.AND, Atom(0), Atom(1))) == "c0 AND c1" and f.length == 3 and f.atoms() == (0, 2, 1)
    c = torch.tensor([[1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 1, 0]]).bool()  # (K=3, positions)
    assert f.evaluate(c).tolist() == [True, False, True, False]
    assert Compound(Op.AND_NOT, Atom(0), Atom(2)).evaluate(c).tolist() == [False, True, False, False]


# ---------------------------------------------------------------------------------------------- planted unit
def test_planted_unit_gets_its_formulas_in_the_right_ranges():
    data = make_shapes(48, size=16, seed=4)
    names = list(data.concept_names)
    c = {name: data.concepts[:, i] for i, name in enumerate(names)}  # (N, S, S) each
    red_circle, square = c["circle"] & c["red"], c["square"]
    assert red_circle.any() and square.any()
    g = torch.Generator().manual_seed(0)
    jitter = 0.1 * (torch.rand(red_circle.shape, generator=g) - 0.5)
    acts = (1.0 * c["background"] + 2.0 * square + 3.0 * red_circle).double()  # other shapes stay at 0
    acts = torch.where(acts > 0, acts + jitter, acts)
    table = prepare_concepts(data.concepts)
    result = explain_unit(acts, table, names, num_clusters=3)
    assert [r.name for r in result] == ["background", "square", "circle AND red"]
    for r in result:
        assert r.metrics.iou == 1.0 and r.metrics.detection_accuracy == 1.0 and r.metrics.activation_coverage == 1.0
        assert r.method == "exact"
    assert result[2].low > result[1].high > result[1].low > result[0].high
    beam = explain_unit(acts, table, names, num_clusters=3, method="beam")
    assert [r.metrics.iou for r in beam] == [1.0, 1.0, 1.0]


def test_planted_per_sample_concepts():
    g = torch.Generator().manual_seed(2)
    concepts = torch.rand(200, 5, generator=g) < 0.5  # (N, K)
    unit = (concepts[:, 1] & ~concepts[:, 3]) | concepts[:, 4]
    acts = 1 + unit.double() + 0.01 * torch.rand(200, generator=g, dtype=torch.float64)  # 2 on the unit, 1 off
    [only] = explain_unit(acts, prepare_concepts(concepts), list("abcde"), num_clusters=1)
    assert only.metrics.iou < 1  # K = 1 keeps the top 0.5 % only
    [top] = explain_unit(acts, prepare_concepts(concepts), list("abcde"), num_clusters=2)[-1:]
    assert top.name == "(b AND NOT d) OR e" and top.metrics.iou == 1.0


# ---------------------------------------------------------------------------------------------- searches
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("max_length", [1, 2, 3])
def test_exact_equals_exhaustive_equals_direct_and_beam_is_never_better(seed, max_length):
    spatial = ((2, 3), ())[seed % 2]  # per-position and per-sample concepts
    concepts, unit = random_problem(seed, n=12 if spatial else 40, spatial=spatial)
    table = prepare_concepts(concepts)
    truth = direct_best(concepts, unit, max_length)
    exact = best_formula(table, unit, max_length)
    full = exhaustive_search(table, unit, max_length)
    beam = best_formula(table, unit, max_length, method="beam")
    assert exact.iou == truth and full.iou == truth  # identical doubles: same integer counts
    assert beam.iou <= truth
    for result in (exact, full, beam):  # the reported IoU is the formula's real IoU
        assert direct_iou(unit, result.formula.evaluate(concepts.transpose(0, 1))) == result.iou
        assert result.formula.length <= max_length and len(set(result.formula.atoms())) == result.formula.length
    # a beam wide enough to keep every formula is an exhaustive search
    wide = best_formula(table, unit, max_length, method="beam", beam_width=10**6, first_beam=10**6)
    assert wide.iou == truth


def test_beam_misses_the_optimum_sometimes():
    """The reason for the exact search: the paper's beam (width 5, first beam 10 atoms) is not optimal."""
    misses = 0
    for seed in range(30):
        concepts, unit = random_problem(100 + seed, n=60, k=14, spatial=())
        table = prepare_concepts(concepts)
        exact = best_formula(table, unit, 3)
        beam = best_formula(table, unit, 3, method="beam", beam_width=2, first_beam=2)
        assert beam.iou <= exact.iou
        misses += beam.iou < exact.iou
    assert misses > 0


@pytest.mark.parametrize("seed", range(4))
def test_pair_bounds_are_admissible(seed):
    """The bound of a pair (a, b) is >= the IoU of every length-3 formula that starts with a and b."""
    k = 7
    concepts, unit = random_problem(seed, n=30, k=k)
    stats = _Stats.build(prepare_concepts(concepts), unit)
    a, b = torch.triu_indices(k, k, 1)
    bounds = _pair_bounds(stats, a, b)
    per_concept = concepts.transpose(0, 1)
    tight = 0
    for q in range(a.numel()):
        best = max(
            direct_iou(unit, Compound(op, _prefix(kind, int(a[q]), int(b[q])), Atom(c)).evaluate(per_concept))
            for kind in range(4) for op in OPS for c in range(k) if c not in (int(a[q]), int(b[q]))
        )
        assert best <= float(bounds[q]) + 1e-12
        tight += float(bounds[q]) < 1.0
    assert tight > 0  # the bound is informative, not the trivial 1


def test_exact_search_prunes():
    concepts, unit = random_problem(0, n=100, k=12)
    table = prepare_concepts(concepts)
    assert best_formula(table, unit).num_evaluated < exhaustive_search(table, unit).num_evaluated


def test_time_budget_falls_back_to_beam_and_says_so():
    concepts, unit = random_problem(5, n=40, k=10)
    table = prepare_concepts(concepts)
    result = best_formula(table, unit, time_budget=1e-12)
    assert result.method.startswith("beam (fallback: exact search exceeded")
    assert result.iou == best_formula(table, unit, method="beam").iou


def test_empty_unit_mask_has_no_formula():
    concepts, _ = random_problem(0)
    result = best_formula(prepare_concepts(concepts), torch.zeros(12, 2, 3, dtype=torch.bool))
    assert result.formula is None and result.iou == 0.0


def test_search_bad_input():
    concepts, unit = random_problem(0)
    table = prepare_concepts(concepts)
    with pytest.raises(ValueError, match="max_length"):
        best_formula(table, unit, max_length=4)
    with pytest.raises(ValueError, match="method"):
        best_formula(table, unit, method="greedy")
    with pytest.raises(ValueError, match="upsample"):
        best_formula(table, unit[:, :1])
    assert best_formula(prepare_concepts(concepts[:, :2]), unit, max_length=3).formula.length <= 2


# ---------------------------------------------------------------------------------------------- concept data
def test_prepare_concepts_compression_and_broadcast():
    concepts = torch.tensor([[1, 0], [1, 0], [0, 1]]).bool()
    table = prepare_concepts(concepts, spatial_size=(2, 2))  # per-sample concepts on 2 x 2 maps
    assert table.spatial_size == (2, 2) and table.weight.tolist() == [8.0, 4.0]
    unit = torch.zeros(3, 2, 2, dtype=torch.bool)
    unit[2] = True
    assert best_formula(table, unit).formula == Atom(1)
    expanded = prepare_concepts(concepts[:, :, None, None].expand(3, 2, 2, 2).contiguous())
    assert torch.equal(expanded.masks, table.masks) and torch.equal(expanded.group, table.group)


def test_prepare_concepts_bad_input():
    with pytest.raises(ValueError, match="empty"):
        prepare_concepts(torch.zeros(0, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="all masks are False"):
        prepare_concepts(torch.zeros(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        prepare_concepts(torch.rand(4, 3))
    with pytest.raises(ValueError, match="shape"):
        prepare_concepts(torch.ones(4, 3, 2, dtype=torch.bool))
    assert prepare_concepts(torch.eye(3, dtype=torch.long)).num_concepts == 3


def test_prepare_concepts_many_concepts_uses_row_unique():
    """More than 62 concepts do not fit one int64 key: the row-wise path must give the same counts."""
    g = torch.Generator().manual_seed(0)
    concepts = torch.rand(30, 70, generator=g) < 0.3  # (N, K=70)
    concepts[10:20] = concepts[:10]  # repeated columns
    table = prepare_concepts(concepts)
    assert table.masks.shape[1] == 20 and sorted(table.weight.tolist()) == [1.0] * 10 + [2.0] * 10
    assert torch.equal(table.expand(table.masks[5]).reshape(-1), concepts[:, 5])
    unit = concepts[:, 3] & ~concepts[:, 4]
    assert best_formula(table, unit, max_length=2).iou == 1.0


def test_explain_unit_bad_input():
    concepts, _ = random_problem(0)
    table = prepare_concepts(concepts)
    with pytest.raises(ValueError, match="samples"):
        explain_unit(torch.rand(5, 2, 3), table)
    with pytest.raises(ValueError, match="concept names"):
        explain_unit(torch.rand(12, 2, 3), table, ["a"])
    with pytest.raises(InactiveUnitError):
        explain_unit(torch.zeros(12, 2, 3), table)


def test_explain_unit_upsamples_low_resolution_maps():
    data = make_shapes(16, size=16, seed=0)
    table = prepare_concepts(data.concepts)
    low = torch.nn.functional.avg_pool2d(data.concepts[:, 0].double()[:, None], 2)[:, 0]  # (N, 8, 8) circle map
    result = explain_unit(low, table, data.concept_names, num_clusters=2)
    assert "circle" in result[-1].name
    assert result[-1].metrics.iou > 0.5


# ---------------------------------------------------------------------------------------------- metrics
def test_metrics_on_hand_made_masks():
    m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0]]).bool()  # (N=3, S=4); |M| = 4
    f = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 1]]).bool()  # |F| = 6
    out = explanation_metrics(m, f)
    assert out.iou == 3 / 7  # |M ∧ F| = 3, |M ∨ F| = 7
    assert out.detection_accuracy == 3 / 6
    assert out.activation_coverage == 3 / 4
    assert out.sample_coverage == 2 / 3  # samples 0 and 2 overlap; F is present in all three
    assert out.explanation_coverage == 2 / 2  # M is present in samples 0 and 2
    empty = explanation_metrics(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3, dtype=torch.bool))
    assert empty.iou == 0.0 and empty.sample_coverage == 0.0
    with pytest.raises(ValueError, match="differ"):
        explanation_metrics(m, f[:2])
