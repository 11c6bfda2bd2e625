"""Real runs (issue 14): budgets that give every monitor its whole story, the cost model, pictures only where a
logger takes them (and to every logger that does), the progress bar, and EarlyStopping on probe scalars."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import numpy as np
import pytest
from helpers import all_five, read_events, trainer
from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger

from lightning_probes import presets, tensorboard
from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors import _progress
from lightning_probes.monitors._cost import CostModel, ProbeTiming, TrainingClock, training_clock
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.group import MonitorGroup
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import Clock, budget, every
from lightning_probes.triggers import StopWhen

pytestmark = pytest.mark.usefixtures("one_thread")

EPOCHS = 40  # the README's all-five example: 40 epochs of digits, 17 steps an epoch


# ---------------------------------------------------------------- the README's all-five example, shrunk in width
@pytest.fixture(scope="session")
def all_five_run(tmp_path_factory):
    """presets.standard with all five monitors over a 40-epoch digits run (680 steps) of a small MLP."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monitors = presets.standard(**all_five(max_samples=120))
    pl.seed_everything(0)
    t = trainer(tmp_path_factory.mktemp("all_five"), max_epochs=EPOCHS, callbacks=[monitors], log_every_n_steps=50)
    t.fit(MLPClassifier(hidden=(32,)), DigitsDataModule())
    torch.set_num_threads(threads)
    return t, monitors


def test_the_all_five_preset_probes_every_monitor_three_times_at_least_the_last_at_the_final_step(all_five_run):
    t, monitors = all_five_run
    assert t.global_step >= 500
    events = read_events(t.log_dir)
    for monitor in monitors:
        steps = sorted({s for tag, points in events.scalars.items() if tag.startswith(monitor.prefix)
                        for s, _ in points})  # the probe steps, as the event files have them
        assert len(steps) >= 3 and steps[0] == 0 and steps[-1] == t.global_step, (monitor.name, steps)
        assert steps == [s for s, _ in monitor.history], monitor.name
        assert 0 < steps[1] < t.global_step  # a middle, not only the ends


def test_the_end_of_fit_summary_says_probes_cost_and_where_the_report_is(all_five_run):
    t, monitors = all_five_run
    text = monitors.summary(t.log_dir)
    for monitor in monitors:
        line = monitor.cost_summary()
        assert line in text and f"{monitor.clock.n_probes} probes" in line and "% of training time" in line
        assert "final-state probe" in line  # at_end in presets too, its cost said
    assert f"lightning-probes report {t.log_dir}" in text


def test_the_progress_bar_metrics_show_each_monitors_key_scalars(all_five_run):
    t, monitors = all_five_run
    shown = t.progress_bar_metrics
    assert shown["spectrum/regime"] == monitors[0].history[-1][1]["regime"]
    for monitor in monitors:
        assert monitor.progress_bar_scalars, monitor.name  # every monitor declares its key scalar(s)
        assert any(key.startswith(monitor.name + "/") for key in shown), (monitor.name, sorted(shown))


# ---------------------------------------------------------------- the cost model
def test_cost_model_expects_the_measurement_plus_pictures_only_when_due():
    model = CostModel()
    assert model.expected(pictures_due=False) is None  # unknown before the first probe
    model.record(ProbeTiming(total=1.0, pictures=0.8), drew_pictures=True)
    assert model.expected(False) == pytest.approx(0.2) and model.expected(True) == pytest.approx(1.0)
    model.record(ProbeTiming(total=0.3, pictures=0.0), drew_pictures=False)  # a plain probe: pictures' cost kept
    assert model.expected(False) == pytest.approx(0.3) and model.expected(True) == pytest.approx(1.1)
    model.cheaper()
    assert model.expected(False) == pytest.approx(0.15)  # half, until a probe at the new size is measured
    model.record(ProbeTiming(total=0.2, pictures=0.0), drew_pictures=False, final=True)
    assert model.expected(False) == pytest.approx(0.2) and model.final_seconds == pytest.approx(0.2)


