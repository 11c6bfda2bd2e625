"""MonitorGroup: several monitors as one Lightning callback, each still on its own schedule, state and tags."""

import pytest
import torch
from helpers import fit_digits, read_events
from lightning.pytorch.callbacks import Callback

from lightning_probes import CondensationMonitor, FeatureSpectrumMonitor, MonitorGroup, every
from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.monitors.group import attached_monitors


def small_model():
    return MLPClassifier(hidden=(32, 32), lr=0.2)


def pair(spectrum_every=5, condensation_every=10):
    return [FeatureSpectrumMonitor(schedule=every(spectrum_every), images_every=2, max_samples=200),
            CondensationMonitor(schedule=every(condensation_every), images_every=0)]


class ValidationCounter(Monitor):
    """A monitor that implements one hook the base does not: the group must forward it to this monitor only."""

    name = "counter"
    needs_probe_data = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.validation_ends = 0

    def on_validation_end(self, trainer, pl_module):
        self.validation_ends += 1

    def measure(self, trainer, pl_module):
        return ProbeResult(scalars={"validation_ends": float(self.validation_ends)})


class PlainCounter(Callback):
    validation_ends = 0

    def on_validation_end(self, trainer, pl_module):
        self.validation_ends += 1


def test_lightning_sees_one_callback_and_each_monitor_keeps_its_schedule_and_tags(tmp_path):
    group = MonitorGroup(pair())
    trainer = fit_digits(tmp_path, group, small_model(), max_steps=20)
    assert sum(isinstance(cb, (Monitor, MonitorGroup)) for cb in trainer.callbacks) == 1
    assert attached_monitors(trainer) == group.monitors
    spectrum, condensation = group
    assert [s for s, _ in spectrum.history] == [0, 5, 10, 15, 20]
    assert [s for s, _ in condensation.history] == [0, 10, 20]
    events = read_events(str(tmp_path))
    assert [s for s, _ in events.scalars["probes/spectrum/n_features"]] == [0, 5, 10, 15, 20]
    assert [s for s, _ in events.scalars["probes/condensation/features.0/n_directions"]] == [0, 10, 20]
    assert list(events.charts()) == ["probes/spectrum", "probes/condensation"]  # one layout for the group
    assert "probes/spectrum/eigenvalues" in events.images


def test_a_hook_goes_only_to_the_monitors_that_implement_it(tmp_path):
    counter = ValidationCounter(schedule=every(10), images_every=0)
    spectrum = FeatureSpectrumMonitor(schedule=every(10), images_every=0, max_samples=200)
    group = MonitorGroup([spectrum, counter])
    assert group._implementing["on_validation_end"] == [counter]
    assert group._implementing["on_train_batch_end"] == [spectrum, counter]
    plain = PlainCounter()  # the same hook on an ungrouped callback: the count the group must reproduce
    fit_digits(tmp_path, group, small_model(), max_steps=40, logger=False, callbacks=[group, plain])
    assert counter.validation_ends == plain.validation_ends >= 2  # the sanity check and at least one epoch's end
    assert [s for s, _ in counter.history] == [0, 10, 20, 30, 40]


def test_resume_from_a_checkpoint_restores_every_grouped_monitor(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(ckpt_path=None, dirpath=None):
        group = MonitorGroup(pair(spectrum_every=7, condensation_every=11))
        callbacks = [group] + ([ModelCheckpoint(dirpath=dirpath, every_n_train_steps=30, save_top_k=-1)]
                               if dirpath else [])
        trainer = fit_digits(tmp_path, group, small_model(), max_steps=60, callbacks=callbacks, logger=False,
                             enable_checkpointing=bool(dirpath), ckpt_path=ckpt_path)
        return group, trainer

    full, _ = run(dirpath=tmp_path / "ckpt")
    saved = torch.load(tmp_path / "ckpt" / "epoch=1-step=30.ckpt", weights_only=False)["callbacks"][full.state_key]
    assert set(saved) == {m.state_key for m in full}  # nested under each monitor's own key
    resumed, _ = run(ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=30.ckpt"))
    for before, after in zip(full, resumed):
        assert [s for s, _ in after.history] == [s for s, _ in before.history]
    assert [s for s, _ in resumed[0].history] == [0, 7, 14, 21, 28, 35, 42, 49, 56, 60]
    assert [s for s, _ in resumed[1].history] == [0, 11, 22, 33, 44, 55, 60]


def test_a_checkpoint_without_a_monitor_s_state_says_so():
    group = MonitorGroup(pair())
    state = group.state_dict()
    state.pop(group[1].state_key)
    with pytest.warns(UserWarning, match=r"no state for the grouped monitor\(s\) \['condensation'\]"):
        MonitorGroup(pair()).load_state_dict(state)


def test_bad_members_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        MonitorGroup([])
    with pytest.raises(TypeError, match="DigitsDataModule"):
        MonitorGroup([FeatureSpectrumMonitor(), DigitsDataModule()])
    with pytest.raises(ValueError, match="same state_key"):
        MonitorGroup([FeatureSpectrumMonitor(), FeatureSpectrumMonitor()])


def test_state_key_names_the_members_and_follows_their_changes():
    group = MonitorGroup(pair())
    first = group.state_key
    assert first == group._generate_state_key(monitors=[m.state_key for m in group])
    assert group.state_key is first  # read on every hook call: not rebuilt while nothing changed
    group[0].schedule = every(3)
    assert group.state_key != first and "every(3, start=0)" in group.state_key
