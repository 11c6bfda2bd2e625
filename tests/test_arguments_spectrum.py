"""Malformed arguments and input of FeatureSpectrumMonitor and of :mod:`lightning_probes.measures.spectrum`: each must
fail with a clear error (the rules, the tables and their tests: ``arguments.py``)."""

from __future__ import annotations

import pytest
import torch
from arguments import (
    INF,
    NAN,
    NOT_RUNNABLE,
    X_INF,
    X_NAN,
    X,
    Y,
    at_fit,
    case,
    ids_are_unique,
    poison,
    poisoned,
    refused_at_construction,
    refused_at_fit,
    refused_by_measures,
    spectrum,
    warned_and_skipped,
)
from torch import nn

from lightning_probes.measures import spectrum as sm

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------- (a) constructor arguments
CONSTRUCTOR = [
    case(lambda: spectrum(head=""), ValueError, "head must be the name of the final nn.Linear", "spectrum-head-empty"),
    case(lambda: spectrum(head=3), ValueError, "head must be the name of the final nn.Linear", "spectrum-head-int"),
    case(lambda: spectrum(num_classes=1), ValueError, "num_classes must be an integer >= 2, got 1",
         "spectrum-num_classes-1"),
    case(lambda: spectrum(num_classes=2.5), ValueError, "num_classes must be an integer >= 2, got 2.5",
         "spectrum-num_classes-float"),
    case(lambda: spectrum(num_classes="10"), ValueError, "num_classes must be an integer", "spectrum-num_classes-str"),
    case(lambda: spectrum(power_threshold=0), ValueError, r"power_threshold must be a number in \(0, 1\]",
         "spectrum-power_threshold-0"),
    case(lambda: spectrum(power_threshold=1.5), ValueError, "power_threshold .* got 1.5",
         "spectrum-power_threshold-above-1"),
    case(lambda: spectrum(power_threshold=NAN), ValueError, "power_threshold .* got nan",
         "spectrum-power_threshold-nan"),
    case(lambda: spectrum(power_threshold="0.9"), ValueError, "power_threshold .* got '0.9'",
         "spectrum-power_threshold-str"),
    case(lambda: spectrum(gap=0.5), ValueError, "gap must be a ratio .* >= 1, got 0.5", "spectrum-gap-below-1"),
    case(lambda: spectrum(gap=NAN), ValueError, "gap must be a ratio .* got nan", "spectrum-gap-nan"),
    case(lambda: spectrum(nc4_means="both"), ValueError, "nc4_means must be 'previous' or 'current'",
         "spectrum-nc4_means-unknown"),
]

test_constructor_refuses_malformed_arguments = refused_at_construction(CONSTRUCTOR)


