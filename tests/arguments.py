"""Shared plumbing of the argument-validation tests (``test_arguments_*.py``): malformed input of every kind —
wrong shapes and dtypes, NaN / Inf, empty tensors, unknown names, out-of-range options — must end in a clear
exception (ValueError / TypeError / KeyError / FloatingPointError whose message names the problem) or, for a probe
that fails at run time with ``on_error="warn"``, in one warning and *no* scalars: the monitor's history stays empty
and nothing reaches ``trainer.callback_metrics``. Never a hang, never a torch-internal shape error, never a NaN
published as if it were a measurement.

Each test file holds, for one monitor and its measures, tables of cases (one row per case; ids say what is
malformed), and turns each table into a test with one of the functions below:

* ``refused_at_construction(table)``: bad constructor arguments, refused at construction;
* ``refused_at_fit(table)``: arguments that only the model or the probe data can contradict, driven through the
  monitor's own Lightning hooks (``setup`` -> ``on_train_start`` -> ``on_train_batch_start``, which probes step 0)
  with ``on_error="raise"``;
* ``warned_and_skipped(table)``: probes that fail at run time with ``on_error="warn"``;
* ``refused_by_measures(table)``: the pure functions of :mod:`lightning_probes.measures` on malformed tensors;
* ``ids_are_unique(*tables)``.

Every case runs under an alarm, so a hang fails the case instead of the session.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from lightning_probes.datasets import load_digits_tensors
from lightning_probes.measures import interactions as im
from lightning_probes.models import MLPClassifier, ShapesCNN
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor

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
NOT_RUNNABLE = r"the model cannot run on the probe inputs \(samples of shape "


# ---------------------------------------------------------------------------------------------------- models
def mlp() -> MLPClassifier:
    torch.manual_seed(0)
    return MLPClassifier(hidden=(32, 32))


def poisoned(module: str, value: float = NAN) -> Callable[[], MLPClassifier]:
    """An MLP whose parameter ``module`` (e.g. ``"classifier.weight"``) has one entry set to ``value``."""

    def make() -> MLPClassifier:
        model = mlp()
        with torch.no_grad():
            model.get_parameter(module).view(-1)[0] = value
        return model

    return make


def poison(t: torch.Tensor, value: float = NAN) -> torch.Tensor:
    """A copy of ``t`` with its second entry set to ``value``."""
    out = t.clone()
    out.view(-1)[1] = value
    return out


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


# ----------------------------------------------------------- monitors with small, fast defaults; a case overrides
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


# ---------------------------------------------------------------------------------------------------- running
def quiet_trainer() -> pl.Trainer:
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)


@functools.cache
def shared_trainer() -> pl.Trainer:
    """One quiet trainer for the cases that only need a trainer object to pass to the hooks."""
    return quiet_trainer()


def probe(monitor, model, trainer: pl.Trainer) -> None:
    """Fit start and the step-0 probe, through the monitor's own Lightning hooks."""
    monitor.setup(trainer, model, "fit")  # check_model
    monitor.on_train_start(trainer, model)  # materialise the probe set, check it against the model
    monitor.on_train_batch_start(trainer, model, None, 0)  # at_start: probes step 0 (on_error applies)


@contextlib.contextmanager
def no_hang() -> Iterator[None]:
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


# ----------------------------------------------------------------------------------------- tables and their tests
def case(make: Callable[[], Any], exc: type[BaseException], match: str, id: str) -> Any:
    """A row of a constructor or measure table: ``make()`` raises ``exc`` whose message matches ``match``."""
    return pytest.param(make, exc, match, id=id)


def at_fit(make: Callable[[], Any], exc: type[BaseException] | None, match: str, id: str,
           model: Callable[[], nn.Module] = mlp) -> Any:
    """A row of a fit-start or warned table: the monitor ``make()`` on the model ``model()``."""
    return pytest.param(make, model, exc, match, id=id)


def refused_at_construction(table: list[Any]) -> Callable[..., None]:
    @pytest.mark.parametrize(("make", "exc", "match"), table)
    def test(make, exc, match):
        with no_hang(), pytest.raises(exc, match=match):
            make()

    return test


def refused_by_measures(table: list[Any]) -> Callable[..., None]:
    return refused_at_construction(table)  # the same check: calling the row's function raises


def refused_at_fit(table: list[Any]) -> Callable[..., None]:
    @pytest.mark.parametrize(("make", "model", "exc", "match"), table)
    def test(make, model, exc, match):
        with no_hang():
            monitor = make()
            with pytest.raises(exc, match=match):
                probe(monitor, model(), shared_trainer())
        assert monitor.history == []  # nothing was measured, so nothing was recorded

    return test


def warned_and_skipped(table: list[Any]) -> Callable[..., None]:
    @pytest.mark.parametrize(("make", "model", "exc", "match"), table)
    def test(make, model, exc, match):
        trainer = quiet_trainer()  # its own callback_metrics, so "nothing published" is this case's alone
        monitor = make()
        with no_hang(), pytest.warns(UserWarning, match=rf"\[lightning-probes/{monitor.name}\] probe at step 0 failed "
                                                        rf"and was skipped \(\w+: .*{match}"):
            probe(monitor, model(), trainer)
        assert monitor.history == [] and monitor.failures == 1
        # only the failure count is published (see test_run_logs): no measurement of the failed probe
        published = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(monitor.prefix)}
        assert published == {monitor.prefix + "failed_probes": 1.0}
        first, *failures = monitor.summary().splitlines()
        assert first == f"[{monitor.name}] no successful probe (1 failed)."
        assert failures[0] == f"[{monitor.name}] 1 probe(s) failed, the last 1 in a row:" and "step 0:" in failures[1]

    return test


def ids_are_unique(*tables: list[Any]) -> Callable[[], None]:
    def test():
        for table in tables:
            ids = [p.id for p in table]
            assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})

    return test
