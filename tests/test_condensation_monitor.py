"""CondensationMonitor end to end: small- vs standard-init three-layer nets, read back from TensorBoard events."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import read_events, trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_probes.datasets import DigitsDataModule, RegressionDataModule
from lightning_probes.measures.condensation import effective_rank
from lightning_probes.models import MLPClassifier, ThreeLayerRegressor
from lightning_probes.monitors.condensation import LAYER_SCALARS, CondensationMonitor
from lightning_probes.schedules import every
from lightning_probes.triggers import StopWhen

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def fit(tmp_path, monitor, model, max_steps, data=None, **trainer_kw):
    trainer_kw.setdefault("callbacks", [monitor])
    t = trainer(tmp_path, max_steps=max_steps, limit_val_batches=0, **trainer_kw)
    t.fit(model, data or RegressionDataModule(num_train=1024, batch_size=64))
    return t


def small_model(**kw):
    return ThreeLayerRegressor(width=16, **kw)


# ---------------------------------------------------------------- the science, end to end
@pytest.mark.slow
def test_small_init_condenses_and_standard_init_does_not(tmp_path):
    """SCIENCE.md §2 on a width-100 tanh net, 1-D target sin(3x), SGD lr 0.2, batch 64, 2000 steps: with
    γ = 1.5 the second layer's effective rank falls from ≈80 by ≥5x after a plateau; with γ = 0.5 it stays."""
    logs = {}
    for gamma in (1.5, 0.5):
        pl.seed_everything(0)
        monitor = CondensationMonitor(schedule=every(500), images_every=2)
        model = ThreeLayerRegressor(width=100, init_gamma=gamma, lr=0.2)
        fit(tmp_path / f"g{gamma}", monitor, model, 2000)
        logs[gamma] = (monitor, read_events(str(tmp_path / f"g{gamma}")), model)

    monitor, events, model = logs[1.5]
    rank = dict(events.scalars["probes/condensation/layer2/effective_rank"])
    assert sorted(rank) == [0, 500, 1000, 1500, 2000]
    assert rank[0] > 75 and rank[0] / rank[2000] >= 5
    assert rank[500] > 75  # the plateau: no condensation yet during the initial stage
    directions = dict(events.scalars["probes/condensation/layer1/n_directions"])
    assert directions[2000] == 1  # W¹ onto one line (a direction and its opposite) after the plateau
    change = dict(events.scalars["probes/condensation/layer2/relative_change"])
    assert change[0] == 0 and change[500] < 0.5 and change[2000] > 5  # small, then a sudden rise
    # initial_stage_end: once per layer, the probe at which d log‖W‖/d step peaked, reported once it has halved
    end = events.scalars["probes/condensation/layer2/initial_stage_end"]
    rate = dict(events.scalars["probes/condensation/layer2/log_norm_rate"])
    peak = max(rate, key=rate.get)
    assert len(end) == 1 and end[0][1] == peak == monitor.stage_end["layer2"] and end[0][0] > peak
    assert dict(events.scalars["probes/condensation/layer2/norm_ratio"])[peak] > 2
    # the logged numbers are the measure on the final weights
    assert rank[2000] == pytest.approx(effective_rank(model.layer2.weight), rel=1e-5)

    monitor, events, _ = logs[0.5]
    rank = dict(events.scalars["probes/condensation/layer2/effective_rank"])
    assert 1 / 1.2 <= rank[0] / rank[2000] <= 1.2
    assert "probes/condensation/layer2/initial_stage_end" not in events.scalars
    assert "layer2" not in monitor.stage_end