# ----------------------------------------------------------------- (b) checked against the model and probe data
AT_FIT = [
    at_fit(lambda: spectrum(head="nope"), ValueError, r"No module named 'nope'.*'features.0', 'features.2', "
           r"'classifier'", "spectrum-head-unknown"),
    at_fit(lambda: spectrum(head="features"), TypeError, "'features' is a Sequential, not a Linear",
           "spectrum-head-not-linear"),
    at_fit(lambda: spectrum(num_classes=5), ValueError, "num_classes=5 but head 'classifier' has 10 outputs",
           "spectrum-num_classes-mismatch"),
    at_fit(lambda: spectrum(probe_data=(X[:, :32], Y)), ValueError, NOT_RUNNABLE + r"\(32,\).*mat1 and mat2",
           "spectrum-probe-wrong-feature-count"),
    at_fit(lambda: spectrum(probe_data=((X * 16).long(), Y)), ValueError, NOT_RUNNABLE + r"\(64,\), dtype torch.int64",
           "spectrum-probe-integer-inputs"),
    at_fit(lambda: spectrum(probe_data=(X[:0], Y[:0])), ValueError, "the probe set .* is empty",
           "spectrum-probe-empty"),
    at_fit(lambda: spectrum(probe_data=(X[:5], Y[:5])), ValueError, "needs at least 10 probe samples, the probe set "
           "has 5", "spectrum-probe-too-few"),
    at_fit(lambda: spectrum(probe_data=X), ValueError, "FeatureSpectrumMonitor needs targets", "spectrum-no-targets"),
    at_fit(lambda: spectrum(probe_data=(X, Y[:, None])), ValueError,
           r"labels must be a 1-D tensor of class indices, got torch.int64 of shape \(64, 1\)",
           "spectrum-targets-2d"),
    at_fit(lambda: spectrum(probe_data=(X, Y + 10)), ValueError,
           r"the probe labels run 10\.\.19, but 'classifier' has 10 outputs",
           "spectrum-targets-out-of-range"),
    at_fit(lambda: spectrum(probe_data=(X, Y - 1)), ValueError,
           r"labels run -1\.\.8, but 'classifier' has 10 outputs \(classes 0\.\.9\); 8 of 64",
           "spectrum-targets-negative"),
    at_fit(lambda: spectrum(probe_data=(X, Y.float())), ValueError, r"targets have 1 values per sample \(shape "
           r"\(64,\)\), but 'classifier' has 10 outputs", "spectrum-targets-float-vector"),
    at_fit(lambda: spectrum(probe_data=(X, nn.functional.one_hot(Y, 10).float().masked_fill(Y[:, None] == 3, NAN))),
           ValueError, r"the probe targets hold NaN or Inf in 8 of 64 probe samples", "spectrum-targets-nan"),
    at_fit(lambda: spectrum(probe_data=(X, torch.zeros_like(Y))), ValueError, "at least 2 classes in the probe set, "
           "found 1", "spectrum-one-class"),
    at_fit(lambda: spectrum(probe_data=(X_NAN, Y)), FloatingPointError, "features hold NaN or Inf in 1 of 64",
           "spectrum-probe-nan"),
    at_fit(lambda: spectrum(probe_data=(X_INF, Y)), FloatingPointError, "features hold NaN or Inf in 1 of 64",
           "spectrum-probe-inf"),
    at_fit(lambda: spectrum(), FloatingPointError, "head's weight or bias holds NaN or Inf", "spectrum-head-nan",
           model=poisoned("classifier.weight")),
    at_fit(lambda: spectrum(), FloatingPointError, "head's weight or bias holds NaN or Inf", "spectrum-head-bias-inf",
           model=poisoned("classifier.bias", INF)),
]

test_malformed_model_or_probe_data_fails_clearly = refused_at_fit(AT_FIT)


# ------------------------------------------------------- (b) run-time failures with on_error="warn": skip, no numbers
WARNED = [
    at_fit(lambda: spectrum(probe_data=(X_NAN, Y), on_error="warn"), None, "features hold NaN or Inf in 1 of 64",
           "spectrum-probe-nan"),
    at_fit(lambda: spectrum(on_error="warn"), None, "head's weight or bias holds NaN", "spectrum-head-nan",
           model=poisoned("classifier.weight")),
]

test_failed_probe_warns_once_and_publishes_only_its_count = warned_and_skipped(WARNED)


# ------------------------------------------------------------------------------------------- (c) pure measures
_phi = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
_cls = torch.arange(20) % 3
_stats = sm.FeatureStatisticsValue.from_features(_phi, _cls, 3)


def stats_update(features, targets, num_outputs=3, classification=True):
    """Feed one batch to fresh statistics of p = 4 features."""
    return lambda: sm.FeatureStatistics(4, num_outputs, classification).update(features, targets)


