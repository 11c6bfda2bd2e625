"""InteractionMonitor end to end: real fits on scikit-learn digits, read back from TensorBoard event files."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import fit_digits, read_events, trainer
from torch import nn

from lightning_probes.datasets import load_digits_tensors
from lightning_probes.measures.interactions import FeatureGroups, ImagePatches, Players
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.schedules import every

PATCHES = [5, 6, 9, 10, 1, 2]  # 6 players keep the fits fast: 64 masked inputs per sample


def players(n=6):
    return ImagePatches((4, 4), (8, 8), select=PATCHES[:n], flatten=True)


def fit(tmp_path, monitor, max_steps=20, model=None, **trainer_kw):
    return fit_digits(tmp_path, monitor, model or MLPClassifier(hidden=(32, 32), lr=0.2), max_steps, **trainer_kw)


def test_fit_logs_every_tag_the_dashboard_pictures_and_text(tmp_path):
    monitor = InteractionMonitor(players(), layers=["features.1", "features.3"], num_samples=4, max_samples=200,
                                 schedule=every(10), images_every=2, solver_iterations=300)
    fit(tmp_path, monitor, max_steps=20)
    events = read_events(str(tmp_path))
    tags = ["n_salient", "mean_order", "objective", "clamped_fraction", *[f"n_salient_order_{k}" for k in range(1, 7)],
            "certified_gap_max", "certified_gap_mean", "exact_fallback_fraction"]
    for layer in ("features.1", "features.3"):
        tags += [f"{layer}/{k}" for k in ("completeness", "redundancy", "iou", "probe_accuracy",
                                          "completeness_mean_over_orders", "redundancy_mean_over_orders")]
    for layer in ("features.3", "output"):  # adjacent layers: features.1 -> features.3 -> output
        tags += [f"{layer}/emerged_from_previous_layer", f"{layer}/forgotten_from_previous_layer"]
    for tag in tags:
        assert [s for s, _ in events.scalars[f"probes/interactions/{tag}"]] == [0, 10, 20], tag
    for tag in ("emerged", "forgotten", "iou_previous"):  # need a previous probe
        assert [s for s, _ in events.scalars[f"probes/interactions/{tag}"]] == [10, 20], tag
    for image in ("sparsity", "order_histogram", "completeness_per_order", "redundancy_per_order"):
        assert events.images[f"probes/interactions/{image}"] == [0, 20], image
    text = events.texts["probes/interactions/strongest"][-1]
    assert "| sample | type | players | order | I(S) |" in text and "{r" in text
    assert "salient interactions" in events.charts()["probes/interactions"]
    # the logged values are the monitor's own, and they are sane
    assert dict(events.scalars["probes/interactions/n_salient"]) == pytest.approx(
        {s: v["n_salient"] for s, v in monitor.history})
    for _, v in monitor.history:
        assert v["n_salient"] == pytest.approx(sum(v[f"n_salient_order_{k}"] for k in range(1, 7)))
        assert 1 <= v["mean_order"] <= 6
        for layer in ("features.1", "features.3"):
            assert 0 <= v[f"{layer}/completeness"] <= 1 and 0 <= v[f"{layer}/redundancy"] <= 1
        assert v["certified_gap_max"] <= 0.01 + 1e-12 and v["certified_gap_mean"] <= v["certified_gap_max"]
    assert set(monitor.last_by_order) == {"features.1", "features.3"}


class PlantedNet(pl.LightningModule):
    """Log-odds of class 0 = 4·[players 0 and 1 both present] + 2·[player 2 or 3 present], on binary inputs."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))  # something to optimise

    def forward(self, x):
        score = 4 * x[:, 0] * x[:, 1] + 2 * torch.maximum(x[:, 2], x[:, 3]) + 0 * self.bias
        return torch.stack((score, torch.zeros_like(score)), -1)

    def training_step(self, batch, _):
        return (self(batch[0])[:, 0] - 1).pow(2).mean() + self.bias ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_planted_and_or_interactions_are_found_and_nothing_else(tmp_path):
    x = torch.ones(8, 4)
    x[4:] = 1.5  # strengths 9 and 3 instead of 4 and 2: the same two interactions (|v| stays below the clamp)
    y = torch.zeros(8, dtype=torch.long)
    monitor = InteractionMonitor(FeatureGroups([0, 1, 2, 3], num_features=4), num_samples=8, max_samples=8,
                                 probe_data=(x, y), baseline=0.0, schedule=every(5), images_every=1, top_k=2,
                                 kappa=0.0, on_error="raise")  # without noise the sparsest split is unique
    pl.seed_everything(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    trainer(tmp_path, max_steps=5, callbacks=[monitor]).fit(PlantedNet(), loader)
    for _, v in monitor.history:
        assert v["n_salient"] == 2 and v["n_salient_order_2"] == 2 and v["mean_order"] == 2
        assert v["clamped_fraction"] == 0
    last = monitor.history[-1][1]
    assert last["emerged"] == pytest.approx(0, abs=1e-3) and last["forgotten"] == pytest.approx(0, abs=1e-3)
    assert last["iou_previous"] == 1
    text = read_events(str(tmp_path)).texts["probes/interactions/strongest"][-1]
    assert "| 0 | AND | {0, 1} | 2 |" in text and "| 0 | OR | {2, 3} | 2 |" in text


def test_resume_keeps_the_previous_interactions_for_emergence(tmp_path):
    monitor = InteractionMonitor(players(4), num_samples=2, max_samples=50, schedule=every(5), images_every=0,
                                 solver_iterations=200)
    fit(tmp_path, monitor, max_steps=5)
    state = monitor.state_dict()
    assert state["previous"]["mask"].shape == (2, 2, 16)
    fresh = InteractionMonitor(players(4), num_samples=2, max_samples=50, schedule=every(5), images_every=0)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh._previous["i_and"], monitor._previous["i_and"])
    assert fresh.history == monitor.history and fresh.state_key == monitor.state_key