def test_every_tag_pictures_text_and_dashboard_are_written(tmp_path):
    pl.seed_everything(0)
    model = small_model(init_gamma=1.0)
    monitor = CondensationMonitor(schedule=every(10), images_every=2)
    fit(tmp_path, monitor, model, 25)
    events = read_events(str(tmp_path))
    for layer in ("layer1", "layer2"):
        for name in LAYER_SCALARS:
            steps = [s for s, _ in events.scalars[f"probes/condensation/{layer}/{name}"]]
            # a rate needs a previous probe (log_change_rate: one with a non-zero change, i.e. after step 0)
            expected = {"log_norm_rate": [10, 20, 25], "log_change_rate": [20, 25]}.get(name, [0, 10, 20, 25])
            assert steps == expected, (layer, name)
        assert events.images[f"probes/condensation/{layer}/cosine_heatmap"] == [0, 20, 25]
        assert events.histograms[f"probes/condensation/{layer}/pairwise_cosines"] == [0, 20, 25]
    assert "output" not in {tag.split("/")[2] for tag in events.scalars if tag.startswith("probes/")}
    assert "| layer | neurons analysed |" in events.texts["probes/condensation/layers"][-1]
    charts = events.charts()["probes/condensation"]
    assert "condensed directions" in charts and "effective and stable rank" in charts
    # the logged values are the monitor's own history and the measure on the current weights
    assert dict(events.scalars["probes/condensation/layer2/stable_rank"])[25] == pytest.approx(
        monitor.history[-1][1]["layer2/stable_rank"], rel=1e-6)
    w = model.layer2.weight.detach()
    assert monitor.history[-1][1]["layer2/weight_norm"] == pytest.approx(float(w.norm()), rel=1e-5)


def test_heatmap_is_ordered_by_cluster(tmp_path):
    pl.seed_everything(0)
    monitor = CondensationMonitor(schedule=every(1000), images_every=1, at_end=False, heatmap_order="cluster")
    fit(tmp_path, monitor, small_model(init_gamma=1.0), 1)
    stats = monitor.last_stats["layer1"]
    ordered = stats.labels[stats.order]
    assert bool((ordered.diff() >= 0).all())  # every cluster is one contiguous block, largest first


def test_works_on_any_models_linear_layers(tmp_path):
    pl.seed_everything(0)
    monitor = CondensationMonitor(schedule=every(5), images_every=0)
    t = trainer(tmp_path, max_steps=5, callbacks=[monitor], limit_val_batches=0)
    t.fit(MLPClassifier(hidden=(32, 16)), DigitsDataModule(batch_size=64))
    assert monitor.layers == ["features.0", "features.2"]  # 'auto': every Linear but the output layer
    last = monitor.history[-1][1]
    assert 1 <= last["features.2/n_directions"] <= 16 and last["features.0/relative_change"] > 0


def test_stop_at_the_end_of_the_initial_stage(tmp_path):
    pl.seed_everything(0)
    monitor = CondensationMonitor(schedule=every(20), images_every=0, stage_by="relative_change",
                                  triggers=[StopWhen("layer2/relative_change", above=1.0)])
    t = fit(tmp_path, monitor, small_model(init_gamma=1.5), 5000)
    assert t.global_step < 5000 and t.global_step == monitor.stage_end["layer2"]
    assert monitor.stop_reason.startswith("probes/condensation/layer2/relative_change = ")


def test_resume_from_a_mid_run_checkpoint_gives_the_same_probes(tmp_path):
    def run(ckpt_path=None, dirpath=None):
        monitor = CondensationMonitor(schedule=every(7), images_every=0, stage_threshold=0.12,
                                      stage_by="relative_change")
        callbacks = [monitor]
        if dirpath:
            callbacks.append(ModelCheckpoint(dirpath=dirpath, every_n_train_steps=30, save_top_k=-1))
        pl.seed_everything(0)
        t = trainer(tmp_path, max_steps=60, callbacks=callbacks, enable_checkpointing=bool(dirpath), logger=False,
                    limit_val_batches=0)
        # full batch: the order of the samples after resuming does not matter
        t.fit(small_model(init_gamma=0.5), RegressionDataModule(num_train=16, batch_size=16),
              ckpt_path=ckpt_path)
        return monitor

    full = run(dirpath=tmp_path / "ckpt")
    resumed = run(ckpt_path=str(tmp_path / "ckpt" / "epoch=29-step=30.ckpt"))
    steps = [s for s, _ in full.history]
    assert steps == [0, 7, 14, 21, 28, 35, 42, 49, 56, 60]
    assert [s for s, _ in resumed.history] == steps
    # layer1's stage end comes back from the checkpoint, layer2's is found after resuming, from the restored W_0
    assert resumed.stage_end == full.stage_end
    assert full.stage_end["layer1"] < 30 < full.stage_end["layer2"]
    # W_0 came back from the checkpoint: the relative change after resuming is measured from the real init
    for (_, a), (_, b) in zip(full.history, resumed.history):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-9)


