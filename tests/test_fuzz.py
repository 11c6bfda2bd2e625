"""Fuzzing the monitors and the measures with malformed input: wrong shapes and dtypes, NaN / Inf, empty tensors,
unknown names, out-of-range options.

Every case must end in a clear exception (ValueError / TypeError / KeyError / FloatingPointError whose message
names the problem) or, for a probe that fails at run time with ``on_error="warn"``, in one warning and *no*
scalars: the monitor's history stays empty and nothing reaches ``trainer.callback_metrics``. Never a hang, never a
torch-internal shape error, never a NaN published as if it were a measurement.

Tables, one row per case (ids say what is malformed):

* ``CONSTRUCTOR``: bad arguments of the five monitors (and of the ``Players`` they take), refused at construction;
* ``AT_FIT``: arguments that only the model or the probe data can contradict, driven through the monitor's own
  Lightning hooks (``setup`` -> ``on_train_start`` -> ``on_train_batch_start``, which probes step 0) with
  ``on_error="raise"``;
* ``WARNED``: probes that fail at run time with ``on_error="warn"``;
* ``MEASURES``: the pure functions of :mod:`lightning_probes.measures` on malformed tensors.

Two short real fits check the same through ``Trainer.fit``. Each case is guarded by an alarm, so a hang fails the
case instead of the session.
"""

from __future__ import annotations

import math
import re
import signal
import threading

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_probes.datasets import ConceptProbe, load_digits_tensors
from lightning_probes.measures import condensation as cm
from lightning_probes.measures import explanations as ex
from lightning_probes.measures import interaction_basis as ib
from lightning_probes.measures import interactions as im
from lightning_probes.measures import spectrum as sm
from lightning_probes.models import MLPClassifier, ShapesCNN
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every
from lightning_probes.triggers import StopWhen

NAN, INF = float("nan"), float("inf")
F64 = torch.float64
HANG_SECONDS = 30  # every case takes well under a second; this only turns a hang into a failure

_x, _y = load_digits_tensors()
X, Y = _x[:64].clone(), _y[:64].clone()  # (64, 64) float in [0, 1], (64,) int64 with all 10 classes
X_NAN = X.clone()
X_NAN[3, 5] = NAN  # one poisoned pixel of one sample
X_INF = X.clone()
X_INF[7] = INF
CONCEPTS = torch.cat([nn.functional.one_hot(Y, 10).bool(), (X.sum(1) > X.sum(1).median())[:, None]], 1)  # (64, 11)
NAMES = [f"digit_{d}" for d in range(10)] + ["bold"]
LIB_LAYERS = ["features.0", "features.2", "classifier"]


# ---------------------------------------------------------------------------------------------------- plumbing
pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def no_hang():
    """Fail a case that runs for HANG_SECONDS instead of hanging the session (Python-level loops are interrupted)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def hang(signum, frame):
        raise TimeoutError(f"case still running after {HANG_SECONDS} s: a hang on malformed input")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def quiet_trainer() -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)


@pytest.fixture(scope="module")
def trainer() -> pl.Trainer:
    return quiet_trainer()


def mlp() -> MLPClassifier:
    torch.manual_seed(0)
    return MLPClassifier(hidden=(32, 32))


def poisoned(module: str, value: float = NAN):
    """An MLP whose parameter ``module`` (e.g. ``"classifier.weight"``) has one entry set to ``value``."""

    def make() -> MLPClassifier:
        model = mlp()
        with torch.no_grad():
            model.get_parameter(module).view(-1)[0] = value
        return model

    return make


class Wrap(pl.LightningModule):
    """Any nn.Module as a LightningModule (its modules are then named ``net.*``)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def one_linear() -> Wrap:
    return Wrap(nn.Linear(64, 10))


def single_neuron() -> Wrap:
    return Wrap(nn.Sequential(nn.Linear(64, 1), nn.ReLU(), nn.Linear(1, 10)))


def token_model() -> Wrap:
    """Takes token ids (B, 4) in 0..9: integer inputs are its normal input."""
    torch.manual_seed(0)
    return Wrap(nn.Sequential(nn.Embedding(10, 3), nn.Flatten(), nn.Linear(12, 10)))


TOKENS = torch.randint(0, 10, (16, 4), generator=torch.Generator().manual_seed(0))


def small_cnn() -> ShapesCNN:
    torch.manual_seed(0)
    return ShapesCNN(channels=(2, 2))


def probe(monitor, model, trainer: pl.Trainer) -> None:
    """Fit start and the step-0 probe, through the monitor's own Lightning hooks."""
    monitor.setup(trainer, model, "fit")  # check_model
    monitor.on_train_start(trainer, model)  # materialise the probe set, check it against the model
    monitor.on_train_batch_start(trainer, model, None, 0)  # at_start: probes step 0 (on_error applies)


# monitors with small, fast defaults; a case overrides what it breaks
def spectrum(**kw) -> FeatureSpectrumMonitor:
    return FeatureSpectrumMonitor(**{"probe_data": (X, Y), "images_every": 0, "on_error": "raise", **kw})


def condensation(**kw) -> CondensationMonitor:
    return CondensationMonitor(**{"images_every": 0, "on_error": "raise", **kw})


def four_players(num_features: int = 64) -> im.FeatureGroups:
    return im.FeatureGroups([[0, 1], [2, 3], [4, 5], [6, 7]], num_features)


def interactions(**kw) -> InteractionMonitor:
    players = kw.pop("players", None) or four_players()
    defaults = {"probe_data": (X, Y), "num_samples": 2, "max_samples": 32, "solver_iterations": 100,
                "images_every": 0, "on_error": "raise"}
    return InteractionMonitor(players, **{**defaults, **kw})


def lib(**kw) -> InteractionBasisMonitor:
    defaults = {"layers": LIB_LAYERS, "probe_data": (X, Y), "num_samples": 32, "images_every": 0,
                "on_error": "raise"}
    return InteractionBasisMonitor(**{**defaults, **kw})


