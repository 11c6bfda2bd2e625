"""Malformed arguments and input of ConceptMonitor and of :mod:`lightning_probes.measures.explanations`: each must fail
with a clear error (the rules, the tables and their tests: ``arguments.py``)."""

from __future__ import annotations

import pytest
import torch
from arguments import (
                       CONCEPTS,
                       INF,
                       NAMES,
                       NAN,
                       NOT_RUNNABLE,
                       X_NAN,
                       X,
                       Y,
                       at_fit,
                       case,
                       concepts,
                       ids_are_unique,
                       poisoned,
                       refused_at_construction,
                       refused_at_fit,
                       refused_by_measures,
                       small_cnn,
                       warned_and_skipped,
)

from lightning_probes.datasets import ConceptProbe
from lightning_probes.measures import explanations as ex

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------- (a) constructor arguments
CONSTRUCTOR = [
    case(lambda: concepts(concepts=CONCEPTS.float()), ValueError, "boolean .* got dtype torch.float32",
         "concepts-float"),
    case(lambda: concepts(concepts=CONCEPTS.float().masked_fill(CONCEPTS, NAN)), ValueError,
         "boolean .* got dtype torch.float32", "concepts-nan"),
    case(lambda: concepts(concepts=CONCEPTS.long() * 2), ValueError, r"boolean \(or 0/1 integer\)", "concepts-int-2"),
    case(lambda: concepts(concepts=CONCEPTS[:, 0]), ValueError, r"shape \(N, K\) or \(N, K, H, W\), got \(64,\)",
         "concepts-1d"),
    case(lambda: concepts(concepts=CONCEPTS[:, :, None, None, None]), ValueError, r"got \(64, 11, 1, 1, 1\)",
         "concepts-5d"),  # (N, K, T) is valid: per-token concepts of a sequence layer
    case(lambda: concepts(concepts=CONCEPTS[:0]), ValueError, r"concepts are empty \(shape \(0, 11\)\)",
         "concepts-no-samples"),
    case(lambda: concepts(concepts=CONCEPTS[:, :0], concept_names=[]), ValueError, r"empty \(shape \(64, 0\)\)",
         "concepts-no-concepts"),
    case(lambda: concepts(concepts=torch.zeros_like(CONCEPTS)), ValueError, "no concept is present anywhere",
         "concepts-all-false"),
    case(lambda: concepts(concepts=CONCEPTS.tolist()), TypeError, "boolean tensor or a ConceptProbe, got list",
         "concepts-list"),
    case(lambda: concepts(concept_names=None), ValueError, "concept_names is required .* give 11 names",
         "concepts-names-missing"),
    case(lambda: concepts(concept_names=NAMES[:3]), ValueError, "11 distinct names .* got 3", "concepts-names-short"),
    case(lambda: concepts(concept_names=["c"] * 11), ValueError, "11 distinct names", "concepts-names-repeat"),
    case(lambda: concepts(units=[-1]), ValueError, "distinct non-negative channel indices", "concepts-units-neg"),
    case(lambda: concepts(units=[]), ValueError, "distinct non-negative channel indices", "concepts-units-empty"),
    case(lambda: concepts(units=[1, 1]), ValueError, "distinct non-negative", "concepts-units-repeat"),
    case(lambda: concepts(units=["a"]), TypeError, "units must be a list of integer channel indices",
         "concepts-units-str"),
    case(lambda: concepts(units=[1.5]), TypeError, r"integer channel indices, got \[1.5\]", "concepts-units-float"),
    case(lambda: concepts(units=3), TypeError, "integer channel indices, got 3", "concepts-units-not-a-list"),
    case(lambda: concepts(num_clusters=0), ValueError, "num_clusters must be a positive integer",
         "concepts-num_clusters-0"),
    case(lambda: concepts(num_clusters="3"), ValueError, "num_clusters must be a positive integer",
         "concepts-num_clusters-str"),
    case(lambda: concepts(max_length=4), ValueError, "max_length must be 1, 2 or 3", "concepts-max_length-4"),
    case(lambda: concepts(iou_threshold=2), ValueError, r"iou_threshold must be a number in \[0, 1\]",
         "concepts-iou_threshold-2"),
    case(lambda: concepts(iou_threshold=NAN), ValueError, "iou_threshold .* got nan", "concepts-iou_threshold-nan"),
    case(lambda: concepts(iou_threshold="0.1"), ValueError, "iou_threshold .* got '0.1'", "concepts-iou_threshold-str"),
    case(lambda: concepts(search="greedy"), ValueError, "search must be 'exact' or 'beam'", "concepts-search-unknown"),
    case(lambda: concepts(time_budget=0), ValueError, "time_budget must be positive seconds", "concepts-time_budget-0"),
    case(lambda: concepts(time_budget=NAN), ValueError, "time_budget .* got nan", "concepts-time_budget-nan"),
    case(lambda: concepts(time_budget="1"), ValueError, "time_budget .* got '1'", "concepts-time_budget-str"),
    case(lambda: concepts(beam_width=0), ValueError, "beam_width must be a positive integer, got 0",
         "concepts-beam_width-0"),
    case(lambda: concepts(first_beam="10"), ValueError, "first_beam must be a positive integer, got '10'",
         "concepts-first_beam-str"),
    case(lambda: concepts(max_samples=10), ValueError, "would cut the probe set below the 64 samples",
         "concepts-max_samples-below"),
    case(lambda: concepts(concepts=ConceptProbe(X, CONCEPTS, NAMES, Y), concept_names=None), ValueError,
         "a ConceptProbe carries its own probe inputs", "concepts-probe-and-probe_data"),
    case(lambda: ConceptProbe(X[:10], CONCEPTS, NAMES), ValueError, "inputs have 10 samples but concepts 64",
         "concepts-probe-length-mismatch"),
    case(lambda: concepts(layer=""), ValueError, "layer must be the name of a module", "concepts-layer-empty"),
    case(lambda: concepts(layer=3), ValueError, "layer must be the name of a module .* got 3", "concepts-layer-int"),
]

