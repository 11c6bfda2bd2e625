"""Reliability of all five monitors at once: resuming, crashing and DDP.

The five monitors (spectrum, condensation, interactions, lib, concepts) run together on one small
``MLPClassifier(hidden=(32, 32))`` fitted on the digits, all given the same probe tensors (the first 120 digits of
``DigitsProbe``, with their labels and per-sample concepts), with settings that keep each probe cheap.

- Resume: a run killed mid-training and resumed from its last checkpoint with fresh monitor objects probes at the
  same steps, with the same figures, and its triggers (whose patience had partly run out before the checkpoint)
  stop training at the same step with the same reason as an uninterrupted run.
- Crash: an exception raised by the model leaves TensorBoard event files holding every probe point taken before it.
- DDP (2 CPU processes, gloo, spawned): every monitor reports the same scalars as one process, and a probe that
  fails on rank 1 alone is skipped on both ranks without hanging either of them.
"""

from __future__ import annotations

import datetime
import functools
import glob
import json
import re

import lightning.pytorch as pl
import pytest
import torch
from helpers import ClosesProcessGroup, read_events, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy

from lightning_probes.datasets import DigitsDataModule, DigitsProbe
from lightning_probes.measures.interactions import FeatureGroups
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.base import Monitor
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every
from lightning_probes.triggers import StopWhen

NAMES = ["spectrum", "condensation", "interactions", "lib", "concepts"]
PROBE_SAMPLES = 120
FULL_BATCH = 2048  # more than the 1079 training digits: one batch per epoch, so the sample order is only rounding
# a figure per monitor that is >= 0 at every probe: a trigger on "> -1" holds every time, so only its patience
# (the count of consecutive probes, part of the checkpoint) decides when it fires
WATCHED = {
    "spectrum": "rank",
    "condensation": "features.0/weight_norm",
    "interactions": "objective",
    "lib": "features.0/n_directions",
    "concepts": "n_inactive_units",
}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@functools.lru_cache(maxsize=1)
def digits_probe() -> DigitsProbe:
    return DigitsProbe(PROBE_SAMPLES)


def five_monitors(classes=None, trigger=None, **common) -> list[Monitor]:
    """The five monitors with cheap settings (a probe of all five takes a few tenths of a second), in NAMES order.

    ``classes`` replaces the monitor classes (subclasses that inject failures); ``trigger(metric)`` makes each
    monitor's one trigger, watching its ``WATCHED`` figure.
    """
    spectrum, condensation, interactions, lib, concepts = classes or (
        FeatureSpectrumMonitor, CondensationMonitor, InteractionMonitor, InteractionBasisMonitor, ConceptMonitor)
    probe = digits_probe()
    data = (probe.inputs, probe.targets)  # explicit tensors: every monitor, every rank, the same samples
    common.setdefault("images_every", 0)  # pictures cost more than all the figures together

    def triggers(name: str) -> list[StopWhen]:
        return [trigger(WATCHED[name])] if trigger else []

    # 4 pixel blocks of 16 features each: 2^4 masked inputs per sample
    players = FeatureGroups([list(range(16 * i, 16 * i + 16)) for i in range(4)], num_features=64)
    return [
        spectrum(head="classifier", probe_data=data, max_samples=PROBE_SAMPLES, triggers=triggers("spectrum"),
                 **common),
        condensation(layers="auto", triggers=triggers("condensation"), **common),
        interactions(players, layers=["features.1"], num_samples=4, probe_data=data, max_samples=PROBE_SAMPLES,
                     solver_iterations=200, triggers=triggers("interactions"), **common),
        lib(layers=["features.0", "features.2", "classifier"], num_samples=40, probe_data=data,
            triggers=triggers("lib"), **common),
        # time_budget=None: the exact search never falls back to beam search on a slow moment, so the formulas
        # depend on the weights alone (not on the machine's load)
        concepts("features.1", probe.concepts, probe.concept_names, num_clusters=3, max_length=2, max_units=4,
                 time_budget=None, probe_data=data, triggers=triggers("concepts"), **common),
    ]


def by_name(monitors: list[Monitor]) -> dict[str, Monitor]:
    names = {m.name: m for m in monitors}
    assert list(names) == NAMES
    return names


def steps(monitor: Monitor) -> list[int]:
    return [s for s, _ in monitor.history]


def fit(tmp_path, monitors, max_steps, crash_step=None, ckpt_path=None, extra_callbacks=(), **trainer_kw):
    """Fit the digits MLP (seeded: every run starts from the same weights); ``crash_step``: a CrashingMLP."""
    pl.seed_everything(0)
    model = MLPClassifier(hidden=(32, 32)) if crash_step is None else CrashingMLP(crash_step, hidden=(32, 32))
    t = trainer(tmp_path, max_steps=max_steps, callbacks=[*monitors, *extra_callbacks], limit_val_batches=0,
                **trainer_kw)
    t.fit(model, DigitsDataModule(batch_size=FULL_BATCH), ckpt_path=ckpt_path)
    return t