def test_saturated_outputs_are_clamped_and_reported_once(tmp_path):
    model = MLPClassifier(hidden=(16,), lr=0.1)
    with torch.no_grad():
        model.classifier.weight.mul_(0)
        model.classifier.bias.copy_(torch.tensor([60.0] + [0.0] * 9))  # p(class 0) = 1 for every input
    monitor = InteractionMonitor(players(3), num_samples=4, max_samples=40, schedule=every(100), images_every=0,
                                 solver_iterations=100)
    with pytest.warns(UserWarning, match="clamped to ±16") as record:
        fit(tmp_path, monitor, max_steps=1, model=model)
    assert sum("clamped" in str(w.message) for w in record) == 1
    assert monitor.history[0][1]["clamped_fraction"] == 1.0


# ---------------------------------------------------------------- bad input
def test_too_many_players_explains_the_cost():
    with pytest.raises(ValueError, match=r"16 players exceed max_players=14: .*2\^n = 65536"):
        InteractionMonitor(ImagePatches((4, 4), (8, 8), flatten=True))


def test_players_must_partition_the_input():
    with pytest.raises(ValueError, match="overlap"):
        InteractionMonitor(FeatureGroups([[0, 1], [1, 2]], num_features=64))
    with pytest.raises(TypeError, match="Players partition"):
        InteractionMonitor([[0, 1], [2]])


def test_players_for_the_wrong_input_shape(tmp_path):
    monitor = InteractionMonitor(ImagePatches((2, 2), (8, 8)), num_samples=2)  # (8, 8), the model takes (64,)
    with pytest.raises(ValueError, match=r"shape \(8, 8\).*flatten=True"):
        fit(tmp_path, monitor)


def test_unknown_layer_lists_the_modules(tmp_path):
    with pytest.raises(ValueError, match=r"No module named 'hidden'.*'features.1'"):
        fit(tmp_path, InteractionMonitor(players(), layers=["hidden"]))


def test_regression_targets_are_refused(tmp_path):
    x, y = load_digits_tensors()
    monitor = InteractionMonitor(players(), probe_data=(x[:50], y[:50].float()), num_samples=2)
    with pytest.raises(ValueError, match="classification head"):
        fit(tmp_path, monitor)


@pytest.mark.parametrize("bad", [dict(tau=0.0), dict(tau=1.5), dict(kappa=-0.1), dict(num_samples=0),
                                 dict(num_samples=600), dict(layers=["a", "a"]), dict(layers=["output"]),
                                 dict(max_players=0), dict(solver_iterations=0), dict(probe_l2=-1.0),
                                 dict(schedule="often")])
def test_bad_arguments_fail_in_the_constructor(bad):
    with pytest.raises((ValueError, TypeError)):
        InteractionMonitor(players(), **bad)


def test_players_object_is_what_the_monitor_masks():
    p = players(3)
    assert isinstance(p, Players) and p.n == 3 and p.names == ["r1c1", "r1c2", "r2c1"]
