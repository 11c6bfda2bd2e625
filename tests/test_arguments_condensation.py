"""Malformed arguments and input of CondensationMonitor and of :mod:`lightning_probes.measures.condensation`: each must
fail with a clear error (the rules, the tables and their tests: ``arguments.py``)."""

from __future__ import annotations

import pytest
import torch
from arguments import (
                       INF,
                       NAN,
                       X,
                       Y,
                       at_fit,
                       case,
                       condensation,
                       ids_are_unique,
                       one_linear,
                       poison,
                       poisoned,
                       refused_at_construction,
                       refused_at_fit,
                       refused_by_measures,
                       single_neuron,
                       warned_and_skipped,
)

from lightning_probes.measures import condensation as cm
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.triggers import StopWhen

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------- (a) constructor arguments
CONSTRUCTOR = [
    case(lambda: condensation(layers="features.0"), ValueError, r"for one layer write layers=\['features.0'\]",
         "condensation-layers-str"),
    case(lambda: condensation(layers=[]), ValueError, "non-empty list of module names", "condensation-layers-empty"),
    case(lambda: condensation(layers=[0]), ValueError, "non-empty list of module names", "condensation-layers-int"),
    case(lambda: condensation(layers=["a", "a"]), ValueError, "must not repeat a name", "condensation-layers-repeat"),
    case(lambda: condensation(threshold=0), ValueError, r"threshold must be a cosine level in \(0, 1\]",
         "condensation-threshold-0"),
    case(lambda: condensation(threshold=1.5), ValueError, "cosine level .* got 1.5", "condensation-threshold-1.5"),
    case(lambda: condensation(threshold=NAN), ValueError, "cosine level .* got nan", "condensation-threshold-nan"),
    case(lambda: condensation(threshold="0.9"), ValueError, "cosine level .* got '0.9'", "condensation-threshold-str"),
    case(lambda: condensation(threshold=True), ValueError, "cosine level .* got True", "condensation-threshold-bool"),
    case(lambda: condensation(max_neurons=1), ValueError, "max_neurons must be an integer >= 2, got 1",
         "condensation-max_neurons-1"),
    case(lambda: condensation(max_neurons=2.5), ValueError, "max_neurons must be an integer",
         "condensation-max_neurons-float"),
    case(lambda: condensation(stage_threshold=0), ValueError, "stage_threshold must be a positive relative change",
         "condensation-stage_threshold-0"),
    case(lambda: condensation(stage_threshold=NAN), ValueError, "stage_threshold .* got nan",
         "condensation-stage_threshold-nan"),
    case(lambda: condensation(stage_threshold=INF), ValueError, "stage_threshold .* got inf",
         "condensation-stage_threshold-inf"),
    case(lambda: condensation(seed="a"), ValueError, "seed must be an integer", "condensation-seed-str"),
    case(lambda: condensation(triggers=[StopWhen("features.0/initial_stage_end", above=1)]), ValueError,
         "a trigger cannot watch it", "condensation-trigger-on-stage-end"),
    case(lambda: CondensationMonitor(probe_data=(X, Y)), TypeError, "unexpected keyword argument 'probe_data'",
         "condensation-probe_data-not-offered"),
]

test_constructor_refuses_malformed_arguments = refused_at_construction(CONSTRUCTOR)


# ----------------------------------------------------------------- (b) checked against the model and probe data
AT_FIT = [
    at_fit(lambda: condensation(layers=["nope"]), ValueError,
           "No module named 'nope'.*Linear/Conv modules: 'features.0'", "condensation-layer-unknown"),
    at_fit(lambda: condensation(layers=["features.1"]), TypeError, "'features.1': a ReLU is not a neuron layer",
           "condensation-layer-not-linear"),
    at_fit(lambda: condensation(), ValueError, r"has 1 Linear/Conv layer\(s\): 'net'", "condensation-auto-one-linear",
           model=one_linear),
    at_fit(lambda: condensation(layers=["net.0"]), ValueError, "layer 'net.0' has 1 neuron", "condensation-one-neuron",
           model=single_neuron),
    at_fit(lambda: condensation(), ValueError, "layer 'features.0' has NaN or inf weights at step 0",
           "condensation-weights-nan", model=poisoned("features.0.weight")),
    at_fit(lambda: condensation(), ValueError, "layer 'features.2' has NaN or inf weights", "condensation-bias-inf",
           model=poisoned("features.2.bias", INF)),
]

