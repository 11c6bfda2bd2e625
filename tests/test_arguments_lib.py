"""Malformed arguments and input of InteractionBasisMonitor (LIB) and of
:mod:`lightning_probes.measures.interaction_basis`: each must fail with a clear error (the rules, the tables and
their tests: ``arguments.py``)."""

from __future__ import annotations

import pytest
import torch
from arguments import (
    F64,
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
    lib,
    poison,
    poisoned,
    refused_at_construction,
    refused_at_fit,
    refused_by_measures,
    warned_and_skipped,
)
from torch import nn

from lightning_probes.measures import interaction_basis as ib

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------- (a) constructor arguments
CONSTRUCTOR = [
    case(lambda: lib(layers=[]), ValueError, "layers must be a non-empty list", "lib-layers-empty"),
    case(lambda: lib(layers="classifier"), ValueError, "layers must be a non-empty list", "lib-layers-str"),
    case(lambda: lib(layers=["a", "a"]), ValueError, "must not repeat a name", "lib-layers-repeat"),
    case(lambda: lib(layers=[1]), ValueError, "layers must be a non-empty list of module names", "lib-layers-int"),
    case(lambda: lib(truncation=0.0), ValueError, "truncation must be a positive finite", "lib-truncation-0"),
    case(lambda: lib(truncation=NAN), ValueError, "truncation .* got nan", "lib-truncation-nan"),
    case(lambda: lib(truncation=INF), ValueError, "truncation .* got inf", "lib-truncation-inf"),
    case(lambda: lib(truncation="1e-6"), ValueError, "truncation .* got '1e-6'", "lib-truncation-str"),
    case(lambda: lib(num_samples=1), ValueError, "num_samples must be an integer >= 2", "lib-num_samples-1"),
    case(lambda: lib(num_samples=2.5), ValueError, "num_samples must be an integer", "lib-num_samples-float"),
    case(lambda: lib(num_samples=True), ValueError, "num_samples must be an integer", "lib-num_samples-bool"),
    case(lambda: lib(final_basis="svd"), ValueError, "final_basis must be 'logits' .*, 'pca' or 'identity'",
         "lib-final_basis"),
    case(lambda: lib(sections=["classifier"]), ValueError, r"sections needs one entry per layer \(3\)",
         "lib-sections-count"),
    case(lambda: lib(sections=[1, 2, 3]), TypeError, "a section is a module, a module name or a non-empty list",
         "lib-sections-int"),
    case(lambda: lib(sections=["features.0", [], "classifier"]), TypeError, "a section is a module",
         "lib-sections-empty-list"),
    case(lambda: lib(max_jacobian_elements=0), ValueError, "max_jacobian_elements must be a positive integer",
         "lib-max_jacobian_elements-0"),
    case(lambda: lib(max_jacobian_elements=True), ValueError, "max_jacobian_elements .* got True",
         "lib-max_jacobian_elements-bool"),
    case(lambda: lib(max_samples=10), ValueError, "takes num_samples .* not max_samples", "lib-max_samples-given"),
]

test_constructor_refuses_malformed_arguments = refused_at_construction(CONSTRUCTOR)