def test_cost_model_books_a_probe_on_the_clock():
    model, clock = CostModel(), Clock()
    timing = ProbeTiming(total=0.5, pictures=0.4)
    model.record(timing, drew_pictures=True)
    model.update_clock(clock, timing, pictures_due_next=False, step=7)
    assert (clock.n_probes, clock.last_step, clock.probe_seconds) == (1, 7, 0.5)
    assert clock.next_probe_seconds == pytest.approx(0.1)


def test_the_training_clock_is_shared_by_the_monitors_of_a_fit_and_restarts_for_the_next():
    class Owner:  # weakly referenced, as a Trainer is
        pass

    trainer_, a, b = Owner(), object(), object()
    first = training_clock(trainer_, a)
    assert training_clock(trainer_, b) is first  # one clock for the fit: no monitor counts another's probes
    first.exclude(1.0)
    assert training_clock(trainer_, a) is not first  # a joining again: a new fit
    clock = TrainingClock(start=0.0)
    clock.exclude(0.5)
    assert clock.seconds(now=2.0) == 1.5


def test_a_budget_floor_probes_the_middle_of_a_run_too_short_for_it():
    due = budget(0.01, min_probes=4)
    starved = Clock(train_seconds=1.0, probe_seconds=10.0, n_probes=1, last_step=0, total_steps=300)
    assert [s for s in range(1, 300) if due(s, starved)][:1] == [100]
    starved.n_probes = 2
    assert [s for s in range(101, 300) if due(s, starved)][:1] == [200]
    starved.n_probes = 3  # the floor's points are all taken: only the budget (and at_end) from here
    assert not any(due(s, starved) for s in range(201, 300))
    assert not any(due(s, Clock(train_seconds=1.0, probe_seconds=10.0, n_probes=1)) for s in range(1, 300))


def test_a_starved_budget_asks_for_a_cheaper_probe_once_and_says_so(tmp_path, caplog):
    class Shrinking(Monitor):
        name = "shrinking"
        needs_probe_data = False

        def __init__(self, **kw):
            super().__init__(**kw)
            self.size, self.sizes = 8, []

        def measure(self, trainer, pl_module):
            time.sleep(0.002 * self.size)
            self.sizes.append(self.size)
            return ProbeResult(scalars={"size": float(self.size)})

        def cheaper(self):
            if self.size == 1:
                return None
            self.size //= 2
            return f"size {self.size}"

    monitor = Shrinking(schedule=budget(0.001), images_every=0)
    with caplog.at_level("INFO"):
        pl.seed_everything(0)
        trainer(tmp_path, max_steps=60, callbacks=[monitor], logger=False).fit(MLPClassifier(hidden=(16,)),
                                                                               DigitsDataModule())
    assert monitor.sizes[0] == 8 and monitor.sizes[-1] < 8  # cheaper, not none
    assert len(monitor.sizes) >= 3
    assert sum("probing cheaper" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------- pictures: only where a logger takes them
@pytest.fixture
def draws(monkeypatch):
    """Counts matplotlib draws: every picture helper of tensorboard.py renders through _to_array."""
    count = {"n": 0}
    real = tensorboard._to_array

    def counting(fig):
        count["n"] += 1
        return real(fig)

    monkeypatch.setattr(tensorboard, "_to_array", counting)
    return count


def _head_monitors():
    return [FeatureSpectrumMonitor(head="classifier", schedule=every(5), images_every=1, max_samples=120),
            CondensationMonitor(schedule=every(5), images_every=1)]


@pytest.mark.parametrize("logger", ["none", "csv"])
def test_a_run_without_a_picture_logger_draws_no_picture(tmp_path, draws, logger):
    monitors = _head_monitors()
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=10, callbacks=[MonitorGroup(monitors)],
                logger=False if logger == "none" else CSVLogger(str(tmp_path)))
    t.fit(MLPClassifier(hidden=(16, 16)), DigitsDataModule())
    assert all(m.clock.n_probes == 3 for m in monitors)
    assert draws["n"] == 0