def concepts(**kw) -> ConceptMonitor:
    defaults = {"layer": "features.1", "concepts": CONCEPTS, "concept_names": NAMES, "probe_data": (X, Y),
                "num_clusters": 3, "max_length": 2, "images_every": 0, "on_error": "raise"}
    return ConceptMonitor(**{**defaults, **kw})


def case(make, exc, match, id):
    return pytest.param(make, exc, match, id=id)


# ---------------------------------------------------------------------------------- (a) constructor arguments
CONSTRUCTOR = [
    # --- FeatureSpectrumMonitor (and the base Monitor arguments)
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
    case(lambda: spectrum(schedule=0), ValueError, r"every\(n\) needs a positive integer n, got 0", "base-schedule-0"),
    case(lambda: spectrum(schedule=-5), ValueError, "positive integer n, got -5", "base-schedule-negative"),
    case(lambda: spectrum(schedule="often"), TypeError, "schedule must be an int .* got str", "base-schedule-str"),
    case(lambda: spectrum(schedule=True), TypeError, "not a bool", "base-schedule-bool"),
    case(lambda: spectrum(probe_data="tset"), ValueError, "probe_data must be 'train', 'val', 'test'",
         "base-probe_data-name"),
    case(lambda: spectrum(probe_data=42), TypeError, "probe_data must be .* got int", "base-probe_data-int"),
    case(lambda: spectrum(probe_data=("x", "y")), TypeError, r"must hold tensors, e.g. a pair \(x, y\)",
         "base-probe_data-no-tensors"),
    case(lambda: spectrum(probe_data=(X, Y[:5])), ValueError, "x has 64 samples but y has 5",
         "base-probe_data-length-mismatch"),
    case(lambda: spectrum(max_samples=0), ValueError, "max_samples and batch_size must be positive integers",
         "base-max_samples-0"),
    case(lambda: spectrum(max_samples=2.5), ValueError, "must be positive integers, got 2.5",
         "base-max_samples-float"),
    case(lambda: spectrum(max_samples="64"), ValueError, "must be positive integers, got '64'", "base-max_samples-str"),
    case(lambda: spectrum(batch_size=-1), ValueError, "must be positive integers, got 512, -1", "base-batch_size-neg"),
    case(lambda: spectrum(triggers=["MF"]), TypeError, r"triggers must be Trigger objects .* got str",
         "base-trigger-str"),
    case(lambda: spectrum(on_error="ignore"), ValueError, "on_error must be 'warn' or 'raise'",
         "base-on_error-unknown"),
    case(lambda: spectrum(images_every=-1), ValueError, "images_every must be a non-negative integer",
         "base-images_every-neg"),
    case(lambda: spectrum(images_every=1.5), ValueError, "images_every must be a non-negative integer, got 1.5",
         "base-images_every-float"),
    # --- CondensationMonitor
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
    # --- InteractionMonitor and its players
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
    case(lambda: interactions(kappa=-0.1), ValueError, r"kappa must be a fraction .* in \[0, 1\)", "interactions-kappa-neg"),
    case(lambda: interactions(kappa=NAN), ValueError, "kappa .* got nan", "interactions-kappa-nan"),
    case(lambda: interactions(solver_iterations=0), ValueError, "solver_iterations must be a positive integer",
         "interactions-solver_iterations-0"),
    case(lambda: interactions(forward_batch_size=0), ValueError, "forward_batch_size must be a positive integer",
         "interactions-forward_batch_size-0"),
    case(lambda: interactions(text_samples=-1), ValueError, "text_samples must be a non-negative integer, got -1", "interactions-text_samples-neg"),
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
    # --- InteractionBasisMonitor
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
    # --- ConceptMonitor
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
    case(lambda: concepts(first_beam="10"), ValueError, "first_beam must be a positive integer, got '10'", "concepts-first_beam-str"),
    case(lambda: concepts(max_samples=10), ValueError, "would cut the probe set below the 64 samples",
         "concepts-max_samples-below"),
    case(lambda: concepts(concepts=ConceptProbe(X, CONCEPTS, NAMES, Y), concept_names=None), ValueError,
         "a ConceptProbe carries its own probe inputs", "concepts-probe-and-probe_data"),
    case(lambda: ConceptProbe(X[:10], CONCEPTS, NAMES), ValueError, "inputs have 10 samples but concepts 64",
         "concepts-probe-length-mismatch"),
    case(lambda: concepts(layer=""), ValueError, "layer must be the name of a module", "concepts-layer-empty"),
    case(lambda: concepts(layer=3), ValueError, "layer must be the name of a module .* got 3", "concepts-layer-int"),
]