# ----------------------------------------------------------------- (b) checked against the model and probe data
AT_FIT = [
    at_fit(lambda: lib(layers=["nope", "classifier"]), ValueError, "No module named 'nope'.*'features.0'",
           "lib-layer-unknown"),
    at_fit(lambda: lib(layers=["classifier", "features.0"]), ValueError, "consecutive node points in forward order",
           "lib-layers-out-of-order"),
    at_fit(lambda: lib(sections=["a", "b", "c"]), ValueError, "No module named 'a'", "lib-section-unknown"),
    at_fit(lambda: lib(probe_data=(X[:, :32], Y)), ValueError, NOT_RUNNABLE + r"\(32,\)",
           "lib-probe-wrong-feature-count"),
    at_fit(lambda: lib(probe_data=((X * 16).long(), Y)), ValueError, NOT_RUNNABLE + r".*torch.int64",
           "lib-probe-integer-inputs"),
    at_fit(lambda: lib(probe_data=(X[:0], Y[:0])), ValueError, "is empty", "lib-probe-empty"),
    at_fit(lambda: lib(probe_data=(X[:1], Y[:1])), ValueError, "needs at least 2 probe samples, the probe set has 1",
           "lib-probe-one-sample"),
    at_fit(lambda: lib(probe_data=(X_NAN, Y)), ValueError, r"activations\[0\] contain NaN or Inf", "lib-probe-nan"),
    at_fit(lambda: lib(probe_data=(X_INF, Y)), ValueError, r"activations\[0\] contain NaN or Inf", "lib-probe-inf"),
    at_fit(lambda: lib(), ValueError, r"activations\[2\] contain NaN or Inf", "lib-weights-nan",
           model=poisoned("features.2.weight")),
]

test_malformed_model_or_probe_data_fails_clearly = refused_at_fit(AT_FIT)


# ------------------------------------------------------- (b) run-time failures with on_error="warn": skip, no numbers
WARNED = [
    at_fit(lambda: lib(probe_data=(X_NAN, Y), on_error="warn"), None, "contain NaN or Inf", "lib-probe-nan"),
    at_fit(lambda: lib(probe_data=(X_INF, Y), on_error="warn"), None, "contain NaN or Inf", "lib-probe-inf"),
]

test_failed_probe_warns_once_and_publishes_only_its_count = warned_and_skipped(WARNED)


# ------------------------------------------------------------------------------------------- (c) pure measures
_lin = nn.Linear(3, 2).double()
_a0 = torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    _a1 = _lin(_a0)
_bases = ib.interaction_basis([_lin], [_a0, _a1])


