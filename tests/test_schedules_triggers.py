"""Schedules, triggers and the base monitor's bookkeeping, on real fits with a cheap monitor."""

import time

import lightning.pytorch as pl
import pytest
import torch
from helpers import read_events, trainer

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import Clock, as_schedule, budget, every, log_spaced
from lightning_probes.tensorboard import drawing
from lightning_probes.triggers import StopOnRegime, StopWhen


class SlowMonitor(Monitor):
    """Reports the step after sleeping ``cost`` seconds: a measurement of known cost."""

    name = "slow"
    needs_probe_data = False

    def __init__(self, cost: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.cost = cost

    def measure(self, trainer, pl_module):
        time.sleep(self.cost)
        return ProbeResult(scalars={"step": float(self.step)})


def fit(tmp_path, callbacks, max_steps, **kw):
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=max_steps, callbacks=callbacks, **kw)
    t.fit(MLPClassifier(hidden=(16,)), DigitsDataModule(batch_size=32))
    return t


def test_log_spaced_is_dense_early_and_sparse_late():
    due = log_spaced(per_decade=10)
    steps = [s for s in range(10001) if due(s, Clock())]
    assert steps[:12] == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20]  # round(10^(k/10))
    assert len(steps) < 50  # ~10 per decade over 4 decades
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert gaps == sorted(gaps)  # sparser and sparser


def test_int_schedule_means_every_n():
    assert repr(as_schedule(7)) == "every(7, start=0)"
    with pytest.raises(TypeError):
        as_schedule(True)


def test_budget_keeps_the_monitor_within_its_share_of_training_time(tmp_path):
    class SlowStep(pl.Callback):  # training steps of a known minimum cost, so the budget is machine-independent
        def on_train_batch_end(self, *args):
            time.sleep(0.01)

    monitor = SlowMonitor(cost=0.05, schedule=budget(0.10), at_start=False, at_end=False)
    fit(tmp_path, [SlowStep(), monitor], max_steps=200, logger=False)
    clock = monitor.clock
    assert clock.n_probes >= 3
    # never more than the budget plus the one probe that was let through on the previous estimate
    assert clock.probe_seconds <= 0.10 * clock.train_seconds + clock.last_probe_seconds
    assert clock.probe_seconds >= 0.5 * 0.10 * clock.train_seconds  # and it does use the budget


def test_at_most_one_probe_per_global_step_with_gradient_accumulation(tmp_path):
    monitor = SlowMonitor(schedule=every(1))
    t = fit(tmp_path, [monitor], max_steps=6, accumulate_grad_batches=3, logger=False)
    assert t.global_step == 6
    assert [s for s, _ in monitor.history] == [0, 1, 2, 3, 4, 5, 6]


def test_one_merged_dashboard_for_all_monitors(tmp_path):
    monitors = [FeatureSpectrumMonitor(schedule=every(5), images_every=0, max_samples=100), SlowMonitor(schedule=5)]
    fit(tmp_path, monitors, max_steps=5)
    charts = read_events(str(tmp_path)).charts()  # asserts exactly one layout was written
    assert set(charts) == {"probes/spectrum", "probes/slow"}


def test_stop_when_validates_and_explains():
    with pytest.raises(ValueError, match="below=... or above="):
        StopWhen("x")
    with pytest.raises(ValueError, match="greater than"):
        StopWhen("x", below=2, above=1)
    with pytest.raises(ValueError, match="'MF'"):
        StopOnRegime("minimal")
    with pytest.raises(KeyError, match="does not report.*It reports: a, b"):
        StopWhen("c", below=1).check(0, {"a": 1.0, "b": 2.0}, "probes/x/")


def test_trigger_patience_resets_and_survives_state_dict():
    stop = StopWhen("v", above=1.0, patience=3)
    seq = [2, 2, 0, 2, 2]
    assert [stop.check(i, {"v": v}, "p/") for i, v in enumerate(seq)] == [None] * 5
    clone = StopWhen("v", above=1.0, patience=3)
    clone.load_state_dict(stop.state_dict())
    assert clone.check(5, {"v": 2.0}, "p/") == "p/v = 2 > 1.0 for 3 consecutive probes (step 5)"
    assert StopWhen("v", above=1.0).check(0, {"v": float("nan")}, "p/") is None  # NaN never satisfies


