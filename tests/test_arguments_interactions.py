"""Malformed arguments and input of InteractionMonitor and its players and of
:mod:`lightning_probes.measures.interactions`: each must fail with a clear error (the rules, the tables and their
tests: ``arguments.py``)."""

from __future__ import annotations

import pytest
import torch
from arguments import (
                       F64,
                       INF,
                       NAN,
                       NOT_RUNNABLE,
                       TOKENS,
                       X_NAN,
                       X,
                       Y,
                       at_fit,
                       case,
                       four_players,
                       ids_are_unique,
                       interactions,
                       poison,
                       poisoned,
                       refused_at_construction,
                       refused_at_fit,
                       refused_by_measures,
                       token_model,
                       warned_and_skipped,
)

from lightning_probes.measures import interactions as im
from lightning_probes.monitors.interactions import InteractionMonitor

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


# ---------------------------------------------------------------------------------- (a) constructor arguments
CONSTRUCTOR = [
    case(lambda: InteractionMonitor("abc"), TypeError, "players must be a Players partition",
         "interactions-players-str"),
    case(lambda: interactions(players=im.FeatureGroups(list(range(20)), 64)), ValueError,
         r"20 players exceed max_players=14: .* 2\^n = 1048576", "interactions-too-many-players"),
    case(lambda: interactions(players=four_players(), max_players=3), ValueError, "4 players exceed max_players=3",
         "interactions-players-over-max_players"),
    case(lambda: interactions(max_players=0), ValueError, "max_players must be a positive integer",
         "interactions-max_players-0"),
    case(lambda: interactions(layers=["output"]), ValueError, "'output' is reserved", "interactions-layer-output"),
    case(lambda: interactions(layers=["a", "a"]), ValueError, r"layers must not repeat a name, got \['a', 'a'\]",
         "interactions-layers-repeat"),
    case(lambda: interactions(layers=[""]), ValueError, r"layers must be a list of module names, .* got \[''\]",
         "interactions-layers-empty-name"),
    case(lambda: interactions(num_samples=0), ValueError, "num_samples must be a positive integer",
         "interactions-num_samples-0"),
    case(lambda: interactions(num_samples=40), ValueError, "num_samples=40 exceeds max_samples=32",
         "interactions-num_samples-over-max_samples"),
    case(lambda: interactions(tau=0), ValueError, r"tau must be a fraction .* in \(0, 1\)", "interactions-tau-0"),
    case(lambda: interactions(tau=NAN), ValueError, "tau .* got nan", "interactions-tau-nan"),
    case(lambda: interactions(tau="0.1"), ValueError, "tau .* got '0.1'", "interactions-tau-str"),
    case(lambda: interactions(kappa=-0.1), ValueError,
         r"kappa must be a fraction .* in \[0, 1\)", "interactions-kappa-neg"),
    case(lambda: interactions(kappa=NAN), ValueError, "kappa .* got nan", "interactions-kappa-nan"),
    case(lambda: interactions(solver_iterations=0), ValueError, "solver_iterations must be a positive integer",
         "interactions-solver_iterations-0"),
    case(lambda: interactions(forward_batch_size=0), ValueError, "forward_batch_size must be a positive integer",
         "interactions-forward_batch_size-0"),
    case(lambda: interactions(text_samples=-1), ValueError, "text_samples must be a non-negative integer, got -1",
         "interactions-text_samples-neg"),
    case(lambda: interactions(top_k=0), ValueError, "top_k must be a positive integer", "interactions-top_k-0"),
    case(lambda: interactions(probe_l2=-1), ValueError, "probe_l2 must be a finite number",
         "interactions-probe_l2-neg"),
    case(lambda: interactions(probe_l2=NAN), ValueError, "probe_l2 .* got nan", "interactions-probe_l2-nan"),
    case(lambda: interactions(baseline=NAN), ValueError, "baseline holds NaN or Inf", "interactions-baseline-nan"),
    case(lambda: interactions(baseline=torch.full((64,), INF)), ValueError, "baseline holds NaN or Inf",
         "interactions-baseline-inf-tensor"),
    case(lambda: interactions(baseline="zero"), TypeError, "baseline must be a tensor .* got str",
         "interactions-baseline-str"),
    case(lambda: im.FeatureGroups([], 4), ValueError, "assigns no element to any player", "players-none"),
    case(lambda: im.FeatureGroups([[0, 1], [1]], 4), ValueError, "Players overlap: element 1", "players-overlap"),
    case(lambda: im.FeatureGroups([5], 4), ValueError, r"indices outside 0\.\.3", "players-index-outside"),
    case(lambda: im.FeatureGroups([[0], []], 4), ValueError, "Player 1 is empty", "players-empty-player"),
    case(lambda: im.FeatureGroups([0, 1], 4, names=["a"]), ValueError, "names has 1 entries for 2 players",
         "players-names-length"),
    case(lambda: im.FeatureGroups([0, 1], 4, rest="drop"), ValueError, "rest must be one of", "players-rest-unknown"),
    case(lambda: im.ImagePatches((3, 3), (8, 8)), ValueError, r"grid \(3, 3\) does not divide the image 8x8",
         "patches-grid-not-dividing"),
    case(lambda: im.ImagePatches((0, 4), (8, 8)), ValueError, "grid must be .* positive ints", "patches-grid-0"),
    case(lambda: im.ImagePatches((4, 4), (8, 8), select=[16]), ValueError, r"distinct patch indices in 0\.\.15",
         "patches-select-outside"),
    case(lambda: im.ImagePatches((4, 4), (8, 8), select=[1, 1]), ValueError, "distinct patch indices",
         "patches-select-repeat"),
    case(lambda: im.ImagePatches((4, 4), (64,)), ValueError, r"image_shape must be \(H, W\) or \(C, H, W\)",
         "patches-image_shape-1d"),
    case(lambda: im.TokenPositions([0, 9], 8), ValueError, r"Player 1 has indices outside 0\.\.7",
         "tokens-position-outside"),
]

