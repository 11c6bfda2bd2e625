"""ConceptMonitor's paper measures on a planted unit with exactly known answers (issue 16): range importance,
label masking, mask sizes and the untrained baseline."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import read_events, trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_probes.datasets import make_shapes
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.schedules import every


class CircleDetector(pl.LightningModule):
    """Inputs are the concept masks (N, K, H, W). Unit 0 = 3 on circles, 1 on the background, 0 elsewhere; the
    head predicts class 1 exactly when some position of unit 0 exceeds 2 (a circle is in the image)."""

    def __init__(self, names):
        super().__init__()
        self.circle, self.background = names.index("circle"), names.index("background")
        self.units = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))  # something to optimise, kept at 1 by lr = 0

    def forward(self, x):
        unit = 3 * x[:, self.circle] + x[:, self.background]
        maps = self.units(unit[:, None] * self.scale)  # (N, 1, H, W)
        peak = maps.flatten(1).amax(1)
        return torch.stack((torch.full_like(peak, 2.0), peak), -1)  # class 1 iff peak > 2

    def training_step(self, batch, _):
        return self(batch[0]).sum() * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_range_importance_label_masking_sizes_and_untrained_baseline(tmp_path):
    data = make_shapes(24, size=16, seed=3)
    x = data.concepts.float()
    names = list(data.concept_names)
    monitor = ConceptMonitor("units", data.concepts, names, num_clusters=2, probe_data=(x, data.labels),
                             schedule=every(2), on_error="raise")
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=2, callbacks=[monitor])
    t.fit(CircleDetector(names), DataLoader(TensorDataset(x, data.labels), batch_size=8))
    last = dict(monitor.history)[2]
    circle = data.concepts[:, names.index("circle")].flatten(1)
    background = data.concepts[:, names.index("background")].flatten(1)
    with_circle = circle.any(1)
    # range 1 = the background (value 1), range 2 = the circles (value 3)
    assert monitor.last_formulas == {"0/1": "background", "0/2": "circle"}
    # zeroing the circles turns every class-1 prediction (a circle present) into class 0; the background never
    assert last["range_importance_range_2"] == pytest.approx(float(with_circle.double().mean()))
    assert last["range_importance_range_1"] == 0.0
    # the unit at the kept label is exactly what it was: the range survives label masking entirely
    assert last["label_masking_range_1"] == pytest.approx(1.0) and last["label_masking_range_2"] == pytest.approx(1.0)
    sizes = circle.sum(1)[with_circle].double() / circle.shape[1]
    assert last["mask_size_range_2"] == pytest.approx(float(sizes.mean()))
    assert last["mask_size_range_1"] == pytest.approx(float((background.sum(1).double() / background.shape[1]).mean()))
    # the first probe (step 0) is the baseline: nothing changes in a network that does not learn
    assert monitor.untrained_step == 0
    for c in (1, 2):
        assert last[f"untrained_iou_range_{c}"] == 1.0 and last[f"iou_gain_over_untrained_range_{c}"] == 0.0
        assert last[f"same_formula_as_untrained_range_{c}"] == 1.0
    events = read_events(str(tmp_path))
    assert [s for s, _ in events.scalars["probes/concepts/range_importance_range_2"]] == [0, 2]
    text = events.texts["probes/concepts/explanations"][-1]
    assert "| importance | label masking | untrained formula (step 0) |" in text


def test_paper_measures_can_be_switched_off(tmp_path):
    data = make_shapes(8, size=16, seed=3)
    x = data.concepts.float()
    names = list(data.concept_names)
    monitor = ConceptMonitor("units", data.concepts, names, num_clusters=2, probe_data=(x, data.labels),
                             schedule=every(2), range_importance=False, label_masking=False, on_error="raise")
    t = trainer(tmp_path, max_steps=1, callbacks=[monitor])
    t.fit(CircleDetector(names), DataLoader(TensorDataset(x, data.labels), batch_size=8))
    _, last = monitor.history[-1]
    assert not any(k.startswith(("range_importance", "label_masking")) for k in last)
    assert "mask_size_range_1" in last