MEASURES = [
    case(stats_update(_phi[:, 0], _cls), ValueError, r"features must have shape \(B, 4\), got \(20,\)",
         "spectrum.stats-features-1d"),
    case(lambda: sm.FeatureStatistics(5, 3).update(_phi, _cls), ValueError, r"shape \(B, 5\), got \(20, 4\)",
         "spectrum.stats-features-width"),
    case(stats_update(_phi, _cls[:5]), ValueError, "20 feature rows but 5 targets", "spectrum.stats-targets-length"),
    case(stats_update(_phi, _cls.float()), ValueError, "1-D tensor of class indices", "spectrum.stats-targets-float"),
    case(stats_update(_phi, _cls + 1), ValueError, r"class indices must lie in \[0, 3\); got 1\.\.3",
         "spectrum.stats-targets-out-of-range"),
    case(stats_update(_phi, torch.full((20, 2), NAN), 2, False), ValueError, "regression targets hold NaN or Inf in 20 "
         "of 20", "spectrum.stats-regression-targets-nan"),
    case(lambda: sm.FeatureStatistics(0, 3), ValueError, "must be positive, got 0, 3", "spectrum.stats-no-features"),
    case(lambda: sm.summarise(sm.FeatureStatisticsValue.from_features(poison(_phi), _cls, 3), torch.randn(3, 4), None),
         FloatingPointError, "features hold NaN or Inf in 1 of 20", "spectrum.summarise-features-nan"),
    case(lambda: sm.summarise(sm.FeatureStatisticsValue.from_features(_phi[:0], _cls[:0], 3), torch.randn(3, 4), None),
         ValueError, "no probe samples were seen", "spectrum.summarise-empty"),
    case(lambda: sm.summarise(_stats, poison(torch.randn(3, 4)), None), FloatingPointError, "weight or bias holds NaN",
         "spectrum.summarise-weight-nan"),
    case(lambda: sm.summarise(_stats, torch.randn(3, 4), torch.tensor([0.0, INF, 0.0])), FloatingPointError,
         "weight or bias holds NaN or Inf", "spectrum.summarise-bias-inf"),
    case(lambda: sm.summarise(_stats, torch.randn(3, 5), None), ValueError, r"\(C, 4\) head weight .* got \(3, 5\)",
         "spectrum.summarise-weight-width"),
    case(lambda: sm.summarise(_stats, torch.randn(4), None), ValueError, r"head weight .* got \(4,\)",
         "spectrum.summarise-weight-1d"),
    case(lambda: sm.summarise(_stats, torch.randn(3, 4), torch.randn(5)), ValueError, r"bias must have shape \(3,\)",
         "spectrum.summarise-bias-shape"),
    case(lambda: sm.summarise(_stats, torch.randn(3, 4), None, power_threshold=NAN), ValueError,
         "power_threshold must be in", "spectrum.summarise-threshold-nan"),
    case(lambda: sm.summarise(_stats, torch.randn(3, 4), None, gap=NAN), ValueError, "gap is a ratio .* got nan",
         "spectrum.summarise-gap-nan"),
    case(lambda: sm.diagonalise(torch.tensor([[1.0, NAN], [NAN, 1.0]])), ValueError, "second_moment holds NaN or Inf",
         "spectrum.diagonalise-nan"),
    case(lambda: sm.diagonalise(torch.randn(3, 4)), ValueError, r"square \(p, p\) matrix, got shape \(3, 4\)",
         "spectrum.diagonalise-not-square"),
    case(lambda: sm.diagonalise(torch.randn(3)), ValueError, r"square .* got shape \(3,\)", "spectrum.diagonalise-1d"),
    case(lambda: sm.kernel_diagonalise(poison(_phi)), ValueError, "features hold NaN or Inf",
         "spectrum.kernel_diagonalise-nan"),
    case(lambda: sm.kernel_diagonalise(torch.tensor([[1.0, NAN, 0.0]])), ValueError, "features hold NaN or Inf",
         "spectrum.kernel_diagonalise-nan-wide"),
    case(lambda: sm.kernel_diagonalise(torch.randn(5)), ValueError, r"non-empty \(N, p\) matrix, got shape \(5,\)",
         "spectrum.kernel_diagonalise-1d"),
    case(lambda: sm.kernel_diagonalise(torch.zeros(0, 3)), ValueError, r"non-empty .* got shape \(0, 3\)",
         "spectrum.kernel_diagonalise-empty"),
    case(lambda: sm.participation_ratio(torch.tensor([1.0, NAN])), ValueError, "finite and non-negative",
         "spectrum.participation_ratio-nan"),
    case(lambda: sm.participation_ratio(torch.tensor([1.0, -1.0])), ValueError, "finite and non-negative",
         "spectrum.participation_ratio-negative"),
    case(lambda: sm.neural_collapse(sm.FeatureStatisticsValue.from_features(_phi, torch.zeros(20, dtype=torch.long),
                                                                            3)),
         ValueError, "at least 2 classes in the probe set, found 1", "spectrum.neural_collapse-one-class"),
    case(lambda: sm.neural_collapse(sm.FeatureStatisticsValue.from_features(poison(_phi, INF), _cls, 3)),
         FloatingPointError, "features hold NaN or Inf in 1 of 20", "spectrum.neural_collapse-features-inf"),
    case(lambda: sm.neural_collapse(_stats, torch.randn(3, 7)), ValueError, r"\(C, p\) = \(3, 4\) head weight, got "
         r"\(3, 7\)", "spectrum.neural_collapse-weight-shape"),
    case(lambda: sm.nearest_class_mean(torch.randn(4, 3), torch.randn(2, 5)), ValueError, "must share p",
         "spectrum.nearest_class_mean-widths"),
]

test_measure_refuses_malformed_tensors = refused_by_measures(MEASURES)


test_case_ids_are_unique = ids_are_unique(CONSTRUCTOR, AT_FIT, WARNED, MEASURES)