def test_a_tensorboard_run_does_draw_them(tmp_path, draws):
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=10, callbacks=[MonitorGroup(_head_monitors())])
    t.fit(MLPClassifier(hidden=(16, 16)), DigitsDataModule())
    assert draws["n"] > 0
    assert read_events(t.log_dir).images  # the control: the same run with a taker draws and writes them


class PictureLogger(Logger):
    """A logger with WandbLogger's log_image / log_text signatures, keeping what it was given."""

    def __init__(self):
        super().__init__()
        self.images, self.texts = [], []

    @property
    def name(self):
        return "pictures"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append((key, step, images[0].shape))

    def log_text(self, key, columns=None, data=None, step=None, **kwargs):
        self.texts.append((key, step, data[0][0]))


def test_pictures_and_text_go_to_every_logger_that_has_log_image_or_log_text(tmp_path, caplog):
    taker = PictureLogger()
    with caplog.at_level("INFO"):
        pl.seed_everything(0)
        t = trainer(tmp_path, max_steps=10, callbacks=[MonitorGroup(_head_monitors())],
                    logger=[taker, CSVLogger(str(tmp_path))])
        t.fit(MLPClassifier(hidden=(16, 16)), DigitsDataModule())
    assert any(key == "probes/spectrum/eigenvalues" and shape[2] == 3 for key, _, shape in taker.images)
    assert {step for _, step, _ in taker.images} <= {0, 5, 10} and taker.texts
    said = [r.getMessage() for r in caplog.records if "cannot take pictures" in r.getMessage()]
    assert len(said) == 1 and "CSVLogger" in said[0]  # one line for the group, naming the logger that cannot


def test_mlflow_logger_gets_pictures_and_text_offline(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the file store: no server, no database
    from lightning.pytorch.loggers import MLFlowLogger

    logger = MLFlowLogger(tracking_uri=f"file:{tmp_path / 'mlruns'}", experiment_name="probes")
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=5, logger=logger,
                callbacks=[FeatureSpectrumMonitor(head="classifier", schedule=every(5), images_every=1,
                                                  max_samples=120)])
    t.fit(MLPClassifier(hidden=(16,)), DigitsDataModule())
    artifacts = [str(p.relative_to(tmp_path)) for p in (tmp_path / "mlruns").rglob("*") if p.is_file()]
    assert any("eigenvalues" in p and p.endswith(".png") for p in artifacts), artifacts
    assert any(p.endswith(".md") and "regime_history" in p for p in artifacts), artifacts


# ---------------------------------------------------------------- the progress bar while a probe runs
def test_a_long_probe_shows_on_the_progress_bar(tmp_path, monkeypatch):
    seen = []

    class Watched(Monitor):
        name = "watched"
        needs_probe_data = False
        progress_bar_scalars = ("value",)

        def measure(self, trainer, pl_module):
            if not self.trial_probe:  # the fit-start trial is a silent check, not a probe
                seen.append(trainer.progress_bar_callback.train_progress_bar.desc)
            return ProbeResult(scalars={"value": 3.0, "other": 1.0})

    monkeypatch.setattr(_progress, "LONG_PROBE_SECONDS", 0.0)  # every probe counts as long
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=4, callbacks=[Watched(schedule=every(2), at_start=False), TQDMProgressBar()],
                enable_progress_bar=True)
    t.fit(MLPClassifier(hidden=(16,)), DigitsDataModule())
    assert seen and all("probing: watched" in d for d in seen)
    assert "probing" not in t.progress_bar_callback.train_progress_bar.desc  # put back after the probe
    assert t.progress_bar_metrics["watched/value"] == 3.0 and "watched/other" not in t.progress_bar_metrics


# ---------------------------------------------------------------- EarlyStopping on probe scalars
class Plateau(Monitor):
    """Reports a value that never improves, every 100 steps."""

    name = "plateau"
    needs_probe_data = False

    def measure(self, trainer, pl_module):
        return ProbeResult(scalars={"value": 1.0})


def _plateau_fit(tmp_path, *callbacks):
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=1000, callbacks=list(callbacks), logger=False)
    t.fit(MLPClassifier(hidden=(16,)), DigitsDataModule())  # 17 steps an epoch
    return t