test_constructor_refuses_malformed_arguments = refused_at_construction(CONSTRUCTOR)


# ----------------------------------------------------------------- (b) checked against the model and probe data
AT_FIT = [
    at_fit(lambda: concepts(layer="nope"), ValueError, "No module named 'nope'.*'features.1'",
           "concepts-layer-unknown"),
    at_fit(lambda: concepts(probe_data=(X[:30], Y[:30])), ValueError, "concepts describe 64 samples but the probe set "
           "has 30", "concepts-probe-shorter"),
    at_fit(lambda: concepts(units=[40]), ValueError, r"units \[40\] out of range: layer 'features.1' has 32 channels",
           "concepts-unit-out-of-range"),
    at_fit(lambda: concepts(concepts=CONCEPTS[:, :, None, None].expand(64, 11, 4, 4)), ValueError,
           "per-position concepts .* need a spatial layer", "concepts-per-position-on-flat-layer"),
    at_fit(lambda: concepts(layer="conv1", concepts=torch.arange(8 * 2 * 16).view(8, 2, 4, 4) % 3 == 0,
                            concept_names=["a", "b"],
                            probe_data=torch.rand(8, 3, 8, 8)), ValueError,
           "maps are 8x8 but the concept masks are 4x4", "concepts-masks-smaller-than-maps", model=small_cnn),
    at_fit(lambda: concepts(probe_data=(X[:, :32], Y)), ValueError, NOT_RUNNABLE + r"\(32,\)",
           "concepts-probe-wrong-feature-count"),
    at_fit(lambda: concepts(probe_data=((X * 16).long(), Y)), ValueError, NOT_RUNNABLE + r".*torch.int64",
           "concepts-probe-integer-inputs"),
    at_fit(lambda: concepts(probe_data=(X_NAN, Y)), ValueError, "activations contain NaN or infinite values",
           "concepts-probe-nan"),
    at_fit(lambda: concepts(), ValueError, "activations contain NaN or infinite values", "concepts-weights-nan",
           model=poisoned("features.0.bias")),
]