@pytest.mark.parametrize(("make", "exc", "match"), CONSTRUCTOR)
def test_constructor_refuses_malformed_arguments(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


# ----------------------------------------------------------------- (b) checked against the model and probe data
def at_fit(make, exc, match, id, model=mlp):
    return pytest.param(make, model, exc, match, id=id)


NOT_RUNNABLE = r"the model cannot run on the probe inputs \(samples of shape "

AT_FIT = [
    # --- FeatureSpectrumMonitor
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
    at_fit(lambda: spectrum(probe_data=(X, Y[:, None])), ValueError, r"labels must be a 1-D tensor of class indices, got torch.int64 of shape \(64, 1\)",
           "spectrum-targets-2d"),
    at_fit(lambda: spectrum(probe_data=(X, Y + 10)), ValueError, r"the probe labels run 10\.\.19, but 'classifier' has 10 outputs",
           "spectrum-targets-out-of-range"),
    at_fit(lambda: spectrum(probe_data=(X, Y - 1)), ValueError, r"labels run -1\.\.8, but 'classifier' has 10 outputs \(classes 0\.\.9\); 8 of 64",
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
    # --- CondensationMonitor
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
    # --- InteractionMonitor
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
    at_fit(lambda: interactions(probe_data=(X, Y + 10)), ValueError, r"labels run 10\.\.19, but 'the model output' has 10 outputs",
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
    # --- InteractionBasisMonitor
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
    # --- ConceptMonitor
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


@pytest.mark.parametrize(("make", "model", "exc", "match"), AT_FIT)
def test_malformed_model_or_probe_data_fails_clearly(make, model, exc, match, trainer):
    monitor = make()
    with pytest.raises(exc, match=match):
        probe(monitor, model(), trainer)
    assert monitor.history == []  # nothing was measured, so nothing was recorded


# ------------------------------------------------------- (b) run-time failures with on_error="warn": skip, no numbers
WARNED = [
    at_fit(lambda: spectrum(probe_data=(X_NAN, Y), on_error="warn"), None, "features hold NaN or Inf in 1 of 64",
           "spectrum-probe-nan"),
    at_fit(lambda: spectrum(on_error="warn"), None, "head's weight or bias holds NaN", "spectrum-head-nan",
           model=poisoned("classifier.weight")),
    at_fit(lambda: condensation(on_error="warn"), None, "'features.0' has NaN or inf weights", "condensation-nan",
           model=poisoned("features.0.weight")),
    at_fit(lambda: interactions(probe_data=(X_NAN, Y), num_samples=4, on_error="warn"), None, "logits hold NaN",
           "interactions-probe-nan"),
    at_fit(lambda: interactions(probe_data=(X_NAN, Y), num_samples=4, layers=["features.3"], on_error="warn"), None,
           "features hold NaN or Inf", "interactions-probe-nan-with-layers"),
    at_fit(lambda: interactions(on_error="warn"), None, "logits hold NaN", "interactions-head-nan",
           model=poisoned("classifier.bias")),
    at_fit(lambda: lib(probe_data=(X_NAN, Y), on_error="warn"), None, "contain NaN or Inf", "lib-probe-nan"),
    at_fit(lambda: lib(probe_data=(X_INF, Y), on_error="warn"), None, "contain NaN or Inf", "lib-probe-inf"),
    at_fit(lambda: concepts(probe_data=(X_NAN, Y), on_error="warn"), None, "NaN or infinite values",
           "concepts-probe-nan"),
]


@pytest.mark.parametrize(("make", "model", "exc", "match"), WARNED)
def test_failed_probe_warns_once_and_publishes_only_its_count(make, model, exc, match):
    trainer = quiet_trainer()  # its own callback_metrics, so "nothing published" is this case's alone
    monitor = make()
    with pytest.warns(UserWarning, match=rf"\[lightning-probes/{monitor.name}\] probe at step 0 failed and was "
                                         rf"skipped \(\w+: .*{match}"):
        probe(monitor, model(), trainer)
    assert monitor.history == [] and monitor.failures == 1
    # only the failure count is published (see test_run_logs): no measurement of the failed probe
    published = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(monitor.prefix)}
    assert published == {monitor.prefix + "failed_probes": 1.0}
    first, *failures = monitor.summary().splitlines()
    assert first == f"[{monitor.name}] no successful probe (1 failed)."
    assert failures[0] == f"[{monitor.name}] 1 probe(s) failed, the last 1 in a row:" and "step 0:" in failures[1]


# ------------------------------------------------------------------------------------ the same through Trainer.fit
def digits_loader() -> DataLoader:
    return DataLoader(TensorDataset(X, Y), batch_size=16)


def test_fit_with_nan_probe_data_warns_skips_every_probe_and_trains_on():
    monitor = FeatureSpectrumMonitor(probe_data=(X_NAN, Y), schedule=every(1), images_every=0)
    pl.seed_everything(0, verbose=False)
    t = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    with pytest.warns(UserWarning, match="NaN or Inf in 1 of 64") as record:
        t.fit(mlp(), digits_loader())
    assert t.global_step == 2  # training was not interrupted
    assert monitor.history == [] and monitor.failures == 3  # steps 0, 1 and 2 probed, all skipped
    # one warning for the kind of failure, one more when three probes in a row have failed (_failures.py)
    messages = [str(w.message) for w in record if "lightning-probes" in str(w.message)]
    assert len(messages) == 2 and "probe at step 0 failed" in messages[0] and "3 probes in a row" in messages[1]
    assert [k for k in t.callback_metrics if k.startswith("probes/")] == ["probes/spectrum/failed_probes"]
    assert all(math.isfinite(float(v)) for v in t.callback_metrics.values())


def test_fit_with_probe_data_the_model_cannot_take_fails_at_fit_start_even_with_warn():
    monitor = InteractionMonitor(four_players(32), num_samples=2, max_samples=32, probe_data=(X[:, :32], Y),
                                 on_error="warn")
    t = pl.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])
    with pytest.raises(ValueError, match=re.escape("InteractionMonitor: the model cannot run on the probe inputs "
                                                   "(samples of shape (32,), dtype torch.float32)")):
        t.fit(mlp(), digits_loader())
    assert t.global_step == 0 and monitor.history == []


# ------------------------------------------------------------------------------------------- (c) pure measures
_phi = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
_cls = torch.arange(20) % 3
_stats = sm.FeatureStatisticsValue.from_features(_phi, _cls, 3)
_v = torch.randn(3, 8, dtype=F64, generator=torch.Generator().manual_seed(1))  # 3 games of 3 players
_lin = nn.Linear(3, 2).double()
_a0 = torch.randn(20, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
with torch.no_grad():
    _a1 = _lin(_a0)
_bases = ib.interaction_basis([_lin], [_a0, _a1])
_table = ex.prepare_concepts(torch.tensor([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 1]]).bool())
_unit = torch.tensor([True, False, False, False])


def poison(t: torch.Tensor, value: float = NAN) -> torch.Tensor:
    out = t.clone()
    out.view(-1)[1] = value
    return out


def stats_update(features, targets, num_outputs=3, classification=True):
    """Feed one batch to fresh statistics of p = 4 features."""
    return lambda: sm.FeatureStatistics(4, num_outputs, classification).update(features, targets)


def m(fn, exc, match, id):
    return pytest.param(fn, exc, match, id=id)


MEASURES = [
    # --- spectrum
    m(stats_update(_phi[:, 0], _cls), ValueError, r"features must have shape \(B, 4\), got \(20,\)",
      "spectrum.stats-features-1d"),
    m(lambda: sm.FeatureStatistics(5, 3).update(_phi, _cls), ValueError, r"shape \(B, 5\), got \(20, 4\)",
      "spectrum.stats-features-width"),
    m(stats_update(_phi, _cls[:5]), ValueError, "20 feature rows but 5 targets", "spectrum.stats-targets-length"),
    m(stats_update(_phi, _cls.float()), ValueError, "1-D tensor of class indices", "spectrum.stats-targets-float"),
    m(stats_update(_phi, _cls + 1), ValueError, r"class indices must lie in \[0, 3\); got 1\.\.3",
      "spectrum.stats-targets-out-of-range"),
    m(stats_update(_phi, torch.full((20, 2), NAN), 2, False), ValueError, "regression targets hold NaN or Inf in 20 "
      "of 20", "spectrum.stats-regression-targets-nan"),
    m(lambda: sm.FeatureStatistics(0, 3), ValueError, "must be positive, got 0, 3", "spectrum.stats-no-features"),
    m(lambda: sm.summarise(sm.FeatureStatisticsValue.from_features(poison(_phi), _cls, 3), torch.randn(3, 4), None),
      FloatingPointError, "features hold NaN or Inf in 1 of 20", "spectrum.summarise-features-nan"),
    m(lambda: sm.summarise(sm.FeatureStatisticsValue.from_features(_phi[:0], _cls[:0], 3), torch.randn(3, 4), None),
      ValueError, "no probe samples were seen", "spectrum.summarise-empty"),
    m(lambda: sm.summarise(_stats, poison(torch.randn(3, 4)), None), FloatingPointError, "weight or bias holds NaN",
      "spectrum.summarise-weight-nan"),
    m(lambda: sm.summarise(_stats, torch.randn(3, 4), torch.tensor([0.0, INF, 0.0])), FloatingPointError,
      "weight or bias holds NaN or Inf", "spectrum.summarise-bias-inf"),
    m(lambda: sm.summarise(_stats, torch.randn(3, 5), None), ValueError, r"\(C, 4\) head weight .* got \(3, 5\)",
      "spectrum.summarise-weight-width"),
    m(lambda: sm.summarise(_stats, torch.randn(4), None), ValueError, r"head weight .* got \(4,\)",
      "spectrum.summarise-weight-1d"),
    m(lambda: sm.summarise(_stats, torch.randn(3, 4), torch.randn(5)), ValueError, r"bias must have shape \(3,\)",
      "spectrum.summarise-bias-shape"),
    m(lambda: sm.summarise(_stats, torch.randn(3, 4), None, power_threshold=NAN), ValueError,
      "power_threshold must be in", "spectrum.summarise-threshold-nan"),
    m(lambda: sm.summarise(_stats, torch.randn(3, 4), None, gap=NAN), ValueError, "gap is a ratio .* got nan",
      "spectrum.summarise-gap-nan"),
    m(lambda: sm.diagonalise(torch.tensor([[1.0, NAN], [NAN, 1.0]])), ValueError, "second_moment holds NaN or Inf",
      "spectrum.diagonalise-nan"),
    m(lambda: sm.diagonalise(torch.randn(3, 4)), ValueError, r"square \(p, p\) matrix, got shape \(3, 4\)",
      "spectrum.diagonalise-not-square"),
    m(lambda: sm.diagonalise(torch.randn(3)), ValueError, r"square .* got shape \(3,\)", "spectrum.diagonalise-1d"),
    m(lambda: sm.kernel_diagonalise(poison(_phi)), ValueError, "features hold NaN or Inf",
      "spectrum.kernel_diagonalise-nan"),
    m(lambda: sm.kernel_diagonalise(torch.tensor([[1.0, NAN, 0.0]])), ValueError, "features hold NaN or Inf",
      "spectrum.kernel_diagonalise-nan-wide"),
    m(lambda: sm.kernel_diagonalise(torch.randn(5)), ValueError, r"non-empty \(N, p\) matrix, got shape \(5,\)",
      "spectrum.kernel_diagonalise-1d"),
    m(lambda: sm.kernel_diagonalise(torch.zeros(0, 3)), ValueError, r"non-empty .* got shape \(0, 3\)",
      "spectrum.kernel_diagonalise-empty"),
    m(lambda: sm.participation_ratio(torch.tensor([1.0, NAN])), ValueError, "finite and non-negative",
      "spectrum.participation_ratio-nan"),
    m(lambda: sm.participation_ratio(torch.tensor([1.0, -1.0])), ValueError, "finite and non-negative",
      "spectrum.participation_ratio-negative"),
    m(lambda: sm.neural_collapse(sm.FeatureStatisticsValue.from_features(_phi, torch.zeros(20, dtype=torch.long), 3)),
      ValueError, "at least 2 classes in the probe set, found 1", "spectrum.neural_collapse-one-class"),
    m(lambda: sm.neural_collapse(sm.FeatureStatisticsValue.from_features(poison(_phi, INF), _cls, 3)),
      FloatingPointError, "features hold NaN or Inf in 1 of 20", "spectrum.neural_collapse-features-inf"),
    m(lambda: sm.neural_collapse(_stats, torch.randn(3, 7)), ValueError, r"\(C, p\) = \(3, 4\) head weight, got "
      r"\(3, 7\)", "spectrum.neural_collapse-weight-shape"),
    m(lambda: sm.nearest_class_mean(torch.randn(4, 3), torch.randn(2, 5)), ValueError, "must share p",
      "spectrum.nearest_class_mean-widths"),
    # --- condensation
    m(lambda: cm.condensation_stats(torch.randn(5)), ValueError, r"weight must be a 2-D .* got shape \(5,\)",
      "condensation.stats-weight-1d"),
    m(lambda: cm.condensation_stats(torch.randn(5, 2, 2)), ValueError, "flatten convolution kernels",
      "condensation.stats-weight-3d"),
    m(lambda: cm.condensation_stats(torch.randn(5, 3), torch.randn(4)), ValueError, r"bias must have shape \(5,\)",
      "condensation.stats-bias-shape"),
    m(lambda: cm.condensation_stats(poison(torch.randn(5, 3))), ValueError, "contains NaN or inf",
      "condensation.stats-weight-nan"),
    m(lambda: cm.condensation_stats(torch.randn(5, 3), poison(torch.randn(5), INF)), ValueError, "contains NaN or inf",
      "condensation.stats-bias-inf"),
    m(lambda: cm.condensation_stats(torch.randn(0, 3)), ValueError, r"weight \(0, 3\) has no neurons",
      "condensation.stats-no-neurons"),
    m(lambda: cm.condensation_stats(torch.randn(5, 3), initial_weight=torch.randn(5, 4)), ValueError,
      r"initial_weight of shape \(5, 4\) does not match", "condensation.stats-initial-shape"),
    m(lambda: cm.condensation_stats(torch.randn(5, 3), initial_weight=poison(torch.randn(5, 3))), ValueError,
      "relative change is undefined", "condensation.stats-initial-nan"),
    m(lambda: cm.relative_change(torch.randn(5, 3), torch.full((5, 3), NAN)), ValueError,
      "initial weights contain NaN or inf", "condensation.relative_change-nan"),
    m(lambda: cm.condensation_stats(torch.randn(5, 3), threshold=NAN), ValueError, r"cosine level in \(0, 1\]",
      "condensation.stats-threshold-nan"),
    m(lambda: cm.condensation_stats(torch.randn(5, 3), max_neurons=1), ValueError, "max_neurons must be at least 2",
      "condensation.stats-max_neurons-1"),
    m(lambda: cm.condensed_directions(torch.randn(3, 4)), ValueError, r"square \(m, m\) matrix",
      "condensation.condensed_directions-not-square"),
    m(lambda: cm.condensed_directions(torch.tensor([[1.0, NAN], [NAN, 1.0]])), ValueError, "only finite values",
      "condensation.condensed_directions-nan"),
    m(lambda: cm.cluster_order(torch.tensor([0, 1]), torch.eye(3)), ValueError, r"cosine must be \(2, 2\)",
      "condensation.cluster_order-mismatch"),
    m(lambda: cm.effective_rank(torch.tensor([[NAN]])), ValueError, "contains NaN or inf",
      "condensation.effective_rank-nan"),
    m(lambda: cm.stable_rank(torch.randn(3)), ValueError, "weight must be a 2-D", "condensation.stable_rank-1d"),
    # --- interactions: Harsanyi / AND-OR, solver, games
    m(lambda: im.sparse_and_or(torch.randn(8)), ValueError, r"v must have shape \(B, 2\^n\), got \(8,\)",
      "interactions.sparse_and_or-1d"),
    m(lambda: im.sparse_and_or(torch.randn(2, 3, 8)), ValueError, r"got \(2, 3, 8\)", "interactions.sparse_and_or-3d"),
    m(lambda: im.sparse_and_or(torch.randn(2, 6)), ValueError, "2\\^n subset values .* got 6",
      "interactions.sparse_and_or-not-power-of-2"),
    m(lambda: im.sparse_and_or(torch.randn(2, 0)), ValueError, "got 0", "interactions.sparse_and_or-empty"),
    m(lambda: im.sparse_and_or(poison(_v)), ValueError, "v holds NaN or Inf", "interactions.sparse_and_or-nan"),
    m(lambda: im.sparse_and_or(poison(_v, INF), method="sgd", sgd_steps=5), ValueError, "v holds NaN or Inf",
      "interactions.sparse_and_or-inf-sgd"),
    m(lambda: im.sparse_and_or(_v, kappa=-1), ValueError, "kappa must be a finite number ≥ 0",
      "interactions.sparse_and_or-kappa-neg"),
    m(lambda: im.sparse_and_or(_v, kappa=NAN, max_iter=50), ValueError, "kappa .* got nan",
      "interactions.sparse_and_or-kappa-nan"),
    m(lambda: im.sparse_and_or(_v, kappa=INF, max_iter=50), ValueError, "kappa .* got inf",
      "interactions.sparse_and_or-kappa-inf"),
    m(lambda: im.sparse_and_or(_v, max_iter=0), ValueError, "max_iter and check_every must be ≥ 1",
      "interactions.sparse_and_or-max_iter-0"),
    m(lambda: im.sparse_and_or(_v, step=NAN, max_iter=50), ValueError, "step > 0",
      "interactions.sparse_and_or-step-nan"),
    m(lambda: im.sparse_and_or(_v, tol=NAN, max_iter=50), ValueError, "tol ≥ 0",
      "interactions.sparse_and_or-tol-nan"),
    m(lambda: im.sparse_and_or(_v, method="cvx"), ValueError, "method must be 'admm', 'lp' or 'sgd'",
      "interactions.sparse_and_or-method"),
    m(lambda: im.and_or_interactions(poison(_v)), ValueError, "v holds NaN or Inf", "interactions.and_or-v-nan"),
    m(lambda: im.and_or_interactions(_v, gamma=poison(torch.zeros_like(_v))), ValueError, "gamma holds NaN",
      "interactions.and_or-gamma-nan"),
    m(lambda: im.and_or_interactions(_v, delta=torch.zeros(3, 4)), ValueError, r"delta must have the shape of v "
      r"\(3, 8\), got \(3, 4\)", "interactions.and_or-delta-shape"),
    m(lambda: im.and_or_interactions(torch.randn(2, 6)), ValueError, "got 6", "interactions.and_or-not-power-of-2"),
    m(lambda: im.reconstruct(torch.randn(2, 8), torch.randn(2, 4)), ValueError, "must have the same shape",
      "interactions.reconstruct-shapes"),
    m(lambda: im.zeta_transform(torch.randn(5)), ValueError, "2\\^n subset values .* got 5",
      "interactions.zeta-not-power-of-2"),
    m(lambda: im.mobius_transform(torch.randn(0)), ValueError, "got 0", "interactions.mobius-empty"),
    m(lambda: im.count_by_order(torch.zeros(2, 2, 6, dtype=torch.bool)), ValueError, "got 6",
      "interactions.count_by_order-not-power-of-2"),
    m(lambda: im.merge_first_order(torch.randn(2, 6), torch.randn(2, 6)), ValueError, "got 6",
      "interactions.merge_first_order-not-power-of-2"),
    m(lambda: im.log_odds(torch.randn(4, 3), torch.zeros(4)), ValueError, "targets must be integer class indices",
      "interactions.log_odds-float-targets"),
    m(lambda: im.log_odds(torch.randn(4), torch.zeros(4, dtype=torch.long)), ValueError,
      r"logits must have shape \(B, \.\.\., C\)", "interactions.log_odds-1d"),
    m(lambda: im.log_odds(torch.randn(4, 3), torch.full((4,), 3)), ValueError, r"targets must lie in 0\.\.2",
      "interactions.log_odds-targets-out-of-range"),
    m(lambda: im.log_odds(torch.tensor([[NAN, 0.0], [1.0, 0.0]]), torch.tensor([0, 0])), ValueError,
      "logits hold NaN in 1 rows", "interactions.log_odds-nan"),
    m(lambda: im.log_odds(torch.randn(4, 3), torch.zeros(5, dtype=torch.long)), ValueError,
      r"target must have shape \(4,\) .* got \(5,\)", "interactions.log_odds-targets-length"),
    m(lambda: im.log_odds(torch.randn(4, 3), torch.zeros(4, 1, dtype=torch.long)), ValueError,
      r"target must have shape \(4,\)", "interactions.log_odds-targets-2d"),
    m(lambda: im.fit_linear_probe(torch.tensor([[NAN], [1.0], [2.0], [3.0]]), torch.tensor([0, 0, 1, 1]), 2),
      ValueError, "features hold NaN or Inf", "interactions.fit_linear_probe-nan"),
    m(lambda: im.fit_linear_probe(torch.randn(0, 3), torch.zeros(0, dtype=torch.long), 2), ValueError,
      "N >= 1 samples", "interactions.fit_linear_probe-empty"),
    m(lambda: im.fit_linear_probe(torch.randn(4), torch.zeros(4, dtype=torch.long), 2), ValueError,
      r"shape \(N, \.\.\.\)", "interactions.fit_linear_probe-1d"),
    m(lambda: im.fit_linear_probe(torch.randn(4, 3), torch.zeros(3, dtype=torch.long), 2), ValueError,
      "4 feature rows for 3 labels", "interactions.fit_linear_probe-length"),
    m(lambda: im.fit_linear_probe(torch.randn(4, 3), torch.zeros(4), 2), ValueError, "labels must be integer classes",
      "interactions.fit_linear_probe-float-labels"),
    m(lambda: im.fit_linear_probe(torch.randn(4, 3), torch.full((4,), 5), 2), ValueError,
      r"class indices in 0\.\.1, .* values 5\.\.5", "interactions.fit_linear_probe-labels-out-of-range"),
    m(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(2, 4), im.FeatureGroups([0, 1], 4), torch.zeros(3)),
      ValueError, r"baseline of shape \(3,\) does not fit one sample of shape \(4,\)",
      "interactions.masked_outputs-baseline-shape"),
    m(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(2, 4), im.FeatureGroups([0, 1], 4),
                                torch.zeros(2, 4)), ValueError, r"baseline of shape \(2, 4\) does not fit",
      "interactions.masked_outputs-baseline-batch"),
    m(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(0, 4), im.FeatureGroups([0, 1], 4), 0.0),
      ValueError, r"x has no samples", "interactions.masked_outputs-empty"),
    m(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randint(0, 5, (2, 4)), im.FeatureGroups([0, 1], 4)),
      ValueError, "default baseline .* needs float inputs", "interactions.masked_outputs-int-default-baseline"),
    m(lambda: im.masked_outputs(lambda z: z.sum(-1), torch.randn(2, 5), im.FeatureGroups([0, 1], 4)), ValueError,
      r"built for samples of shape \(4,\)", "interactions.masked_outputs-x-shape"),
    m(lambda: im.masked_outputs(lambda z: z, torch.randn(2, 4), im.FeatureGroups([0, 1], 4), 0.0, batch_size=0),
      ValueError, "batch_size must be positive", "interactions.masked_outputs-batch_size-0"),
    m(lambda: im.Players(torch.tensor([0.0, 1.0])), ValueError, "groups must be an integer tensor",
      "interactions.players-float-groups"),
    m(lambda: im.Players(torch.tensor([0, 2])), ValueError, r"Players \[1\] own no input element",
      "interactions.players-gap"),
    m(lambda: im.Players(torch.tensor([], dtype=torch.long)), ValueError, "assigns no element",
      "interactions.players-empty"),
    m(lambda: im.FeatureGroups([0, 1], 4).mask(torch.randn(2, 4), torch.ones(2, 3, dtype=torch.bool), 0.0),
      ValueError, r"keep must have shape \(R, 2\)", "interactions.players-mask-keep-shape"),
    m(lambda: im.subset_masks(-1), ValueError, r"n must be in \[0, 24\]", "interactions.subset_masks-negative"),
    # --- interaction basis (LIB)
    m(lambda: ib.whitened_pca(poison(_a0)), ValueError, "activations contain NaN or Inf", "lib.whitened_pca-nan"),
    m(lambda: ib.whitened_pca(_a0[:1]), ValueError, "at least 2 samples", "lib.whitened_pca-one-sample"),
    m(lambda: ib.whitened_pca(_a0[:0]), ValueError, r"at least 2 samples .* got shape \(0, 3\)",
      "lib.whitened_pca-empty"),
    m(lambda: ib.whitened_pca(torch.tensor(1.0)), ValueError, r"at least 2 samples .* got shape \(\)",
      "lib.whitened_pca-0d"),
    m(lambda: ib.whitened_pca(_a0, truncation=NAN), ValueError, "truncation must be a positive finite threshold",
      "lib.whitened_pca-truncation-nan"),
    m(lambda: ib.augment(_a0[:, 0]), ValueError, r"shape \(N, \.\.\.\) with a feature axis", "lib.augment-1d"),
    m(lambda: ib.interaction_basis([_lin], [_a0]), ValueError, "one more node activation than sections",
      "lib.basis-activation-count"),
    m(lambda: ib.interaction_basis([_lin], [_a0, _a1[:, :1]]), ValueError, r"maps activations\[0\] to shape \(20, 2\)",
      "lib.basis-wrong-next-shape"),
    m(lambda: ib.interaction_basis([_lin], [_a0, _a1[:5]]), ValueError, r"activations\[1\] has 5 samples",
      "lib.basis-sample-count"),
    m(lambda: ib.interaction_basis([], [_a0]), ValueError, "at least one section", "lib.basis-no-sections"),
    m(lambda: ib.interaction_basis([_lin], [_a0, poison(_a1)]), ValueError, r"activations\[1\] contain NaN or Inf",
      "lib.basis-nan"),
    m(lambda: ib.interaction_basis([_lin], [poison(_a0), _a1], check=False), ValueError, "contain NaN or Inf",
      "lib.basis-nan-unchecked"),
    m(lambda: ib.interaction_basis([_lin], [_a0, _a1], truncation=NAN), ValueError, "truncation .* got nan",
      "lib.basis-truncation-nan"),
    m(lambda: ib.interaction_basis([_lin], [_a0, _a1], final_basis="svd"), ValueError, "final_basis must be",
      "lib.basis-final_basis"),
    m(lambda: ib.interaction_graph([nn.Linear(3, 2)], [_a0, _a1]), ValueError, r"sections\[0\] cannot run on "
      r"activations\[0\] \(shape \(20, 3\), dtype torch.float64\)", "lib.graph-section-dtype"),
    m(lambda: ib.edges_for_mass(torch.tensor([[NAN, 1.0], [2.0, 3.0]]), 0.9), ValueError,
      "edges must be finite and non-negative", "lib.edges_for_mass-nan"),
    m(lambda: ib.edges_for_mass(torch.tensor([[INF, 1.0]]), 0.9), ValueError, "finite and non-negative",
      "lib.edges_for_mass-inf"),
    m(lambda: ib.edges_for_mass(torch.tensor([[-5.0, 1.0]]), 0.9), ValueError, "finite and non-negative",
      "lib.edges_for_mass-negative"),
    m(lambda: ib.edges_for_mass(torch.ones(2, 2), NAN), ValueError, r"fraction must lie in \(0, 1\]",
      "lib.edges_for_mass-fraction-nan"),
    m(lambda: next(ib.lib_jacobians(_lin, _a0, torch.eye(3, dtype=F64), mode="x")), ValueError,
      "mode must be 'auto', 'rev', 'fwd' or 'dense'", "lib.jacobians-mode"),
    m(lambda: next(ib.lib_jacobians(_lin, _a0, torch.eye(3, dtype=F64), 0)), ValueError,
      "max_jacobian_elements must be positive", "lib.jacobians-max-elements-0"),
    m(lambda: next(ib.lib_jacobians(_lin, _a0, torch.eye(5, dtype=F64))), ValueError,
      r"next_basis must be .* C \(3, k\) .* got shape \(5, 5\)", "lib.jacobians-basis-shape"),
    m(lambda: next(ib.lib_jacobians(_lin, poison(_a0), torch.eye(3, dtype=F64), mode="rev")), ValueError,
      "activations contain NaN or Inf", "lib.jacobians-nan"),
    m(lambda: ib.edge_matrix(_lin, poison(_a0), _bases.lib[0], _bases.lib[1]), ValueError, "contain NaN or Inf",
      "lib.edge_matrix-nan"),
    m(lambda: ib.interaction_edges([_lin], [_a0, _a1], _bases.lib[:1]), ValueError,
      "L sections, L\\+1 activations and L\\+1 bases", "lib.edges-basis-count"),
    m(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.zeros(5, dtype=torch.long)), ValueError,
      "20 activations but 5 targets", "lib.ablation-targets-length"),
    m(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.rand(20)), ValueError,
      "targets must be 1-D class indices, got dtype torch.float32", "lib.ablation-targets-float"),
    m(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.zeros(20, 1, dtype=torch.long)), ValueError,
      r"1-D class indices.*shape \(20, 1\)", "lib.ablation-targets-2d"),
    m(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.full((20,), 7)), ValueError,
      r"targets must lie in 0\.\.1 \(the output has 2 classes\)", "lib.ablation-targets-out-of-range"),
    m(lambda: ib.ablation_curve([_lin], poison(_a0), _bases.lib[0], torch.zeros(20, dtype=torch.long)), ValueError,
      "contain NaN or Inf", "lib.ablation-activations-nan"),
    m(lambda: ib.ablation_curve([_lin], _a0, _bases.lib[0], torch.zeros(20, dtype=torch.long), ks=[99]), ValueError,
      r"ks must lie in \[0, 3\]", "lib.ablation-ks"),
    # --- concept explanations and formula search
    m(lambda: ex.kmeans_1d(torch.tensor([0.0, NAN, 1.0]), 2), ValueError, "finite, sorted and strictly increasing",
      "explanations.kmeans-nan"),
    m(lambda: ex.kmeans_1d(torch.tensor([3.0, 1.0, 2.0]), 2), ValueError, "sorted and strictly increasing",
      "explanations.kmeans-unsorted"),
    m(lambda: ex.kmeans_1d(torch.tensor([1.0, 1.0, 2.0]), 2), ValueError, "strictly increasing",
      "explanations.kmeans-repeated-value"),
    m(lambda: ex.kmeans_1d(torch.rand(3, 3), 2), ValueError, r"1-D tensor, got shape \(3, 3\)",
      "explanations.kmeans-2d"),
    m(lambda: ex.kmeans_1d(torch.tensor([]), 1), ValueError, r"num_clusters must be in \[1, 0\]",
      "explanations.kmeans-empty"),
    m(lambda: ex.kmeans_1d(torch.tensor([0.0, 1.0]), 3), ValueError, r"in \[1, 2\] .* got 3",
      "explanations.kmeans-too-many-clusters"),
    m(lambda: ex.kmeans_1d(torch.tensor([0.0, 1.0, 2.0]), 2, torch.ones(2)), ValueError,
      r"weights must be positive, one per value \(3,\)", "explanations.kmeans-weights-shape"),
    m(lambda: ex.kmeans_1d(torch.tensor([0.0, 1.0, 2.0]), 2, torch.tensor([1.0, -1.0, 1.0])), ValueError,
      "weights must be positive", "explanations.kmeans-weights-negative"),
    m(lambda: ex.activation_ranges(torch.tensor([0.0, NAN, 1.0])), ValueError, "NaN or infinite values",
      "explanations.ranges-nan"),
    m(lambda: ex.activation_ranges(torch.tensor([0.0, INF, 1.0]), 1), ValueError, "NaN or infinite values",
      "explanations.ranges-inf"),
    m(lambda: ex.activation_ranges(torch.tensor([])), ex.InactiveUnitError, "never activates",
      "explanations.ranges-empty"),
    m(lambda: ex.activation_ranges(torch.zeros(5), 1), ex.InactiveUnitError, "all activations are zero",
      "explanations.ranges-all-zero"),
    m(lambda: ex.activation_ranges(torch.rand(5), 0), ValueError, "num_clusters must be >= 1",
      "explanations.ranges-clusters-0"),
    m(lambda: ex.activation_ranges(torch.rand(5), 1, quantile=1.5), ValueError, r"quantile must be in \(0, 1\)",
      "explanations.ranges-quantile"),
    m(lambda: ex.upsample_activations(torch.rand(3, 4), (8, 8)), ValueError, r"\(N, U, h, w\) or \(N, h, w\)",
      "explanations.upsample-2d"),
    m(lambda: ex.range_masks(torch.rand(4), torch.rand(3)), ValueError, r"ranges must have shape \(R, 2\)",
      "explanations.range_masks-ranges-shape"),
    m(lambda: ex.explanation_metrics(torch.ones(2, 3, dtype=torch.bool), torch.ones(3, 2, dtype=torch.bool)),
      ValueError, "differ", "explanations.metrics-shapes"),
    m(lambda: ex.explanation_metrics(torch.ones(0, 3, dtype=torch.bool), torch.ones(0, 3, dtype=torch.bool)),
      ValueError, "N >= 1 samples", "explanations.metrics-empty"),
    m(lambda: ex.explanation_metrics(torch.tensor([[0.4, NAN]]), torch.tensor([[1.0, 1.0]])), ValueError,
      "unit mask must be a boolean", "explanations.metrics-float-mask"),
    m(lambda: ex.explanation_metrics(torch.ones(1, 2, dtype=torch.bool), torch.tensor([[2, 0]])), ValueError,
      "formula mask must be a boolean", "explanations.metrics-int-2-mask"),
    m(lambda: ex.prepare_concepts(torch.rand(4, 3)), ValueError, "boolean .* got dtype torch.float32",
      "explanations.concepts-float"),
    m(lambda: ex.prepare_concepts(torch.ones(4, 3, 2, dtype=torch.bool)), ValueError, r"\(N, K\) or \(N, K, H, W\)",
      "explanations.concepts-3d"),
    m(lambda: ex.prepare_concepts(torch.ones(4, 3, dtype=torch.bool), spatial_size=(0, 2)), ValueError,
      r"spatial_size must be \(h, w\) of positive integers, got \(0, 2\)", "explanations.concepts-spatial-zero"),
    m(lambda: ex.prepare_concepts(torch.ones(4, 3, dtype=torch.bool), spatial_size=(2, 2, 2)), ValueError,
      "spatial_size must be", "explanations.concepts-spatial-3"),
    m(lambda: ex.best_formula(_table, _unit, 0), ValueError, "max_length must be 1, 2 or 3",
      "explanations.best_formula-max_length-0"),
    m(lambda: ex.best_formula(_table, _unit, method="x"), ValueError, "method must be 'exact' or 'beam'",
      "explanations.best_formula-method"),
    m(lambda: ex.best_formula(_table, _unit[:2]), ValueError, "unit mask has 2 positions but the concepts have 4",
      "explanations.best_formula-mask-size"),
    m(lambda: ex.best_formula(_table, torch.tensor([0.5, 0.0, 0.0, 0.0])), ValueError,
      "unit mask must be a boolean .* torch.float32", "explanations.best_formula-float-mask"),
    m(lambda: ex.best_formula(_table, torch.tensor([NAN, 1.0, 0.0, 0.0]), method="beam"), ValueError,
      "unit mask must be a boolean", "explanations.best_formula-nan-mask-beam"),
    m(lambda: ex.best_formula(_table, torch.tensor([2, 0, 0, 0])), ValueError, r"boolean \(or 0/1 integer\)",
      "explanations.best_formula-int-2-mask"),
    m(lambda: ex.best_formula(_table, _unit, time_budget=0), ValueError, "time_budget must be positive",
      "explanations.best_formula-time_budget-0"),
    m(lambda: ex.best_formula(_table, _unit, method="beam", beam_width=0), ValueError, "beam_width and first_beam",
      "explanations.best_formula-beam_width-0"),
    m(lambda: ex.exhaustive_search(_table, _unit, 5), ValueError, "max_length must be 1, 2 or 3",
      "explanations.exhaustive-max_length-5"),
    m(lambda: ex.explain_unit(torch.rand(4), _table, ["a"]), ValueError, "1 concept names for 3 concepts",
      "explanations.explain_unit-names"),
    m(lambda: ex.explain_unit(torch.rand(5), _table), ValueError, "activations have 5 samples, the concepts 4",
      "explanations.explain_unit-samples"),
    m(lambda: ex.explain_unit(torch.tensor([1.0, NAN, 0.0, 2.0]), _table), ValueError, "NaN or infinite",
      "explanations.explain_unit-nan"),
    m(lambda: ex.explain_unit(torch.zeros(4), _table), ex.InactiveUnitError, "never activates",
      "explanations.explain_unit-inactive"),
]


@pytest.mark.parametrize(("fn", "exc", "match"), MEASURES)
def test_measure_refuses_malformed_tensors(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


def test_case_ids_are_unique():
    for table in (CONSTRUCTOR, AT_FIT, WARNED, MEASURES):
        ids = [p.id for p in table]
        assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