def test_early_stopping_on_a_probe_scalar_re_reads_a_stale_value_and_stop_when_counts_probes(tmp_path):
    # the failing case of issue 14: EarlyStopping counts its checks (every epoch end), not probes, so with probes
    # sparser than epochs it counts one probe's value again and again
    stale = _plateau_fit(tmp_path, Plateau(schedule=every(100), at_end=False),
                         EarlyStopping("probes/plateau/value", patience=3))
    assert stale.global_step == 68  # epochs 1..4 read the step-0 probe: best, then three "no improvement"
    monitor = Plateau(schedule=every(100), at_end=False, triggers=[StopWhen("value", mode="min", patience=3)])
    counted = _plateau_fit(tmp_path, monitor)
    assert [s for s, _ in monitor.history] == [0, 100, 200, 300]  # best, then three probes without improvement
    assert counted.global_step == 300 and "did not improve" in monitor.stop_reason


def test_stop_when_mode_follows_early_stopping_semantics():
    stop = StopWhen("x", mode="max", min_delta=0.1, patience=2)
    got = [stop.check(s, {"x": v}, "p/") is not None for s, v in enumerate([0.0, 0.5, 0.55, 0.7, 0.75, 0.78])]
    # 0.55, 0.75 and 0.78 are within min_delta of the best: no improvement
    assert got == [False, False, False, False, False, True]
    assert stop.best == 0.7
    fresh = StopWhen("x", mode="max", min_delta=0.1, patience=2)
    fresh.load_state_dict(stop.state_dict())
    assert (fresh.best, fresh.count) == (0.7, 2)  # resumable
    nan = StopWhen("x", mode="min", patience=2)
    assert [nan.check(s, {"x": v}, "p/") is not None for s, v in enumerate([1.0, float("nan"), float("nan")])] \
        == [False, False, True]  # a NaN is no improvement
    with pytest.raises(ValueError, match="not both"):
        StopWhen("x", below=1.0, mode="min")
    with pytest.raises(ValueError, match="mode must be"):
        StopWhen("x", mode="lowest")
    with pytest.raises(ValueError, match="min_delta applies"):
        StopWhen("x", below=1.0, min_delta=0.1)


def test_key_scalars_pick_names_and_per_layer_names():
    got = _progress.key_scalars("c", ["n"], {"n": 1.0, "l1/n": 2.0, "l1/nn": 3.0})
    assert got == {"c/n": 1.0, "c/l1/n": 2.0}
    assert np.isfinite(list(got.values())).all()


# ---------------------------------------------------------------- dashboards: one scale a chart, every tag charted
def test_every_probe_tag_is_on_a_chart_and_the_scales_that_hid_each_other_are_apart(five_monitor_run):
    import re

    events = read_events(five_monitor_run.log_dir)
    layout = {}  # chart title -> tag patterns, as written in the one custom-scalars layout
    for category in events.layouts[0].category:
        layout.update({chart.title: list(chart.multiline.tag) for chart in category.chart})
    tags = [t for t in events.scalars if t.startswith("probes/")]
    uncharted = [t for t in tags if not any(re.match(p, t) for ps in layout.values() for p in ps)]
    assert not uncharted, "\n".join(uncharted)

    def together(a, b):
        return any(any(re.match(p, a) for p in ps) and any(re.match(p, b) for p in ps) for ps in layout.values())
    s, i, c, lib = "probes/spectrum/", "probes/interactions/", "probes/concepts/", "probes/lib/features.0/"
    for a, b in [(s + "regime", s + "n_features"), (s + "rank", s + "gap_at_C"),
                 (s + "rank", s + "participation_ratio"), (i + "n_salient", i + "mean_order"),
                 (c + "n_formula_changes", c + "n_beam_fallbacks"),
                 (lib + "edges_90", lib + "edges_90_pca")]:
        assert not together(a, b), (a, b)
    assert together(s + "participation_ratio", s + "gap_at_C")  # the same scale stays together
