"""What a run leaves behind: a killed and resumed run reads as one run, failures are visible, monitors' names keep
their tags apart, history stays bounded and unchanged text tables are not rewritten."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import lightning.pytorch as pl
import pytest
import torch
from helpers import read_events, trainer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors._failures import IN_A_ROW
from lightning_probes.monitors._run_logs import History
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.group import MonitorGroup
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.report import read_run
from lightning_probes.schedules import every

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---------------------------------------------------------------- SIGKILL + resume
def _child(mode: str, root) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, os.path.join(HERE, "_kill_resume_child.py"), mode, str(root)], env=env,
                          capture_output=True, text=True, timeout=600)


def _accumulated(logdir: str) -> dict[str, list[int]]:
    """TensorBoard's own view of a run directory: every scalar tag's steps, after its purge of orphaned data."""
    acc = EventAccumulator(logdir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_a_run_killed_between_checkpoints_and_resumed_reads_as_one_run_in_tensorboard_and_the_report(tmp_path):
    from _kill_resume_child import KILL_STEP, fit_run

    killed = _child("kill", tmp_path / "k")
    assert killed.returncode == -9, killed.stderr[-2000:]  # it did die of SIGKILL, after step KILL_STEP
    logdir = str(tmp_path / "k" / "run" / "version_0")
    before = _accumulated(logdir)
    assert max(before["probes/spectrum/rank"]) == KILL_STEP  # probes after the checkpoint (step 4) were on disk
    resumed = _child("resume", tmp_path / "k")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len([f for f in os.listdir(logdir) if f.startswith("events.out")]) == 2  # two writers, one run

    full_dir = fit_run("full", str(tmp_path / "f")).log_dir
    expected, seen = _accumulated(full_dir), _accumulated(logdir)
    probe_tags = sorted(t for t in expected if t.startswith("probes/"))
    assert len(probe_tags) > 10
    assert sorted(t for t in seen if t.startswith("probes/")) == probe_tags
    for tag in probe_tags:  # each probe point exactly once, at the steps of the uninterrupted run
        # a rate needs earlier probes (condensation's norm rate one, its change rate two), so those tags start later
        first = {"log_norm_rate": 1, "log_change_rate": 2}.get(tag.rsplit("/", 1)[-1], 0)
        assert seen[tag] == expected[tag] == list(range(first, 13)), tag
    # the user's training scalars from the step after the checkpoint on: once each too. (At the checkpoint's step
    # itself, Lightning logged the next batch's loss before the kill and logs it again after the resume; the
    # restart is marked after that step so the probe points logged there before the checkpoint stay.)
    assert seen["train/loss"] == sorted([*range(12), 4]) and expected["train/loss"] == list(range(12))

    run = read_run(logdir)  # the report reads the directory with the same rules: one run, the same counts
    assert run.restarts == [5] and any("resumed from step(s) 4" in n for n in run.notes)
    for tag in probe_tags:
        assert [s for s, _ in run.scalars[tag]] == seen[tag], tag
    assert run.probe_steps("spectrum") == run.probe_steps("condensation") == list(range(13))
    assert [s for s, _ in run.scalars["train/loss"]] == seen["train/loss"]


# ---------------------------------------------------------------- history
def test_history_is_bounded_keeps_recent_probes_and_the_first_and_resumes_exactly():
    h = History(recent=50, older=40)
    for step in range(10_000):
        h.append((step, {"x": float(step)}))
    steps = [s for s, _ in h]
    assert len(h) <= 90 and steps[0] == 0 and steps[-50:] == list(range(9950, 10_000))
    assert steps == sorted(steps) and h[-1] == (9999, {"x": 9999.0}) and h.n_seen == 10_000
    older = steps[:-50]
    assert len({b - a for a, b in zip(older, older[1:])}) == 1  # evenly strided
    # a history restored from its state mid-way continues exactly like the uninterrupted one
    a, b = History(recent=7, older=5), None
    for step in range(300):
        if step == 123:
            b = History.from_state(a.state_dict(), recent=7, older=5)
        a.append((step, {}))
        if b is not None:
            b.append((step, {}))
    assert list(a) == list(b) and a.stride == b.stride
    # checkpoints of earlier versions held a plain list
    assert list(History.from_state([(0, {"x": 1.0}), (5, {"x": 2.0})])) == [(0, {"x": 1.0}), (5, {"x": 2.0})]


def test_unchanged_text_tables_are_written_once(tmp_path):
    pl.seed_everything(0)
    monitor = FeatureSpectrumMonitor(schedule=every(1), images_every=0)
    trainer(tmp_path, max_steps=8, callbacks=[monitor]).fit(MLPClassifier(hidden=(32,)), DigitsDataModule())
    events = read_events(str(tmp_path))
    changes = len(monitor.regime_changes())
    assert len(events.scalars["probes/spectrum/regime"]) == 9
    assert len(events.texts["probes/spectrum/regime_history"]) == changes  # one per distinct table, not per probe
    assert len(set(events.texts["probes/spectrum/regime_history"])) == changes


# ---------------------------------------------------------------- failures
class FailingFrom(CondensationMonitor):
    """Condensation whose probes fail from step ``k`` on."""

    def __init__(self, k: int, **kwargs):
        super().__init__(**kwargs)
        self.k = k

    def measure(self, trainer, pl_module):
        if self.step >= self.k:
            raise RuntimeError(f"broken at step {self.step}")
        return super().measure(trainer, pl_module)


def test_failed_probes_are_counted_logged_listed_and_warned_again_when_they_persist(tmp_path):
    pl.seed_everything(0)
    monitor = FailingFrom(4, layers="auto", schedule=every(2), images_every=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer(tmp_path, max_steps=20, callbacks=[monitor]).fit(MLPClassifier(hidden=(32,)), DigitsDataModule())
    messages = [str(w.message) for w in caught if "lightning-probes/condensation" in str(w.message)]
    failed = list(range(4, 21, 2))  # 9 failed probes: 4, 6, ..., 20
    assert monitor.failures == monitor.failure_log.total == len(failed)
    assert sum("failed and was skipped" in m for m in messages) == 1  # once per kind of error
    again = [m for m in messages if "probes in a row have failed" in m]
    assert len(again) == len(failed) // IN_A_ROW and "broken at step 8" in again[0]
    events = read_events(str(tmp_path))
    assert events.scalars["probes/condensation/failed_probes"] == [(s, float(i + 1)) for i, s in enumerate(failed)]
    assert "broken at step 20" in events.texts["probes/condensation/failures"][-1]
    summary = monitor.summary()  # the failures are listed even though some probes succeeded
    assert "features.0: n_directions" in summary and "9 probe(s) failed, the last 9 in a row" in summary
    assert "step 20: RuntimeError: broken at step 20" in summary and summary.count("probe(s) failed") == 1
    run = read_run(str(tmp_path))
    from lightning_probes.report import render_html

    page = render_html(run)
    assert "Failed probes: 9" in page and "broken at step 20" in page


def test_probe_labels_outside_the_heads_classes_fail_at_fit_start(tmp_path):
    x = torch.randn(40, 64)
    with pytest.raises(ValueError, match=r"labels run 0\.\.12, but 'classifier' has 10 outputs"):
        trainer(tmp_path, max_steps=2, callbacks=[FeatureSpectrumMonitor(probe_data=(x, torch.arange(40) % 13))]
                ).fit(MLPClassifier(hidden=(16,)), DigitsDataModule())
    with pytest.raises(ValueError, match="3 values per sample .* 'classifier' has 10 outputs"):
        trainer(tmp_path, max_steps=2, callbacks=[FeatureSpectrumMonitor(probe_data=(x, torch.randn(40, 3)))]
                ).fit(MLPClassifier(hidden=(16,)), DigitsDataModule())


# ---------------------------------------------------------------- names
class TwoHeads(pl.LightningModule):
    """A multi-task digits model: one trunk, two 10-class heads (the second sees the label shifted by one)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 32), nn.ReLU())
        self.head_a, self.head_b = nn.Linear(32, 10), nn.Linear(32, 10)

    def forward(self, x):
        h = self.features(x)
        return self.head_a(h), self.head_b(h)

    def training_step(self, batch, batch_idx):
        x, y = batch
        a, b = self(x)
        return nn.functional.cross_entropy(a, y) + nn.functional.cross_entropy(b, (y + 1) % 10)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_two_monitors_of_one_kind_on_two_heads_keep_their_tags_and_sections_apart(tmp_path):
    pl.seed_everything(0)
    a, b = (FeatureSpectrumMonitor(head=h, schedule=every(2), images_every=0) for h in ("head_a", "head_b"))
    trainer(tmp_path, max_steps=6, callbacks=[a, b]).fit(TwoHeads(), DigitsDataModule())
    assert (a.name, b.name) == ("spectrum_head_a", "spectrum_head_b")
    events = read_events(str(tmp_path))
    for name in (a.name, b.name):
        assert [s for s, _ in events.scalars[f"probes/{name}/n_features"]] == [0, 2, 4, 6], name
    assert not any(t.startswith("probes/spectrum/") for t in events.scalars)
    assert {"probes/spectrum_head_a", "probes/spectrum_head_b"} <= set(events.charts())  # a section each
    # the head-dependent figures differ (NC3: the head weights against the class means), so neither overwrote the other
    assert events.scalars["probes/spectrum_head_a/nc3"] != events.scalars["probes/spectrum_head_b/nc3"]
    assert sorted(read_run(str(tmp_path)).monitors()) == ["spectrum_head_a", "spectrum_head_b"]