class CrashingMLP(MLPClassifier):
    """The model raises in the training step that starts at ``crash_step`` (as a NaN check or an OOM would)."""

    def __init__(self, crash_step: int, **kwargs):
        super().__init__(**kwargs)
        self.crash_step = crash_step

    def training_step(self, batch, batch_idx):
        if self.global_step == self.crash_step:
            raise RuntimeError("model exploded")
        return super().training_step(batch, batch_idx)


# ---------------------------------------------------------------- resume
CHECKPOINT_STEP = 6
KILL_STEP = 9  # after the probe at step 8: work done since the last checkpoint is lost and redone
PATIENCE = 6  # probes at 0, 2, 4, 6 count 4 before the checkpoint; the 6th probe, at step 10, fires
STOP_STEP = 10
MAX_STEPS = 16  # never reached by a run whose triggers work; a resumed trigger that forgot its count fires at 20


def stop_decision(monitor: Monitor) -> str | None:
    """The stop reason without the figure's value (the decision: which trigger, how many probes, which step)."""
    return None if monitor.stop_reason is None else re.sub(r" = \S+ ", " = <value> ", monitor.stop_reason)


def test_killed_and_resumed_run_probes_and_stops_like_an_uninterrupted_run(tmp_path):
    def run(name, crash_step=None, ckpt_path=None):
        monitors = five_monitors(schedule=every(2), trigger=lambda m: StopWhen(m, above=-1.0, patience=PATIENCE))
        checkpoints = ModelCheckpoint(dirpath=tmp_path / name / "ckpt", every_n_train_steps=CHECKPOINT_STEP,
                                      save_top_k=-1)
        t = fit(tmp_path / name, monitors, MAX_STEPS, crash_step=crash_step, ckpt_path=ckpt_path,
                extra_callbacks=[checkpoints], enable_checkpointing=True, logger=False)
        return t, by_name(monitors)

    full_trainer, full = run("full")
    with pytest.raises(RuntimeError, match="exploded"):
        run("killed", crash_step=KILL_STEP)
    (ckpt,) = glob.glob(str(tmp_path / "killed" / "ckpt" / "*.ckpt"))  # its last (and only) checkpoint
    assert ckpt.endswith(f"-step={CHECKPOINT_STEP}.ckpt")
    # the checkpoint was written after the probe at its step: each monitor had probed 4 times and each trigger
    # had counted 4 of its 6 probes, so where the resumed run stops depends on the restored count
    saved = torch.load(ckpt, weights_only=False)["callbacks"]
    for monitor in full.values():
        state = saved[monitor.state_key]
        assert state["clock"]["n_probes"] == 4 and state["clock"]["last_step"] == CHECKPOINT_STEP, monitor.name
        assert state["triggers"] == [{"count": 4}], monitor.name

    resumed_trainer, resumed = run("resumed", ckpt_path=ckpt)
    assert full_trainer.global_step == resumed_trainer.global_step == STOP_STEP
    for name in NAMES:
        a, b = full[name], resumed[name]
        assert steps(a) == steps(b) == list(range(0, STOP_STEP + 1, 2)), name
        assert a.clock.n_probes == b.clock.n_probes == 6, name
        assert a.failures == b.failures == 0, name
        assert [t.count for t in a.triggers] == [t.count for t in b.triggers] == [PATIENCE], name
        assert stop_decision(a) == stop_decision(b) == (
            f"probes/{name}/{WATCHED[name]} = <value> > -1.0 for {PATIENCE} consecutive probes (step {STOP_STEP})"
        ), name
        # the same figures too (full-batch training does not depend on the sample order after resuming), which
        # needs each monitor's own state back: W_0 (relative_change), the previous interactions (emerged,
        # forgotten), the previous class means (NC4), the previous formulas (n_formula_changes)
        for (step, got), (_, expected) in zip(b.history, a.history):
            assert got.keys() == expected.keys(), (name, step)
            # the solver's certified gap is a bound on its float32 path, not a figure of the network: ~1e-7
            # differences in the resumed weights move it by ~1e-6 while it stays below the tolerance
            gaps = {k for k in got if k.startswith("certified_gap")}
            assert {k: v for k, v in got.items() if k not in gaps} == pytest.approx(
                {k: v for k, v in expected.items() if k not in gaps}, rel=1e-4, abs=1e-6), (name, step)
            assert {k: got[k] for k in gaps} == pytest.approx({k: expected[k] for k in gaps}, abs=1e-3), (name, step)


# ---------------------------------------------------------------- crash
CRASH_STEP = 6


