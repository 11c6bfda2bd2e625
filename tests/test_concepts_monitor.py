"""ConceptMonitor end to end: planted units with known formulas, a real CNN on coloured shapes, bad input."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import read_events, trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_probes.datasets import ShapesDataModule, ShapesProbe, make_shapes
from lightning_probes.models import ShapesCNN
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.schedules import every

TAGS = ["mean_iou_range_1", "mean_iou_range_2", "mean_iou_range_3", "specialisation", "n_units_explained",
        "n_inactive_units", "n_formula_changes", "n_beam_fallbacks"]


class Planted(pl.LightningModule):
    """Inputs are the concept masks themselves (N, K, H, W); layer ``units`` computes fixed unit maps:
    unit 0 = 3 on red circles, 2 on squares, 1 on the background (0 elsewhere); unit 1 never activates."""

    def __init__(self, names):
        super().__init__()
        self.index = {n: i for i, n in enumerate(names)}
        self.units = nn.Identity()
        self.head = nn.Linear(2, 9)

    def forward(self, x):
        c = {n: x[:, i] for n, i in self.index.items()}
        red_circle = torch.relu(c["circle"] + c["red"] - 1)  # AND of two 0/1 masks
        unit0 = 3 * red_circle + 2 * c["square"] + c["background"]
        maps = self.units(torch.stack([unit0, torch.zeros_like(unit0)], 1))  # (N, 2, H, W)
        return self.head(maps.mean((2, 3)))

    def training_step(self, batch, _):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.head.parameters(), lr=0.01)


def planted_fit(tmp_path, max_steps=4, **monitor_kw):
    data = make_shapes(24, size=16, seed=3)
    x = data.concepts.float()
    monitor_kw.setdefault("schedule", every(2))
    monitor = ConceptMonitor("units", data.concepts, data.concept_names, num_clusters=3,
                             probe_data=(x, data.labels), **monitor_kw)
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=max_steps, callbacks=[monitor])
    t.fit(Planted(data.concept_names), DataLoader(TensorDataset(x, data.labels), batch_size=8))
    return monitor, read_events(str(tmp_path))


def test_planted_unit_formulas_read_back_from_tensorboard(tmp_path):
    with pytest.warns(UserWarning, match=r"units \[1\] of 'units' never activate"):
        monitor, events = planted_fit(tmp_path)
    for tag in TAGS:
        assert [s for s, _ in events.scalars[f"probes/concepts/{tag}"]] == [0, 2, 4], tag
    last = dict(monitor.history)[4]
    # unit 0 is explained exactly in each range; unit 1 is inactive, reported and left out of the means
    assert last["mean_iou_range_1"] == last["mean_iou_range_2"] == last["mean_iou_range_3"] == 1.0
    assert last["n_units_explained"] == 1.0 and last["n_inactive_units"] == 1.0 and last["specialisation"] == 0.0
    assert last["n_formula_changes"] == 0.0 and last["n_beam_fallbacks"] == 0.0
    text = events.texts["probes/concepts/explanations"][-1]
    assert "never activate on the probe set (not explained): [1]" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| 0 |")]
    assert [(r[1], r[3], r[4]) for r in rows] == [("1", "background", "1"), ("2", "square", "1"),
                                                  ("3", "circle AND red", "1")]
    assert events.images["probes/concepts/iou_per_range"] == [0]  # images_every=5: the first of 3 probes
    charts = events.charts()["probes/concepts"]
    assert "mean IoU per activation range" in charts and "specialisation (highest - lowest range)" in charts


def test_time_budget_falls_back_to_beam_and_says_so(tmp_path):
    with pytest.warns(UserWarning, match="fell back to beam search"):
        monitor, events = planted_fit(tmp_path, max_steps=1, time_budget=1e-9, schedule=every(1))
    assert all(v["n_beam_fallbacks"] > 0 for _, v in monitor.history)
    assert "used beam search" in events.texts["probes/concepts/explanations"][-1]


def test_per_sample_concepts_on_an_mlp_layer(tmp_path):
    g = torch.Generator().manual_seed(0)
    concepts = torch.rand(64, 4, generator=g) < 0.5  # (N, K) per-sample concepts
    x = concepts.float()

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Identity()
            self.out = nn.Linear(1, 2)

        def forward(self, x):
            # one unit: 2 on (a AND NOT b) OR d, 1 elsewhere
            unit = 1 + torch.maximum(x[:, 0] * (1 - x[:, 1]), x[:, 3])
            return self.out(self.hidden(unit[:, None]))

        def training_step(self, batch, _):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    y = torch.zeros(64, dtype=torch.long)
    monitor = ConceptMonitor("hidden", concepts, list("abcd"), num_clusters=2, schedule=every(1), images_every=1,
                             probe_data=(x, y))
    trainer(tmp_path, max_steps=1, callbacks=[monitor]).fit(Net(), DataLoader(TensorDataset(x, y), batch_size=16))
    text = read_events(str(tmp_path)).texts["probes/concepts/explanations"][-1]
    assert "| 0 | 2 | [2, 2] | (a AND NOT b) OR d | 1 |" in text
    assert monitor.history[-1][1]["mean_iou_range_2"] == 1.0


def test_shapes_cnn_fit_explains_a_conv_layer(tmp_path):
    probe = ShapesProbe(num_samples=32, size=16, seed=7)
    monitor = ConceptMonitor("conv2", probe, units=[0, 1, 2, 3], num_clusters=3, schedule=every(4), images_every=1)
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=8, callbacks=[monitor])
    t.fit(ShapesCNN(channels=(8, 8)), ShapesDataModule(num_train=128, num_val=32, size=16, batch_size=16))
    events = read_events(str(tmp_path))
    assert [s for s, _ in monitor.history] == [0, 4, 8]
    logged = dict(events.scalars["probes/concepts/specialisation"])  # float32 in the event file
    assert logged == pytest.approx({s: v["specialisation"] for s, v in monitor.history}, rel=1e-6)
    for _, values in monitor.history:
        assert all(0 <= values[f"mean_iou_range_{c}"] <= 1 for c in (1, 2, 3))
    assert events.images["probes/concepts/iou_per_range"] == [0, 4, 8]
    text = events.texts["probes/concepts/explanations"][-1]
    assert text.count("| exact |") == 12  # 4 units x 3 ranges, all by the exact search


def test_state_dict_round_trip():
    probe = ShapesProbe(num_samples=8, size=16)
    monitor = ConceptMonitor("conv2", probe)
    monitor.last_formulas = {"0/1": "circle"}
    other = ConceptMonitor("conv2", probe)
    other.load_state_dict(monitor.state_dict())
    assert other.last_formulas == {"0/1": "circle"} and other.state_key == monitor.state_key


# ---------------------------------------------------------------- bad input
def shapes_fit(tmp_path, monitor, model=None):
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=1, callbacks=[monitor])
    t.fit(model or ShapesCNN(channels=(4, 4)), ShapesDataModule(num_train=32, num_val=8, size=16, batch_size=8))


def test_unknown_layer_lists_the_modules(tmp_path):
    with pytest.raises(ValueError, match=r"No module named 'conv3'.*'conv1', 'conv1.0'"):
        shapes_fit(tmp_path, ConceptMonitor("conv3", ShapesProbe(8, size=16)))


def test_concepts_not_aligned_with_the_probe_set(tmp_path):
    data = make_shapes(8, size=16)
    monitor = ConceptMonitor("conv2", data.concepts, data.concept_names, probe_data=data.images[:6])
    with pytest.raises(ValueError, match="describe 8 samples but the probe set has 6"):
        shapes_fit(tmp_path, monitor)


def test_concept_masks_smaller_than_the_maps(tmp_path):
    data = make_shapes(8, size=16)
    small = data.concepts[:, :, ::4, ::4]  # 4 x 4 masks, conv1 maps are 16 x 16
    monitor = ConceptMonitor("conv1", small, data.concept_names, probe_data=data.images)
    with pytest.raises(ValueError, match="maps are 16x16 but the concept masks are 4x4"):
        shapes_fit(tmp_path, monitor)


def test_per_position_concepts_on_a_flat_layer(tmp_path):
    probe = ShapesProbe(8, size=16)
    with pytest.raises(ValueError, match="need a spatial layer"):
        shapes_fit(tmp_path, ConceptMonitor("classifier", probe))


def test_units_out_of_range(tmp_path):
    with pytest.raises(ValueError, match=r"units \[0, 9\] out of range: layer 'conv2' has 4 channels"):
        shapes_fit(tmp_path, ConceptMonitor("conv2", ShapesProbe(8, size=16), units=[0, 9]))


@pytest.mark.parametrize("bad", [
    dict(num_clusters=0), dict(max_length=4), dict(iou_threshold=2.0), dict(search="greedy"), dict(time_budget=0),
    dict(units=[]), dict(units=[1, 1]), dict(units=[-1]), dict(beam_width=0), dict(layer=""),
    dict(concept_names=["a"]), dict(probe_data="val"), dict(max_samples=4),
])
def test_bad_arguments_fail_in_the_constructor(bad):
    kwargs = dict(layer="conv2", concepts=ShapesProbe(8, size=16))
    kwargs.update(bad)
    with pytest.raises((ValueError, TypeError)):
        ConceptMonitor(**kwargs)


@pytest.mark.parametrize("concepts, match", [
    (torch.zeros(8, 3, dtype=torch.bool), "all masks are False"),
    (torch.zeros(0, 3, dtype=torch.bool), "empty"),
    (torch.rand(8, 3), "boolean"),
    (torch.ones(8, 3, 4, 2, 2, dtype=torch.bool), "shape"),  # (N, K, T) is per-token concepts now
    ([[True]], "ConceptProbe"),
])
def test_bad_concepts(concepts, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ConceptMonitor("conv2", concepts, ["a", "b", "c"])


def test_concept_tensor_needs_names():
    with pytest.raises(ValueError, match="concept_names is required"):
        ConceptMonitor("conv2", torch.ones(4, 2, dtype=torch.bool))


def test_max_units_explains_evenly_spaced_units_of_a_wide_layer(tmp_path):
    probe = ShapesProbe(num_samples=16, size=16, seed=3)
    monitor = ConceptMonitor("conv2", probe, max_units=3, num_clusters=2, schedule=every(100), images_every=0)
    trainer(tmp_path, max_steps=1, callbacks=[monitor], logger=False).fit(
        ShapesCNN(channels=(8, 32)), ShapesDataModule(num_train=32, num_val=16, size=16, batch_size=16))
    assert monitor._units == [0, 16, 31]  # linspace(0, 31, 3) rounded: both ends and the middle
    text = monitor.summary()
    assert "of 3 units explained" in text
    with pytest.raises(ValueError, match="not both"):
        ConceptMonitor("conv2", probe, units=[0], max_units=2)
    with pytest.raises(ValueError, match="max_units must be a positive integer"):
        ConceptMonitor("conv2", probe, max_units=0)