def test_a_single_monitor_keeps_its_class_name_and_name_sets_the_tags(tmp_path):
    pl.seed_everything(0)
    single = FeatureSpectrumMonitor(schedule=every(3), images_every=0)
    named = CondensationMonitor(layers="auto", schedule=every(3), images_every=0, name="cond-x")
    trainer(tmp_path, max_steps=3, callbacks=[single, named]).fit(MLPClassifier(hidden=(16,)), DigitsDataModule())
    assert single.name == "spectrum" and named.name == "cond-x"
    events = read_events(str(tmp_path))
    assert "probes/spectrum/rank" in events.scalars and "probes/cond-x/features.0/n_directions" in events.scalars
    with pytest.raises(ValueError, match="name must be"):
        FeatureSpectrumMonitor(name="a/b")


def test_two_monitors_that_would_write_the_same_tags_are_refused_at_setup_naming_both(tmp_path):
    first = FeatureSpectrumMonitor(head="head_a", name="spec")
    second = FeatureSpectrumMonitor(head="head_b", name="spec")
    with pytest.raises(ValueError, match=r"probes/spec/.*head='head_a'.*head='head_b'"):
        trainer(tmp_path, max_steps=1, callbacks=[MonitorGroup([first]), second]).fit(TwoHeads(), DigitsDataModule())
    clash = CondensationMonitor(layers="auto", name="spectrum")
    with pytest.raises(ValueError, match="probes/spectrum/"):  # a default name is taken as well
        trainer(tmp_path, max_steps=1, callbacks=[FeatureSpectrumMonitor(), clash]).fit(
            MLPClassifier(hidden=(16,)), DigitsDataModule())
