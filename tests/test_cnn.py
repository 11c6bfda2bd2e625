"""A small ResNet-style CNN with BatchNorm and Dropout (written here: the torchvision wheel matching torch 2.13 on
the index is the CUDA build, bundling libcudart and nvjpeg) under the spectrum on its ``fc`` head, condensation on
its convolutions (layers="auto"), concepts on a residual block's unit maps and interactions over image patches;
one short fit shared by the tests. Training with the monitors is the same as without them, BatchNorm buffers
included."""

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from helpers import read_events, trainer
from torch import nn

from lightning_probes.datasets import ShapesDataModule, ShapesProbe
from lightning_probes.measures.interactions import ImagePatches
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every

SIZE, STEPS = 16, 6


class Block(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the (1x1 conv + BN, when the shape changes) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + skip)


class TinyResNet(pl.LightningModule):
    def __init__(self, num_classes: int = 9) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.layer1 = Block(8, 8)
        self.layer2 = Block(8, 16, stride=2)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        z = self.layer2(self.layer1(self.stem(x)))
        return self.fc(self.dropout(F.adaptive_avg_pool2d(z, 1).flatten(1)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


# conv layers and (neurons, inputs per neuron): one output channel is one neuron, its weight the flattened kernel
CONVS = {"stem.0": (8, 3 * 9), "layer1.conv1": (8, 8 * 9), "layer1.conv2": (8, 8 * 9), "layer2.conv1": (16, 8 * 9),
         "layer2.conv2": (16, 16 * 9), "layer2.downsample.0": (16, 8)}


def _monitors():
    schedule = dict(schedule=every(3), images_every=1)
    return {
        "spectrum": FeatureSpectrumMonitor(head="fc", max_samples=64, **schedule),
        "condensation": CondensationMonitor(**schedule),
        "concepts": ConceptMonitor("layer1", ShapesProbe(num_samples=32, size=SIZE, seed=7), num_clusters=3,
                                   **schedule),
        "interactions": InteractionMonitor(ImagePatches((2, 2), (3, SIZE, SIZE)), num_samples=4, max_samples=64,
                                           solver_iterations=200, **schedule),
    }


def _fit(tmp_path, monitors):
    pl.seed_everything(0)
    model = TinyResNet()
    t = trainer(tmp_path, max_steps=STEPS, callbacks=list(monitors.values()))
    t.fit(model, ShapesDataModule(num_train=96, num_val=16, size=SIZE, batch_size=16))
    return model, t


@pytest.fixture(scope="session")
def cnn_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn")
    monitors = _monitors()
    model, t = _fit(path, monitors)
    return monitors, model, read_events(str(path))


def test_every_monitor_probed_the_cnn(cnn_run):
    monitors, _, events = cnn_run
    for name, monitor in monitors.items():
        assert [s for s, _ in monitor.history] == [0, 3, 6], name
        assert monitor.failures == 0, name
    assert events.scalars["probes/spectrum/rank"][-1][1] <= 16  # Φ is the 16 pooled channels fc reads
    assert events.images["probes/condensation/layer2.conv2/cosine_heatmap"] == [0, 3, 6]


def test_condensation_measures_every_conv_with_its_channels_as_neurons(cnn_run):
    monitors, model, _ = cnn_run
    condensation = monitors["condensation"]
    assert condensation.layers == list(CONVS)  # auto: every conv, not the fc output layer
    for name, (m, d) in CONVS.items():
        stats = condensation.last_stats[name]
        assert stats.n_neurons == m, name
        assert condensation.initial_weights[name].shape == (m, d), name
        assert 1 <= stats.n_directions <= m, name
        # weight_norm is that of the whole kernel tensor at the last probe (the final weights)
        norm = model.get_submodule(name).weight.detach().norm()
        assert condensation.history[-1][1][f"{name}/weight_norm"] == pytest.approx(float(norm), rel=1e-6), name
        assert condensation.history[-1][1][f"{name}/relative_change"] > 0, name


def test_concepts_explain_the_units_of_a_residual_block(cnn_run):
    monitors, _, _ = cnn_run
    last = monitors["concepts"].history[-1][1]
    assert last["n_units_explained"] + last["n_inactive_units"] == 8  # layer1's 8 channels are the units
    assert last["n_units_explained"] >= 1
    assert all(0 <= last[f"mean_iou_range_{c}"] <= 1 for c in (1, 2, 3))


def test_interactions_over_four_image_patches(cnn_run):
    monitors, _, _ = cnn_run
    last = monitors["interactions"].history[-1][1]
    assert {f"n_salient_order_{k}" for k in range(1, 5)} <= last.keys()
    assert 0 < last["n_salient"] <= 2 ** 4 * 2  # AND and OR terms over the 16 subsets of 4 patches
    assert sum(last[f"n_salient_order_{k}"] for k in range(1, 5)) <= last["n_salient"]


def test_training_is_the_same_as_without_the_monitors(cnn_run, tmp_path):
    _, probed, _ = cnn_run
    plain, _ = _fit(tmp_path, {})
    a, b = probed.state_dict(), plain.state_dict()
    assert a.keys() == b.keys() and any("running_mean" in k for k in a)  # BatchNorm buffers included
    for key in a:
        assert torch.equal(a[key], b[key]), key