test_constructor_refuses_malformed_arguments = refused_at_construction(CONSTRUCTOR)


# ----------------------------------------------------------------- (b) checked against the model and probe data
AT_FIT = [
    at_fit(lambda: interactions(layers=["nope"]), ValueError, "No module named 'nope'.*'features.0'",
           "interactions-layer-unknown"),
    at_fit(lambda: interactions(players=four_players(32)), ValueError, r"players were built for samples of shape "
           r"\(32,\), but the probe inputs have shape \(64,\)", "interactions-players-wrong-size"),
    at_fit(lambda: interactions(players=im.ImagePatches((4, 4), (8, 8), select=[5, 6])), ValueError,
           r"shape \(8, 8\).*flatten=True", "interactions-patches-not-flattened"),
    at_fit(lambda: interactions(probe_data=(X, Y.float())), ValueError, "integer class targets y of shape",
           "interactions-targets-float"),
    at_fit(lambda: interactions(probe_data=(X, Y[:, None])), ValueError, r"targets y of shape \(N,\)",
           "interactions-targets-2d"),
    at_fit(lambda: interactions(probe_data=X), ValueError, "needs a classification head", "interactions-no-targets"),
    at_fit(lambda: interactions(probe_data=(X, Y + 10)), ValueError,
           r"labels run 10\.\.19, but 'the model output' has 10 outputs",
           "interactions-targets-out-of-range"),
    at_fit(lambda: interactions(num_samples=4, probe_data=(X[:3], Y[:3])), ValueError,
           "needs at least 4 probe samples, the probe set has 3", "interactions-probe-too-few"),
    at_fit(lambda: interactions(probe_data=(X[:0], Y[:0])), ValueError, "is empty", "interactions-probe-empty"),
    at_fit(lambda: interactions(probe_data=(X[:, :32], Y), players=four_players(32)), ValueError,
           NOT_RUNNABLE + r"\(32,\)", "interactions-probe-wrong-feature-count"),
    at_fit(lambda: interactions(probe_data=((X * 16).long(), Y)), ValueError, NOT_RUNNABLE + r".*torch.int64",
           "interactions-probe-integer-inputs"),
    at_fit(lambda: interactions(probe_data=(TOKENS, Y[:16]), players=im.TokenPositions([0, 1, 2], 4)), ValueError,
           r"probe inputs are torch.int64 \(token ids\?\): the default baseline .* pass the baseline token",
           "interactions-token-ids-without-baseline", model=token_model),
    at_fit(lambda: interactions(baseline=torch.zeros(5)), ValueError, r"baseline of shape \(5,\) does not fit one "
           r"sample of shape \(64,\)", "interactions-baseline-wrong-shape"),
    at_fit(lambda: interactions(probe_data=(X_NAN, Y), num_samples=4), ValueError, "logits hold NaN in",
           "interactions-probe-nan"),
    at_fit(lambda: interactions(probe_data=(X_NAN, Y), num_samples=4, layers=["features.1"]), ValueError,
           "features hold NaN or Inf; a linear probe cannot be fitted", "interactions-probe-nan-with-layers"),
    at_fit(lambda: interactions(), ValueError, "logits hold NaN", "interactions-head-nan",
           model=poisoned("classifier.weight")),
]

test_malformed_model_or_probe_data_fails_clearly = refused_at_fit(AT_FIT)