MEASURES = [
    case(lambda: ib.whitened_pca(poison(_a0)), ValueError, "activations contain NaN or Inf", "lib.whitened_pca-nan"),
    case(lambda: ib.whitened_pca(_a0[:1]), ValueError, "at least 2 samples", "lib.whitened_pca-one-sample"),
    case(lambda: ib.whitened_pca(_a0[:0]), ValueError, r"at least 2 samples .* got shape \(0, 3\)",
         "lib.whitened_pca-empty"),
    case(lambda: ib.whitened_pca(torch.tensor(1.0)), ValueError, r"at least 2 samples .* got shape \(\)",
         "lib.whitened_pca-0d"),
    case(lambda: ib.whitened_pca(_a0, truncation=NAN), ValueError, "truncation must be a positive finite threshold",
         "lib.whitened_pca-truncation-nan"),
    case(lambda: ib.augment(_a0[:, 0]), ValueError, r"shape \(N, \.\.\.\) with a feature axis", "lib.augment-1d"),
    case(lambda: ib.interaction_basis([_lin], [_a0]), ValueError, "one more node activation than sections",
         "lib.basis-activation-count"),
    case(lambda: ib.interaction_basis([_lin], [_a0, _a1[:, :1]]), ValueError,
         r"maps activations\[0\] to shape \(20, 2\)",
         "lib.basis-wrong-next-shape"),
    case(lambda: ib.interaction_basis([_lin], [_a0, _a1[:5]]), ValueError, r"activations\[1\] has 5 samples",
         "lib.basis-sample-count"),
    case(lambda: ib.interaction_basis([], [_a0]), ValueError, "at least one section", "lib.basis-no-sections"),
    case(lambda: ib.interaction_basis([_lin], [_a0, poison(_a1)]), ValueError, r"activations\[1\] contain NaN or Inf",
         "lib.basis-nan"),
    case(lambda: ib.interaction_basis([_lin], [poison(_a0), _a1], check=False), ValueError, "contain NaN or Inf",
         "lib.basis-nan-unchecked"),
    case(lambda: ib.interaction_basis([_lin], [_a0, _a1], truncation=NAN), ValueError, "truncation .* got nan",
         "lib.basis-truncation-nan"),
    case(lambda: ib.interaction_basis([_lin], [_a0, _a1], final_basis="svd"), ValueError, "final_basis must be",
         "lib.basis-final_basis"),
    case(lambda: ib.interaction_graph([nn.Linear(3, 2)], [_a0, _a1]), ValueError, r"sections\[0\] cannot run on "
         r"activations\[0\] \(shape \(20, 3\), dtype torch.float64\)", "lib.graph-section-dtype"),
    case(lambda: ib.edges_for_mass(torch.tensor([[NAN, 1.0], [2.0, 3.0]]), 0.9), ValueError,
         "edges must be finite and non-negative", "lib.edges_for_mass-nan"),
    case(lambda: ib.edges_for_mass(torch.tensor([[INF, 1.0]]), 0.9), ValueError, "finite and non-negative",
         "lib.edges_for_mass-inf"),
    case(lambda: ib.edges_for_mass(torch.tensor([[-5.0, 1.0]]), 0.9), ValueError, "finite and non-negative",
         "lib.edges_for_mass-negative"),
    case(lambda: ib.edges_for_mass(torch.ones(2, 2), NAN), ValueError, r"fraction must lie in \(0, 1\]",
         "lib.edges_for_mass-fraction-nan"),
    case(lambda: next(ib.lib_jacobians(_lin, _a0, torch.eye(3, dtype=F64), mode="x")), ValueError,
         "mode must be 'auto', 'rev', 'fwd' or 'dense'", "lib.jacobians-mode"),
    case(lambda: next(ib.lib_jacobians(_lin, _a0, torch.eye(3, dtype=F64), 0)), ValueError,
         "max_jacobian_elements must be positive", "lib.jacobians-max-elements-0"),
    case(lambda: next(ib.lib_jacobians(_lin, _a0, torch.eye(5, dtype=F64))), ValueError,
         r"next_basis must be .* C \(3, k\) .* got shape \(5, 5\)", "lib.jacobians-basis-shape"),
    case(lambda: next(ib.lib_jacobians(_lin, poison(_a0), torch.eye(3, dtype=F64), mode="rev")), ValueError,
         "activations contain NaN or Inf", "lib.jacobians-nan"),
    case(lambda: ib.edge_matrix(_lin, poison(_a0), _bases.lib[0], _bases.lib[1]), ValueError, "contain NaN or Inf",
         "lib.edge_matrix-nan"),
    case(lambda: ib.interaction_edges([_lin], [_a0, _a1], _bases.lib[:1]), ValueError,
         "L sections, L\\+1 activations and L\\+1 bases", "lib.edges-basis-count"),
    case(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.zeros(5, dtype=torch.long)), ValueError,
         "20 activations but 5 targets", "lib.ablation-targets-length"),
    case(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.rand(20)), ValueError,
         "targets must be 1-D class indices, got dtype torch.float32", "lib.ablation-targets-float"),
    case(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.zeros(20, 1, dtype=torch.long)), ValueError,
         r"1-D class indices.*shape \(20, 1\)", "lib.ablation-targets-2d"),
    case(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.full((20,), 7)), ValueError,
         r"targets must lie in 0\.\.1 \(the output has 2 classes\)", "lib.ablation-targets-out-of-range"),
    case(lambda: ib.ablation_curve([_lin], poison(_a0), _bases.lib[0], torch.zeros(20, dtype=torch.long)), ValueError,
         "contain NaN or Inf", "lib.ablation-activations-nan"),
    case(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.zeros(20, dtype=torch.long), ks=[99]), ValueError,
         r"ks must lie in \[0, 3\]", "lib.ablation-ks"),
]

test_measure_refuses_malformed_tensors = refused_by_measures(MEASURES)


test_case_ids_are_unique = ids_are_unique(CONSTRUCTOR, AT_FIT, WARNED, MEASURES)
