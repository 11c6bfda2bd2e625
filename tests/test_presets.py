"""Presets: which monitors they build from what they are given, their schedules, and a fit with all five."""

import lightning.pytorch as pl
import pytest
from helpers import all_five, read_events, trainer

from lightning_probes import MonitorGroup, StopWhen, presets
from lightning_probes.datasets import DigitsDataModule, DigitsProbe
from lightning_probes.models import MLPClassifier
from lightning_probes.schedules import Budget, Clock, LogSpaced

PRESETS = [presets.economy, presets.standard, presets.full]
LEVEL_FRACTION = {"economy": 0.02, "standard": 0.08}


def names(monitors):
    return [m.name for m in monitors]


@pytest.mark.parametrize("preset", PRESETS, ids=lambda f: f.__name__)
def test_the_head_alone_gives_the_monitors_that_need_nothing_more(preset):
    assert names(preset(head="classifier")) == ["spectrum", "condensation"]
    assert names(preset(head="classifier", condensation_layers=None)) == ["spectrum"]
    assert names(preset(**all_five())) == ["spectrum", "condensation", "interactions", "lib", "concepts"]


@pytest.mark.parametrize("preset", [presets.economy, presets.standard], ids=lambda f: f.__name__)
def test_budget_presets_split_their_share_of_training_time_evenly(preset):
    for monitors in (preset(head="classifier"), preset(**all_five())):
        fractions = [m.schedule.fraction for m in monitors]
        assert all(isinstance(m.schedule, Budget) for m in monitors)
        assert len(set(fractions)) == 1
        assert sum(fractions) == pytest.approx(LEVEL_FRACTION[preset.__name__], rel=1e-5)


def test_a_budget_monitor_keeps_to_its_share_of_a_simulated_run():
    """Replay the budget decision against a clock: 10 ms training steps, 30 ms probes, 5000 steps."""
    (spectrum, condensation) = presets.economy(head="classifier")
    schedule, clock = spectrum.schedule, Clock()
    for step in range(1, 5001):
        clock.train_seconds += 0.010
        if schedule(step, clock):
            clock.probe_seconds += 0.030
            clock.last_probe_seconds = 0.030
            clock.n_probes += 1
            clock.last_step = step
    assert clock.probe_seconds <= schedule.fraction * clock.train_seconds
    assert clock.probe_seconds >= 0.9 * schedule.fraction * clock.train_seconds  # and uses it: not starved


def test_presets_ask_for_more_detail_as_they_go_up():
    economy, standard, full = (p(**all_five()) for p in PRESETS)
    by_name = [dict(zip(names(ms), ms)) for ms in (economy, standard, full)]
    assert [d["interactions"].num_samples for d in by_name] == [4, 8, 16]
    assert [d["concepts"].search for d in by_name] == ["beam", "exact", "exact"]
    assert [d["concepts"].max_units for d in by_name] == [16, 32, None]
    assert [d["spectrum"].nc4_means for d in by_name] == ["previous", "previous", "current"]
    assert [d["lib"].ablation for d in by_name] == [False, False, True]
    assert all(isinstance(m.schedule, LogSpaced) for m in full)
    assert [d["spectrum"].images_every for d in by_name] == [10, 5, 2]
    # a budget preset forces no unbudgeted probe at the end; full probes the final state too
    assert [all(m.at_end for m in d.values()) for d in by_name] == [True, True, True]  # the final state, always


def test_interaction_layers_and_probe_set_sizes_reach_their_monitors():
    (_, _, interactions, lib, concepts) = presets.full(**all_five(interaction_layers=["features.1"], max_samples=200))
    assert interactions.layers == ["features.1"] and interactions.probe_set.max_samples == 200
    assert lib.probe_set.max_samples == 200  # LIB's num_samples is capped by the preset's max_samples
    assert concepts.probe_set.max_samples == 120  # the concepts' own samples, not the preset's


def test_triggers_go_to_the_monitor_they_name():
    trigger = StopWhen("nc1", below=0.1)
    spectrum, condensation = presets.standard(head="classifier", triggers={"spectrum": [trigger]})
    assert spectrum.triggers == [trigger] and condensation.triggers == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(concepts=DigitsProbe(20)), "needs both concept_layer"),
        (dict(concept_layer="features.1"), "needs both concept_layer"),
        (dict(interaction_layers=["features.1"]), "without players"),
        (dict(triggers={"lib": []}), r"does not build; it builds \['spectrum', 'condensation'\]"),
    ],
    ids=["concepts-without-layer", "layer-without-concepts", "layers-without-players", "trigger-for-absent-monitor"],
)
def test_incomplete_arguments_are_refused_with_what_is_missing(kwargs, message):
    with pytest.raises(ValueError, match=message):
        presets.economy(head="classifier", **kwargs)


def test_all_five_train_together_on_one_dashboard(tmp_path):
    monitors = presets.standard(**all_five(max_samples=120))
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=6, callbacks=monitors)
    assert isinstance(monitors, MonitorGroup) and monitors in t.callbacks  # one callback for Lightning to dispatch
    t.fit(MLPClassifier(hidden=(32,)), DigitsDataModule())
    for monitor in monitors:  # step 0 (at_start), the floor's middle probe, the final state (at_end)
        steps = [s for s, _ in monitor.history]
        assert steps[0] == 0 and steps[-1] == 6 and len(steps) >= 3, (monitor.name, steps)
        assert monitor.failures == 0
    events = read_events(t.log_dir)
    assert list(events.charts()) == [f"probes/{name}" for name in names(monitors)]  # one layout, a category each
    for name in names(monitors):
        assert any(tag.startswith(f"probes/{name}/") for tag in events.scalars), name


def test_a_misspelt_argument_is_refused_with_the_valid_names():
    with pytest.raises(TypeError, match=r"got unknown \['player'\]") as err:
        presets.full(head="classifier", player=object())
    assert "'players'" in str(err.value)