test_malformed_model_or_probe_data_fails_clearly = refused_at_fit(AT_FIT)


# ------------------------------------------------------- (b) run-time failures with on_error="warn": skip, no numbers
WARNED = [
    at_fit(lambda: concepts(probe_data=(X_NAN, Y), on_error="warn"), None, "NaN or infinite values",
           "concepts-probe-nan"),
]

test_failed_probe_warns_once_and_publishes_only_its_count = warned_and_skipped(WARNED)


# ------------------------------------------------------------------------------------------- (c) pure measures
_table = ex.prepare_concepts(torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]]).bool())
_unit = torch.tensor([True, False, False, False])


MEASURES = [
    case(lambda: ex.kmeans_1d(torch.tensor([0.0, NAN, 1.0]), 2), ValueError, "finite, sorted and strictly increasing",
         "explanations.kmeans-nan"),
    case(lambda: ex.kmeans_1d(torch.tensor([3.0, 1.0, 2.0]), 2), ValueError, "sorted and strictly increasing",
         "explanations.kmeans-unsorted"),
    case(lambda: ex.kmeans_1d(torch.tensor([1.0, 1.0, 2.0]), 2), ValueError, "strictly increasing",
         "explanations.kmeans-repeated-value"),
    case(lambda: ex.kmeans_1d(torch.rand(3, 3), 2), ValueError, r"1-D tensor, got shape \(3, 3\)",
         "explanations.kmeans-2d"),
    case(lambda: ex.kmeans_1d(torch.tensor([]), 1), ValueError, r"num_clusters must be in \[1, 0\]",
         "explanations.kmeans-empty"),
    case(lambda: ex.kmeans_1d(torch.tensor([0.0, 1.0]), 3), ValueError, r"in \[1, 2\] .* got 3",
         "explanations.kmeans-too-many-clusters"),
    case(lambda: ex.kmeans_1d(torch.tensor([0.0, 1.0, 2.0]), 2, torch.ones(2)), ValueError,
         r"weights must be positive, one per value \(3,\)", "explanations.kmeans-weights-shape"),
    case(lambda: ex.kmeans_1d(torch.tensor([0.0, 1.0, 2.0]), 2, torch.tensor([1.0, -1.0, 1.0])), ValueError,
         "weights must be positive", "explanations.kmeans-weights-negative"),
    case(lambda: ex.activation_ranges(torch.tensor([0.0, NAN, 1.0])), ValueError, "NaN or infinite values",
         "explanations.ranges-nan"),
    case(lambda: ex.activation_ranges(torch.tensor([0.0, INF, 1.0]), 1), ValueError, "NaN or infinite values",
         "explanations.ranges-inf"),
    case(lambda: ex.activation_ranges(torch.tensor([])), ex.InactiveUnitError, "never activates",
         "explanations.ranges-empty"),
    case(lambda: ex.activation_ranges(torch.zeros(5), 1), ex.InactiveUnitError, "all activations are zero",
         "explanations.ranges-all-zero"),
    case(lambda: ex.activation_ranges(torch.rand(5), 0), ValueError, "num_clusters must be >= 1",
         "explanations.ranges-clusters-0"),
    case(lambda: ex.activation_ranges(torch.rand(5), 1, quantile=1.5), ValueError, r"quantile must be in \(0, 1\)",
         "explanations.ranges-quantile"),
    case(lambda: ex.upsample_activations(torch.rand(3, 4), (8, 8)), ValueError, r"\(N, U, h, w\) or \(N, h, w\)",
         "explanations.upsample-2d"),
    case(lambda: ex.range_masks(torch.rand(4), torch.rand(3)), ValueError, r"ranges must have shape \(R, 2\)",
         "explanations.range_masks-ranges-shape"),
    case(lambda: ex.explanation_metrics(torch.ones(2, 3, dtype=torch.bool), torch.ones(3, 2, dtype=torch.bool)),
         ValueError, "differ", "explanations.metrics-shapes"),
    case(lambda: ex.explanation_metrics(torch.ones(0, 3, dtype=torch.bool), torch.ones(0, 3, dtype=torch.bool)),
         ValueError, "N >= 1 samples", "explanations.metrics-empty"),
    case(lambda: ex.explanation_metrics(torch.tensor([[0.4, NAN]]), torch.tensor([[1.0, 1.0]])), ValueError,
         "unit mask must be a boolean", "explanations.metrics-float-mask"),
    case(lambda: ex.explanation_metrics(torch.ones(1, 2, dtype=torch.bool), torch.tensor([[2, 0]])), ValueError,
         "formula mask must be a boolean", "explanations.metrics-int-2-mask"),
    case(lambda: ex.prepare_concepts(torch.rand(4, 3)), ValueError, "boolean .* got dtype torch.float32",
         "explanations.concepts-float"),
    case(lambda: ex.prepare_concepts(torch.ones(4, 3, 2, dtype=torch.bool)), ValueError, r"\(N, K\) or \(N, K, H, W\)",
         "explanations.concepts-3d"),
    case(lambda: ex.prepare_concepts(torch.ones(4, 3, dtype=torch.bool), spatial_size=(0, 2)), ValueError,
         r"spatial_size must be \(h, w\) of positive integers, got \(0, 2\)", "explanations.concepts-spatial-zero"),
    case(lambda: ex.prepare_concepts(torch.ones(4, 3, dtype=torch.bool), spatial_size=(2, 2, 2)), ValueError,
         "spatial_size must be", "explanations.concepts-spatial-3"),
    case(lambda: ex.best_formula(_table, _unit, 0), ValueError, "max_length must be 1, 2 or 3",
         "explanations.best_formula-max_length-0"),
    case(lambda: ex.best_formula(_table, _unit, method="x"), ValueError, "method must be 'exact' or 'beam'",
         "explanations.best_formula-method"),
    case(lambda: ex.best_formula(_table, _unit[:2]), ValueError, "unit mask has 2 positions but the concepts have 4",
         "explanations.best_formula-mask-size"),
    case(lambda: ex.best_formula(_table, torch.tensor([0.5, 0.0, 0.0, 0.0])), ValueError,
         "unit mask must be a boolean .* torch.float32", "explanations.best_formula-float-mask"),
    case(lambda: ex.best_formula(_table, torch.tensor([NAN, 1.0, 0.0, 0.0]), method="beam"), ValueError,
         "unit mask must be a boolean", "explanations.best_formula-nan-mask-beam"),
    case(lambda: ex.best_formula(_table, torch.tensor([2, 0, 0, 0])), ValueError, r"boolean \(or 0/1 integer\)",
         "explanations.best_formula-int-2-mask"),
    case(lambda: ex.best_formula(_table, _unit, time_budget=0), ValueError, "time_budget must be positive",
         "explanations.best_formula-time_budget-0"),
    case(lambda: ex.best_formula(_table, _unit, method="beam", beam_width=0), ValueError, "beam_width and first_beam",
         "explanations.best_formula-beam_width-0"),
    case(lambda: ex.exhaustive_search(_table, _unit, 5), ValueError, "max_length must be 1, 2 or 3",
         "explanations.exhaustive-max_length-5"),
    case(lambda: ex.explain_unit(torch.rand(4), _table, ["a"]), ValueError, "1 concept names for 3 concepts",
         "explanations.explain_unit-names"),
    case(lambda: ex.explain_unit(torch.rand(5), _table), ValueError, "activations have 5 samples, the concepts 4",
         "explanations.explain_unit-samples"),
    case(lambda: ex.explain_unit(torch.tensor([1.0, NAN, 0.0, 2.0]), _table), ValueError, "NaN or infinite",
         "explanations.explain_unit-nan"),
    case(lambda: ex.explain_unit(torch.zeros(4), _table), ex.InactiveUnitError, "never activates",
         "explanations.explain_unit-inactive"),
]

test_measure_refuses_malformed_tensors = refused_by_measures(MEASURES)


test_case_ids_are_unique = ids_are_unique(CONSTRUCTOR, AT_FIT, WARNED, MEASURES)