test_malformed_model_or_probe_data_fails_clearly = refused_at_fit(AT_FIT)


# ------------------------------------------------------- (b) run-time failures with on_error="warn": skip, no numbers
WARNED = [
    at_fit(lambda: condensation(on_error="warn"), None, "'features.0' has NaN or inf weights", "condensation-nan",
           model=poisoned("features.0.weight")),
]

test_failed_probe_warns_once_and_publishes_only_its_count = warned_and_skipped(WARNED)


# ------------------------------------------------------------------------------------------- (c) pure measures
MEASURES = [
    case(lambda: cm.condensation_stats(torch.randn(5)), ValueError, r"weight must be a 2-D .* got shape \(5,\)",
         "condensation.stats-weight-1d"),
    case(lambda: cm.condensation_stats(torch.randn(5, 2, 2)), ValueError, "flatten convolution kernels",
         "condensation.stats-weight-3d"),
    case(lambda: cm.condensation_stats(torch.randn(5, 3), torch.randn(4)), ValueError, r"bias must have shape \(5,\)",
         "condensation.stats-bias-shape"),
    case(lambda: cm.condensation_stats(poison(torch.randn(5, 3))), ValueError, "contains NaN or inf",
         "condensation.stats-weight-nan"),
    case(lambda: cm.condensation_stats(torch.randn(5, 3), poison(torch.randn(5), INF)), ValueError,
         "contains NaN or inf",
         "condensation.stats-bias-inf"),
    case(lambda: cm.condensation_stats(torch.randn(0, 3)), ValueError, r"weight \(0, 3\) has no neurons",
         "condensation.stats-no-neurons"),
    case(lambda: cm.condensation_stats(torch.randn(5, 3), initial_weight=torch.randn(5, 4)), ValueError,
         r"initial_weight of shape \(5, 4\) does not match", "condensation.stats-initial-shape"),
    case(lambda: cm.condensation_stats(torch.randn(5, 3), initial_weight=poison(torch.randn(5, 3))), ValueError,
         "relative change is undefined", "condensation.stats-initial-nan"),
    case(lambda: cm.relative_change(torch.randn(5, 3), torch.full((5, 3), NAN)), ValueError,
         "initial weights contain NaN or inf", "condensation.relative_change-nan"),
    case(lambda: cm.condensation_stats(torch.randn(5, 3), threshold=NAN), ValueError, r"cosine level in \(0, 1\]",
         "condensation.stats-threshold-nan"),
    case(lambda: cm.condensation_stats(torch.randn(5, 3), max_neurons=1), ValueError, "max_neurons must be at least 2",
         "condensation.stats-max_neurons-1"),
    case(lambda: cm.condensed_directions(torch.randn(3, 4)), ValueError, r"square \(m, m\) matrix",
         "condensation.condensed_directions-not-square"),
    case(lambda: cm.condensed_directions(torch.tensor([[1.0, NAN], [NAN, 1.0]])), ValueError, "only finite values",
         "condensation.condensed_directions-nan"),
    case(lambda: cm.cluster_order(torch.tensor([0, 1]), torch.eye(3)), ValueError, r"cosine must be \(2, 2\)",
         "condensation.cluster_order-mismatch"),
    case(lambda: cm.effective_rank(torch.tensor([[NAN]])), ValueError, "contains NaN or inf",
         "condensation.effective_rank-nan"),
    case(lambda: cm.stable_rank(torch.randn(3)), ValueError, "weight must be a 2-D", "condensation.stable_rank-1d"),
]

test_measure_refuses_malformed_tensors = refused_by_measures(MEASURES)


test_case_ids_are_unique = ids_are_unique(CONSTRUCTOR, AT_FIT, WARNED, MEASURES)
