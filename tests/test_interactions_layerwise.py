"""Which comparison each InteractionMonitor tag makes (issue 16), on hand-computed interactions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lightning_probes.measures.interactions import FeatureGroups, salient_mask
from lightning_probes.monitors.interactions import OUTPUT, InteractionMonitor

F64 = torch.float64


def _source(values: dict[int, float]) -> dict[str, torch.Tensor]:
    i_and = torch.zeros(1, 4, dtype=F64)  # two players: subsets ∅, {0}, {1}, {0, 1}
    for subset, value in values.items():
        i_and[0, subset] = value
    i_or = torch.zeros_like(i_and)
    return {"i_and": i_and, "i_or": i_or, "mask": salient_mask(i_and, i_or, 0.05), "objective": i_and.abs().sum(-1)}


def _scalars(per_source):
    monitor = InteractionMonitor(FeatureGroups([0, 1], num_features=2), layers=["a", "b"], num_samples=1)
    monitor._clamped_fraction = 0.0
    probes = {"a": SimpleNamespace(accuracy=1.0), "b": SimpleNamespace(accuracy=1.0)}
    return monitor._scalars(per_source, probes)


def test_adjacent_layers_against_the_output_and_pooling_over_orders_by_hand() -> None:
    # a: AND{0} = 2, AND{0,1} = 1;  b: AND{0} = 1, AND{1} = 2, AND{0,1} = -1;  output = b
    a, b = _source({1: 2.0, 3: 1.0}), _source({1: 1.0, 2: 2.0, 3: -1.0})
    scalars = _scalars({"a": a, "b": b, OUTPUT: _source({1: 1.0, 2: 2.0, 3: -1.0})})
    # a -> b: AND{0} shared 1 (forget 1); AND{0,1} signs differ (forget 1, new 1); AND{1} new 2
    # overlap 1, forget 2, new 3
    assert scalars["b/emerged_from_previous_layer"] == pytest.approx(3 / 4)
    assert scalars["b/forgotten_from_previous_layer"] == pytest.approx(2 / 3)
    assert scalars["output/emerged_from_previous_layer"] == 0.0  # b -> output: identical
    assert scalars["output/forgotten_from_previous_layer"] == 0.0
    assert "a/emerged_from_previous_layer" not in scalars  # the first layer has no previous layer
    # a against the output (= b): pooled over orders overlap 1 / (1 + new 3), forget 2 / (1 + 2)
    assert scalars["a/completeness"] == pytest.approx(1 / 4)
    assert scalars["a/redundancy"] == pytest.approx(2 / 3)
    # per order: order 1 completeness 1/3, redundancy 1/2; order 2 completeness 0, redundancy 1
    assert scalars["a/completeness_mean_over_orders"] == pytest.approx(1 / 6)
    assert scalars["a/redundancy_mean_over_orders"] == pytest.approx(3 / 4)
    assert scalars["b/completeness"] == 1.0 and scalars["b/redundancy"] == 0.0