def test_crash_keeps_every_probe_point_taken_before_it(tmp_path):
    monitors = five_monitors(schedule=every(2))
    with pytest.raises(RuntimeError, match="exploded"):
        fit(tmp_path, monitors, max_steps=20, crash_step=CRASH_STEP)
    # the probe "at step 6" measures the weights after 6 optimizer steps: it runs at the end of the batch that
    # made global_step 6, before the training step that crashes; nothing runs after the crash (no final probe)
    expected = list(range(0, CRASH_STEP + 1, 2))
    events = read_events(str(tmp_path))
    for name, monitor in by_name(monitors).items():
        assert steps(monitor) == expected, name
        prefix = f"probes/{name}/"
        tags = {tag for tag in events.scalars if tag.startswith(prefix)}
        assert tags == {prefix + key for _, scalars in monitor.history for key in scalars}, name
        for tag in tags:  # every figure of every probe point is in the event files, with its value
            key = tag[len(prefix):]
            logged = dict(events.scalars[tag])
            wanted = {s: v[key] for s, v in monitor.history if key in v}
            assert sorted(logged) == sorted(wanted), tag
            assert logged == pytest.approx(wanted, rel=1e-6, abs=1e-6, nan_ok=True), tag
        assert [s for s, _ in events.scalars[prefix + WATCHED[name]]] == expected, name


# ---------------------------------------------------------------- DDP
DDP_TIMEOUT = datetime.timedelta(seconds=60)  # a collective left waiting fails the test after this, never hangs it
FAIL_STEP = 2


class DumpHistories(pl.Callback):
    """Each rank writes what its monitors saw and where training ended (spawned ranks share no memory)."""

    def __init__(self, directory):
        self.directory = str(directory)

    def on_train_end(self, trainer, pl_module):
        monitors = [cb for cb in trainer.callbacks if isinstance(cb, Monitor)]
        out = {
            "global_step": trainer.global_step,
            "monitors": {m.name: {"history": list(m.history), "failures": m.failures} for m in monitors},
        }
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as fh:
            json.dump(out, fh)


class FailsOnRankOne:
    """Mixin: the probe at ``FAIL_STEP`` raises on rank 1 alone, before the monitor has done anything — so before
    any collective: rank 0, which goes on, must not be left waiting in one."""

    def measure(self, trainer, pl_module):
        if trainer.global_rank == 1 and self.step == FAIL_STEP:
            raise RuntimeError("rank 1 probe blew up")
        return super().measure(trainer, pl_module)


class FailingSpectrum(FailsOnRankOne, FeatureSpectrumMonitor):
    pass


class FailingCondensation(FailsOnRankOne, CondensationMonitor):
    pass


class FailingInteractions(FailsOnRankOne, InteractionMonitor):
    pass


class FailingLib(FailsOnRankOne, InteractionBasisMonitor):
    pass


class FailingConcepts(FailsOnRankOne, ConceptMonitor):
    pass


FAILING = (FailingSpectrum, FailingCondensation, FailingInteractions, FailingLib, FailingConcepts)


def ddp_fit(directory, monitors, max_steps) -> list[dict]:
    pl.seed_everything(0)
    t = pl.Trainer(
        accelerator="cpu", devices=2, strategy=DDPStrategy(start_method="spawn", timeout=DDP_TIMEOUT),
        max_steps=max_steps, callbacks=[*monitors, DumpHistories(directory), ClosesProcessGroup()],
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0,
    )
    t.fit(MLPClassifier(hidden=(32, 32)), DigitsDataModule(batch_size=64))
    return [read_json(f"{directory}/rank{r}.json") for r in range(2)]


def read_json(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


@pytest.mark.ddp
def test_two_ranks_give_every_monitor_the_same_scalars_as_one_process(tmp_path):
    def monitors():  # probe only before the first step: one process and two ranks hold the same weights there
        return five_monitors(schedule=every(1000), at_end=False)

    single = by_name(monitors())
    fit(tmp_path / "single", list(single.values()), max_steps=1, logger=False)
    ranks = ddp_fit(tmp_path, monitors(), max_steps=1)
    for name in NAMES:
        ((step, expected),) = single[name].history
        assert step == 0
        for rank, out in enumerate(ranks):
            ((step, got),) = out["monitors"][name]["history"]
            assert step == 0 and got.keys() == expected.keys(), (name, rank)
            for key, value in expected.items():
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9, nan_ok=True), (name, rank, key)


@pytest.mark.ddp
def test_a_probe_failing_on_one_rank_is_skipped_on_both_without_hanging(tmp_path):
    # triggers that never fire: every probe also ends in the stop decision's collective, failed or not
    monitors = five_monitors(classes=FAILING, schedule=every(2), at_end=False,
                             trigger=lambda m: StopWhen(m, below=-1.0))
    ranks = ddp_fit(tmp_path, monitors, max_steps=6)
    for rank, out in enumerate(ranks):
        assert out["global_step"] == 6, rank  # training went on to the end on both ranks
        for name in NAMES:
            seen = out["monitors"][name]
            assert [s for s, _ in seen["history"]] == [0, 4, 6], (name, rank)  # step 2 skipped everywhere
            assert seen["failures"] == 1, (name, rank)
    assert ranks[0]["monitors"] == ranks[1]["monitors"]  # and the ranks agree on everything else they saw