def test_misnamed_trigger_metric_fails_loudly(tmp_path):
    monitor = SlowMonitor(schedule=5, triggers=[StopWhen("n_features", below=3)])
    with pytest.raises(KeyError, match="It reports: step"):
        fit(tmp_path, [monitor], max_steps=5, logger=False)


def test_crash_in_training_keeps_the_probe_points_already_written(tmp_path):
    class Boom(pl.Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 7:
                raise RuntimeError("model exploded")

    monitor = SlowMonitor(schedule=every(2))
    with pytest.raises(RuntimeError, match="exploded"):
        fit(tmp_path, [monitor, Boom()], max_steps=20)
    events = read_events(str(tmp_path))
    assert [s for s, _ in events.scalars["probes/slow/step"]] == [0, 2, 4, 6]


def test_probe_does_not_leave_grad_or_eval_mode_behind():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    model.train()
    from lightning_probes.probe_set import probing

    with pytest.raises(RuntimeError):
        with probing(model):
            raise RuntimeError("measure failed")
    assert model.training and torch.is_grad_enabled()


class PictureMonitor(SlowMonitor):
    """Scalars cost nothing, each picture 50 ms: records on which probes pictures were drawn."""

    name = "pictures"

    def measure(self, trainer, pl_module):
        report = super().measure(trainer, pl_module)
        if self.render_images:
            with drawing():  # as the picture helpers do: the budget tells pictures from the measurement
                time.sleep(0.05)
            self.drawn.append(self.step)
        return report


def test_a_budget_pays_for_pictures_too_and_still_draws_them(tmp_path):
    class Paced(pl.Callback):  # 5 ms of training per step, so the budget has something to pay from
        def on_train_batch_end(self, *args):
            time.sleep(0.005)

    monitor = PictureMonitor(schedule=budget(0.2), images_every=1)
    monitor.drawn = []
    fit(tmp_path, [Paced(), monitor], max_steps=120)  # a logger that takes pictures: none are drawn for no one
    assert monitor.drawn and 0 not in monitor.drawn  # none before training paid for them, then some
    assert monitor.clock.probe_seconds <= 0.2 * monitor.clock.train_seconds + 0.05  # within budget, up to the final
    every_probe = PictureMonitor(schedule=every(40), images_every=1)
    every_probe.drawn = []
    fit(tmp_path / "every", [every_probe], max_steps=80)
    assert every_probe.drawn == [0, 40, 80]  # a step schedule is not held to time: pictures as the cadence says


def test_a_probe_without_pictures_is_expected_to_cost_its_measurement_alone(tmp_path):
    # A spectrum probe costs ~9 ms, its pictures ~0.2 s. Taking a picture probe's whole time as the next probe's
    # cost held a 3% budget's plain probes off for the rest of a 10k-step run (2 probes in 19 s of training).
    expected = []

    class Expectations(pl.Callback):  # after each probe (the monitor's hook ran first): what the next should cost
        def on_train_batch_end(self, trainer, *args):
            if monitor.clock.last_step == trainer.global_step:
                expected.append(monitor.clock.next_probe_seconds)

    monitor = PictureMonitor(cost=0.01, schedule=every(1), images_every=3, at_end=False)
    monitor.drawn = []
    fit(tmp_path, [monitor, Expectations()], max_steps=6)
    assert monitor.drawn == [0, 3, 6]
    # seen after the probes at steps 1..6 (step 0's runs before the first batch); the probes after steps 2 and 5
    # are the ones with pictures due
    plain, with_pictures = [expected[i] for i in (0, 2, 3, 5)], [expected[i] for i in (1, 4)]
    assert all(0.01 <= e < 0.04 for e in plain), expected  # the 10 ms measurement, not the 60 ms picture probe
    assert all(e >= 0.06 for e in with_pictures), expected  # measurement + the 50 ms pictures


def test_state_key_is_built_once_per_schedule_and_follows_a_new_one():
    monitor = FeatureSpectrumMonitor(head="classifier", schedule=every(10))
    first = monitor.state_key
    assert first == monitor._generate_state_key(schedule="every(10, start=0)", head="classifier", operator="centred")
    assert monitor.state_key is first  # Lightning reads it on every hook call: not rebuilt each time
    monitor.schedule = budget(0.05)
    assert "budget(0.05" in monitor.state_key and monitor.state_key != first
