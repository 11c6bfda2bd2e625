"""The paper's measures beyond IoU (issue 16): K = 1 on sparse ReLU units, mask sizes, label masking, range
importance. Planted units with exactly known answers first."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_probes.measures.explanations import (
    activation_ranges,
    explain_unit,
    label_masked_inputs,
    label_masking_score,
    mask_statistics,
    prediction_change_rate,
    prepare_concepts,
    range_masks,
    zero_range,
)


def spot_concepts(num_samples: int = 50, size: int = 16) -> torch.Tensor:
    """(N, 3, H, W): top half, bottom half, and a rare one-pixel 'spot' in 5 samples (0.04% of positions)."""
    concepts = torch.zeros(num_samples, 3, size, size, dtype=torch.bool)
    concepts[:, 0, : size // 2] = True
    concepts[:, 1, size // 2 :] = True
    for i in range(5):
        concepts[7 * i, 2, 3 + i, 5] = True
    return concepts


def test_single_range_of_a_sparse_relu_unit_is_its_rare_concept() -> None:
    concepts = spot_concepts()
    acts = 2.0 * concepts[:, 2].double()  # fires only on the spot, zero elsewhere
    assert float((acts > 0).double().mean()) < 0.005  # sparser than the top-0.5% threshold: T would be 0
    ranges = activation_ranges(acts, num_clusters=1)
    assert ranges.tolist() == [[2.0, math.inf]]  # zeros stay out of the K = 1 range
    [only] = explain_unit(acts, prepare_concepts(concepts), ["top", "bottom", "spot"], num_clusters=1)
    assert only.name == "spot" and only.metrics.iou == 1.0


def test_single_range_keeps_negative_values_and_dense_units_unchanged() -> None:
    values = torch.linspace(-1.0, 1.0, 1001, dtype=torch.float64)  # not a ReLU unit: the quantile as it is
    assert activation_ranges(values, num_clusters=1)[0, 0].item() == pytest.approx(0.99, abs=1e-12)
    sparse_neg = torch.zeros(1000, dtype=torch.float64)
    sparse_neg[0] = -1.0  # has a negative value: not ReLU, so T = 0 is kept and zeros are in range
    assert activation_ranges(sparse_neg, num_clusters=1)[0, 0].item() == 0.0


def test_mask_statistics_by_hand() -> None:
    unit = torch.zeros(4, 2, 2, dtype=torch.bool)
    unit[0, 0] = True  # 2 of 4 positions in sample 0
    unit[1, :, 0] = True  # 2 of 4 in sample 1
    formula = torch.zeros_like(unit)
    formula[0] = True  # 4 of 4 in sample 0
    formula[3, 0, 0] = True  # 1 of 4 in sample 3
    out = mask_statistics(unit, formula)
    assert out.unit_mask_size == 0.5 and out.formula_mask_size == pytest.approx((1.0 + 0.25) / 2)
    assert out.overlap_size == 0.5 and out.unit_mask_samples == 0.5
    assert math.isnan(mask_statistics(torch.zeros_like(unit), formula).unit_mask_size)


def test_explain_unit_reports_mask_sizes_of_planted_ranges() -> None:
    concepts = spot_concepts()
    acts = 2.0 * concepts[:, 2].double() + 1.0 * concepts[:, 1].double()  # 1 on the bottom, 2 on spots (top)
    low, high = explain_unit(acts, prepare_concepts(concepts), ["top", "bottom", "spot"], num_clusters=2)
    assert low.sizes.unit_mask_size == 0.5  # top half of every sample
    assert high.sizes.unit_mask_size == 1 / 256 and high.sizes.unit_mask_samples == 5 / 50
    assert high.sizes.overlap_size == high.sizes.formula_mask_size == 1 / 256


def test_label_masking_keeps_the_label_and_damps_the_rest() -> None:
    x = torch.full((2, 3, 4, 4), 2.0)
    label = torch.zeros(2, 2, 2, dtype=torch.bool)
    label[:, 0, 0] = True  # top-left quarter at half resolution
    out = label_masked_inputs(x, label, torch.Generator().manual_seed(0))
    assert bool((out[:, :, :2, :2] == 2.0).all())  # the label's region is intact
    rest = out[:, :, 2:, :]
    assert bool((rest < 2.0).all() and (rest >= 0).all())


def test_label_masking_score_known_answers() -> None:
    before = torch.tensor([[1.0, 2.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])  # sample 1 never in range: left out
    assert label_masking_score(before, 3 * before, 1.0, 2.0) == pytest.approx(1.0)  # same direction: 1
    after = torch.tensor([[2.0, 0.0, 9.0, 9.0], [1.0, 1.0, 1.0, 1.0]])
    # in range: positions 0, 1 -> (1, 2) vs (2, 0): cos = 2 / (sqrt(5)·2)
    assert label_masking_score(before, after, 1.0, 2.0) == pytest.approx(1 / math.sqrt(5))
    assert label_masking_score(before, torch.zeros_like(before), 1.0, 2.0) == 0.0  # all gone
    assert math.isnan(label_masking_score(before, after, 10.0, 11.0))


def test_zero_range_and_prediction_change_rate() -> None:
    a = torch.tensor([[0.0, 1.0, 1.5, 3.0]])
    assert zero_range(a, 1.0, 1.5).tolist() == [[0.0, 0.0, 0.0, 3.0]]  # closed bounds
    ranges = torch.tensor([[1.0, 1.5]], dtype=torch.float64)
    assert bool((zero_range(a, 1.0, 1.5) == torch.where(range_masks(a, ranges)[0], 0.0, a)).all())
    logits = torch.tensor([[2.0, 1.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0]])
    ablated = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 3.0], [0.0, 2.0]])
    assert prediction_change_rate(logits, ablated) == 0.5
    with pytest.raises(ValueError, match="must both be"):
        prediction_change_rate(logits, ablated[:2])
