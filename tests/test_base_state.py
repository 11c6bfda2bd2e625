"""The base's state: trigger states keyed by trigger (old position lists still load), and the DDP rollback snapshot
holding only what a probe may change."""

import pickle

import pytest
import torch

from lightning_probes.monitors.base import Monitor, ProbeResult, Report
from lightning_probes.triggers import StopWhen


class Stateful(Monitor):
    name = "stateful"
    needs_probe_data = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.means = torch.zeros(4)

    def measure(self, trainer, pl_module):
        return ProbeResult(scalars={"a": 1.0})

    def state_dict(self):
        return {**super().state_dict(), "means": self.means.clone()}

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.means = state_dict["means"].clone()


def test_report_is_the_old_name_of_probe_result():
    assert Report is ProbeResult


def test_trigger_states_follow_their_trigger_when_the_triggers_are_reordered():
    a, b = StopWhen("a", below=0.0, patience=5), StopWhen("b", above=9.0, patience=5)
    a.count, b.count = 2, 4
    state = Stateful(triggers=[a, b]).state_dict()
    fresh_a, fresh_b = StopWhen("a", below=0.0, patience=5), StopWhen("b", above=9.0, patience=5)
    Stateful(triggers=[fresh_b, fresh_a]).load_state_dict(state)
    assert (fresh_a.count, fresh_b.count) == (2, 4)


def test_a_changed_trigger_warns_and_starts_afresh():
    a = StopWhen("a", below=0.0, patience=5)
    a.count = 3
    state = Stateful(triggers=[a]).state_dict()
    other = StopWhen("a", below=1.0, patience=5)
    with pytest.warns(UserWarning, match="no saved state for StopWhen"):
        Stateful(triggers=[other]).load_state_dict(state)
    assert other.count == 0


def test_an_old_checkpoint_with_position_matched_trigger_states_still_loads():
    state = Stateful(triggers=[StopWhen("a", below=0.0)]).state_dict()
    del state["trigger_keys"]
    state["triggers"] = [{"count": 3}]
    trig = StopWhen("a", below=0.0, patience=5)
    Stateful(triggers=[trig]).load_state_dict(state)
    assert trig.count == 3


def test_the_rollback_snapshot_holds_only_the_subclass_state_and_restores_it():
    monitor = Stateful(triggers=[StopWhen("a", below=0.0)])
    for step in range(1000):
        monitor.history.append((step, {f"s{i}": float(i) for i in range(15)}))
    whole, snapshot = monitor.state_dict(), monitor.probe_state()
    assert set(snapshot) == {"means"}
    assert len(pickle.dumps(snapshot)) * 50 < len(pickle.dumps(whole))  # the history is not copied
    monitor.means += 1
    monitor.load_probe_state(snapshot)
    assert torch.equal(monitor.means, torch.zeros(4)) and len(monitor.history) == 1000