# ------------------------------------------------------- (b) run-time failures with on_error="warn": skip, no numbers
WARNED = [
    at_fit(lambda: interactions(probe_data=(X_NAN, Y), num_samples=4, on_error="warn"), None, "logits hold NaN",
           "interactions-probe-nan"),
    at_fit(lambda: interactions(probe_data=(X_NAN, Y), num_samples=4, layers=["features.3"], on_error="warn"), None,
           "features hold NaN or Inf", "interactions-probe-nan-with-layers"),
    at_fit(lambda: interactions(on_error="warn"), None, "logits hold NaN", "interactions-head-nan",
           model=poisoned("classifier.bias")),
]

test_failed_probe_warns_once_and_publishes_only_its_count = warned_and_skipped(WARNED)


# ------------------------------------------------------------------------------------------- (c) pure measures
_v = torch.randn(3, 8, dtype=F64, generator=torch.Generator().manual_seed(1))  # 3 games of 3 players


MEASURES = [
    case(lambda: im.sparse_and_or(torch.randn(8)), ValueError, r"v must have shape \(B, 2\^n\), got \(8,\)",
         "interactions.sparse_and_or-1d"),
    case(lambda: im.sparse_and_or(torch.randn(2, 3, 8)), ValueError, r"got \(2, 3, 8\)",
         "interactions.sparse_and_or-3d"),
    case(lambda: im.sparse_and_or(torch.randn(2, 6)), ValueError, "2\\^n subset values .* got 6",
         "interactions.sparse_and_or-not-power-of-2"),
    case(lambda: im.sparse_and_or(torch.randn(2, 0)), ValueError, "got 0", "interactions.sparse_and_or-empty"),
    case(lambda: im.sparse_and_or(poison(_v)), ValueError, "v holds NaN or Inf", "interactions.sparse_and_or-nan"),
    case(lambda: im.sparse_and_or(poison(_v, INF), method="sgd", sgd_steps=5), ValueError, "v holds NaN or Inf",
         "interactions.sparse_and_or-inf-sgd"),
    case(lambda: im.sparse_and_or(_v, kappa=-1), ValueError, "kappa must be a finite number ≥ 0",
         "interactions.sparse_and_or-kappa-neg"),
    case(lambda: im.sparse_and_or(_v, kappa=NAN, max_iter=50), ValueError, "kappa .* got nan",
         "interactions.sparse_and_or-kappa-nan"),
    case(lambda: im.sparse_and_or(_v, kappa=INF, max_iter=50), ValueError, "kappa .* got inf",
         "interactions.sparse_and_or-kappa-inf"),
    case(lambda: im.sparse_and_or(_v, max_iter=0), ValueError, "max_iter and check_every must be ≥ 1",
         "interactions.sparse_and_or-max_iter-0"),
    case(lambda: im.sparse_and_or(_v, step=NAN, max_iter=50), ValueError, "step > 0",
         "interactions.sparse_and_or-step-nan"),
    case(lambda: im.sparse_and_or(_v, tol=NAN, max_iter=50), ValueError, "tol ≥ 0",
         "interactions.sparse_and_or-tol-nan"),
    case(lambda: im.sparse_and_or(_v, method="cvx"), ValueError, "method must be 'admm', 'lp' or 'sgd'",
         "interactions.sparse_and_or-method"),
    case(lambda: im.and_or_interactions(poison(_v)), ValueError, "v holds NaN or Inf", "interactions.and_or-v-nan"),
    case(lambda: im.and_or_interactions(_v, gamma=poison(torch.zeros_like(_v))), ValueError, "gamma holds NaN",
         "interactions.and_or-gamma-nan"),
    case(lambda: im.and_or_interactions(_v, delta=torch.zeros(3, 4)), ValueError, r"delta must have the shape of v "
         r"\(3, 8\), got \(3, 4\)", "interactions.and_or-delta-shape"),
    case(lambda: im.and_or_interactions(torch.randn(2, 6)), ValueError, "got 6", "interactions.and_or-not-power-of-2"),
    case(lambda: im.reconstruct(torch.randn(2, 8), torch.randn(2, 4)), ValueError, "must have the same shape",
         "interactions.reconstruct-shapes"),
    case(lambda: im.zeta_transform(torch.randn(5)), ValueError, "2\\^n subset values .* got 5",
         "interactions.zeta-not-power-of-2"),
    case(lambda: im.mobius_transform(torch.randn(0)), ValueError, "got 0", "interactions.mobius-empty"),
    case(lambda: im.count_by_order(torch.zeros(2, 2, 6, dtype=torch.bool)), ValueError, "got 6",
         "interactions.count_by_order-not-power-of-2"),
    case(lambda: im.merge_first_order(torch.randn(2, 6), torch.randn(2, 6)), ValueError, "got 6",
         "interactions.merge_first_order-not-power-of-2"),
    case(lambda: im.log_odds(torch.randn(4, 3), torch.zeros(4)), ValueError, "targets must be integer class indices",
         "interactions.log_odds-float-targets"),
    case(lambda: im.log_odds(torch.randn(4), torch.zeros(4, dtype=torch.long)), ValueError,
         r"logits must have shape \(B, \.\.\., C\)", "interactions.log_odds-1d"),
    case(lambda: im.log_odds(torch.randn(4, 3), torch.full((4,), 3)), ValueError, r"targets must lie in 0\.\.2",
         "interactions.log_odds-targets-out-of-range"),
    case(lambda: im.log_odds(torch.tensor([[NAN, 0.0], [1.0, 0.0]]), torch.tensor([0, 0])), ValueError,
         "logits hold NaN in 1 rows", "interactions.log_odds-nan"),
    case(lambda: im.log_odds(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)), ValueError,
         r"target must have shape \(4,\) .* got \(5,\)", "interactions.log_odds-targets-length"),
    case(lambda: im.log_odds(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long)), ValueError,
         r"target must have shape \(4,\)", "interactions.log_odds-targets-2d"),
    case(lambda: im.fit_linear_probe(torch.tensor([[NAN], [1.0], [2.0], [3.0]]), torch.tensor([0, 0, 1, 1]), 2),
         ValueError, "features hold NaN or Inf", "interactions.fit_linear_probe-nan"),
    case(lambda: im.fit_linear_probe(torch.randn(0, 3), torch.zeros(0, dtype=torch.long), 2), ValueError,
         "N >= 1 samples", "interactions.fit_linear_probe-empty"),
    case(lambda: im.fit_linear_probe(torch.randn(4), torch.zeros(4, dtype=torch.long), 2), ValueError,
         r"shape \(N, \.\.\.\)", "interactions.fit_linear_probe-1d"),
    case(lambda: im.fit_linear_probe(torch.randn(4, 3), torch.zeros(3, dtype=torch.long), 2), ValueError,
         "4 feature rows for 3 labels", "interactions.fit_linear_probe-length"),
    case(lambda: im.fit_linear_probe(torch.randn(4, 3), torch.zeros(4), 2), ValueError,
         "labels must be integer classes",
         "interactions.fit_linear_probe-float-labels"),
    case(lambda: im.fit_linear_probe(torch.randn(4, 3), torch.full((4,), 5), 2), ValueError,
         r"class indices in 0\.\.1, .* values 5\.\.5", "interactions.fit_linear_probe-labels-out-of-range"),
    case(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(2, 4), im.FeatureGroups([0, 1], 4), torch.zeros(3)),
         ValueError, r"baseline of shape \(3,\) does not fit one sample of shape \(4,\)",
         "interactions.masked_outputs-baseline-shape"),
    case(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(2, 4), im.FeatureGroups([0, 1], 4),
                                   torch.zeros(2, 4)), ValueError, r"baseline of shape \(2, 4\) does not fit",
         "interactions.masked_outputs-baseline-batch"),
    case(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(0, 4), im.FeatureGroups([0, 1], 4), 0.0),
         ValueError, r"x has no samples", "interactions.masked_outputs-empty"),
    case(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randint(0, 5, (2, 4)), im.FeatureGroups([0, 1], 4)),
         ValueError, "default baseline .* needs float inputs", "interactions.masked_outputs-int-default-baseline"),
    case(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(2, 5), im.FeatureGroups([0, 1], 4)), ValueError,
         r"built for samples of shape \(4,\)", "interactions.masked_outputs-x-shape"),
    case(lambda: im.masked_outputs(lambda z: z, torch.randn(2, 4), im.FeatureGroups([0, 1], 4), 0.0, batch_size=0),
         ValueError, "batch_size must be positive", "interactions.masked_outputs-batch_size-0"),
    case(lambda: im.Players(torch.tensor([0.0, 1.0])), ValueError, "groups must be an integer tensor",
         "interactions.players-float-groups"),
    case(lambda: im.Players(torch.tensor([0, 2])), ValueError, r"Players \[1\] own no input element",
         "interactions.players-gap"),
    case(lambda: im.Players(torch.tensor([], dtype=torch.long)), ValueError, "assigns no element",
         "interactions.players-empty"),
    case(lambda: im.FeatureGroups([0, 1], 4).mask(torch.randn(2, 4), torch.ones(2, 3, dtype=torch.bool), 0.0),
         ValueError, r"keep must have shape \(R, 2\)", "interactions.players-mask-keep-shape"),
    case(lambda: im.subset_masks(-1), ValueError, r"n must be in \[0, 24\]", "interactions.subset_masks-negative"),
]

test_measure_refuses_malformed_tensors = refused_by_measures(MEASURES)


test_case_ids_are_unique = ids_are_unique(CONSTRUCTOR, AT_FIT, WARNED, MEASURES)