# ---------------------------------------------------------------- bad input
def test_dead_neurons_are_counted_and_left_out(tmp_path):
    pl.seed_everything(0)
    model = small_model(init_gamma=0.5)
    with torch.no_grad():  # neurons 0-2 of layer2: no weights, no bias, no output weight -> stay dead
        model.layer2.weight[:3] = 0
        model.layer2.bias[:3] = 0
        model.output.weight[:, :3] = 0
    monitor = CondensationMonitor(schedule=every(5), images_every=1)
    fit(tmp_path, monitor, model, 10)
    assert all(v["layer2/dead_neurons"] == 3 for _, v in monitor.history)
    assert all(v["layer1/dead_neurons"] == 0 for _, v in monitor.history)
    assert bool((monitor.last_stats["layer2"].labels[:3] == -1).all())


def test_wide_layers_are_sampled_deterministically_and_say_so(tmp_path):
    pl.seed_everything(0)
    monitor = CondensationMonitor(layers=["layer2"], max_neurons=12, schedule=every(5), images_every=1)
    with pytest.warns(UserWarning, match=r"'layer2' has 16 neurons > max_neurons=12.*fixed sample") as record:
        fit(tmp_path, monitor, small_model(init_gamma=0.5), 10)
    assert sum("max_neurons" in str(w.message) for w in record) == 1
    stats = monitor.last_stats["layer2"]
    assert stats.sampled and len(stats.neuron_indices) == 12 and stats.cosine.shape == (12, 12)
    assert "12 / 16" in read_events(str(tmp_path)).texts["probes/condensation/layers"][-1]


def test_nan_weights_warn_once_skip_and_training_goes_on(tmp_path):
    pl.seed_everything(0)
    model = small_model(init_gamma=0.5)

    class Poison(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step == 10:
                with torch.no_grad():
                    pl_module.layer2.weight[0, 0] = float("nan")

    monitor = CondensationMonitor(schedule=every(5), images_every=0)
    with pytest.warns(UserWarning, match="NaN or inf weights") as record:
        t = fit(tmp_path, monitor, model, 25, callbacks=[Poison(), monitor])
    assert t.global_step == 25
    assert [s for s, _ in monitor.history] == [0, 5]
    assert monitor.failures == 4  # 10, 15, 20, 25
    # warned once for the kind of error, and once more when 3 probes in a row had failed
    assert sum("NaN or inf" in str(w.message) and "failed and was skipped" in str(w.message) for w in record) == 1
    assert sum("3 probes in a row have failed" in str(w.message) for w in record) == 1


def test_unknown_layer_lists_the_linear_layers(tmp_path):
    with pytest.raises(ValueError, match=r"No module named 'hidden'.*'layer1', 'layer2', 'output'"):
        fit(tmp_path, CondensationMonitor(layers=["hidden"]), small_model(), 1)


def test_non_linear_layer_and_single_neuron_layer_are_refused(tmp_path):
    with pytest.raises(TypeError, match="'activation': a Tanh is not a neuron layer"):
        fit(tmp_path, CondensationMonitor(layers=["activation"]), small_model(), 1)
    with pytest.raises(ValueError, match="'output' has 1 neuron; .* at least 2"):
        fit(tmp_path, CondensationMonitor(layers=["output"]), small_model(), 1)


def test_auto_needs_a_hidden_linear_layer(tmp_path):
    class OneLayer(ThreeLayerRegressor):
        def __init__(self):
            super().__init__(width=4)
            self.layer1, self.layer2 = nn.Identity(), nn.Identity()

    with pytest.raises(ValueError, match="has 1 Linear/Conv layer"):
        fit(tmp_path, CondensationMonitor(), OneLayer(), 1)


@pytest.mark.parametrize("bad", [dict(layers="layer1"), dict(layers=[]), dict(layers=["a", "a"]),
                                 dict(threshold=0.0), dict(threshold=1.5), dict(max_neurons=1),
                                 dict(stage_threshold=0.0), dict(probe_data="train"), dict(max_samples=10),
                                 dict(schedule="often"), dict(images_every=-1), dict(on_error="ignore"),
                                 dict(triggers=[StopWhen("layer2/initial_stage_end", above=0.0)])])
def test_bad_arguments_fail_in_the_constructor(bad):
    with pytest.raises((ValueError, TypeError)):
        CondensationMonitor(**bad)


def test_state_key_tells_monitors_apart():
    assert CondensationMonitor().state_key != CondensationMonitor(signed=True).state_key
    assert CondensationMonitor().state_key == CondensationMonitor().state_key
