"""FeatureSpectrumMonitor end to end: real fits on scikit-learn digits, read back from TensorBoard event files."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import fit_digits, read_events, trainer
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.loggers import CSVLogger
from torch import nn

from lightning_probes.datasets import DigitsDataModule, load_digits_tensors
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.base import ProbeResult
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every
from lightning_probes.triggers import StopWhen

SCALARS = [
    "n_features", "n_features_99", "participation_ratio", "gap_at_C", "regime", "target_power_at_C",
    "learned_power_at_C", "top_eigenvalue", "nc1", "nc2_equinorm", "nc2_equiangular", "nc3", "nc4",
    "n_features_decisions", "function_rank", "regime_stable_since",
]


def small_model(**kw):
    return MLPClassifier(hidden=(32, 32), lr=0.2, **kw)


def fit(tmp_path, monitor, max_steps=30, model=None, **trainer_kw):
    return fit_digits(tmp_path, monitor, model or small_model(), max_steps, **trainer_kw)


def test_fit_logs_every_tag_the_dashboard_and_pictures(tmp_path):
    monitor = FeatureSpectrumMonitor(schedule=every(10), images_every=2, max_samples=300)
    fit(tmp_path, monitor, max_steps=25)
    events = read_events(str(tmp_path))
    for name in SCALARS:
        steps = [s for s, _ in events.scalars[f"probes/spectrum/{name}"]]
        assert steps == [0, 10, 20, 25], name  # at_start, every(10), at_end — never thinned by log_every_n_steps
    assert events.images["probes/spectrum/eigenvalues"] == [0, 20, 25]  # probes 0, 2 and the final one
    assert "probes/spectrum/cumulative_power" in events.images
    assert events.histograms["probes/spectrum/log10_eigenvalues"] == [0, 20, 25]
    assert "| step | regime |" in events.texts["probes/spectrum/regime_history"][-1]
    # the table is written only when the regime changed (one text per row), not on every probe
    texts = events.texts["probes/spectrum/regime_history"]
    assert len(texts) == len(monitor.regime_rows) == len(monitor.regime_changes()) < 4
    assert [row.count("\n") - 1 for row in texts] == list(range(1, len(texts) + 1))
    charts = events.charts()
    assert "regime (1 = MF, 0 = EF, -1 = below)" in charts["probes/spectrum"]
    # the logged values are the monitor's own history
    n_feat = dict(events.scalars["probes/spectrum/n_features"])
    assert n_feat == {s: v["n_features"] for s, v in monitor.history}
    assert all(v["regime"] in (-1.0, 0.0, 1.0) for _, v in monitor.history)
    since = {s: v["regime_stable_since"] for s, v in monitor.history}
    assert since == {s: max(c for c, _ in monitor.regime_changes() if c <= s) for s in since}
    assert all(0 <= v["nc4"] <= 1 for _, v in monitor.history)


def test_training_mode_rng_and_hooks_are_restored(tmp_path):
    monitor = FeatureSpectrumMonitor(schedule=every(1), images_every=0, max_samples=100)
    model = small_model()
    seen = {}

    class Spy(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            seen.setdefault("training", set()).add(pl_module.training)
            seen["hooks"] = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in pl_module.modules())

    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=5, callbacks=[monitor, Spy()])
    t.fit(model, DigitsDataModule())
    assert seen == {"training": {True}, "hooks": 0}
    assert len(monitor.history) == 6


def test_probing_does_not_change_training(tmp_path):
    """The same seed gives the same weights with or without the monitor: the RNG stream is not consumed."""
    weights = []
    for callbacks in ([], [FeatureSpectrumMonitor(schedule=every(3), images_every=0, max_samples=100)]):
        pl.seed_everything(1)
        model = MLPClassifier(hidden=(16,), lr=0.1)
        # dropout makes training consume the RNG on every step
        model.features.append(nn.Dropout(0.2))
        trainer(tmp_path, max_steps=12, callbacks=callbacks, logger=False).fit(model, DigitsDataModule())
        weights.append(model.classifier.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_trigger_stops_training_and_logs_the_reason(tmp_path):
    monitor = FeatureSpectrumMonitor(
        schedule=every(5), images_every=0, triggers=[StopWhen("n_features", above=0.0, patience=2, min_step=5)]
    )
    t = fit(tmp_path, monitor, max_steps=200)
    assert t.global_step == 10  # probes at 5 and 10 satisfy the condition: patience 2
    assert monitor.stop_reason.startswith("probes/spectrum/n_features = ")
    events = read_events(str(tmp_path))
    assert events.texts["probes/spectrum/stop_reason"] == [monitor.stop_reason]


def test_lightning_early_stopping_on_a_probe_scalar(tmp_path):
    monitor = FeatureSpectrumMonitor(schedule=every(5), images_every=0, max_samples=200)
    stop = EarlyStopping(monitor="probes/spectrum/top_eigenvalue", stopping_threshold=1e9, mode="min",
                         check_on_train_epoch_end=True)
    t = fit(tmp_path, monitor, max_steps=500, callbacks=[monitor, stop])
    assert stop.stopped_epoch == 0 and t.current_epoch == 1  # digits: 17 steps per epoch, stopped after the first
    assert t.global_step == 17


def test_model_checkpoint_ranks_checkpoints_by_a_probe_scalar(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    monitor = FeatureSpectrumMonitor(schedule=every(5), images_every=0, max_samples=200)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="probes/spectrum/top_eigenvalue", mode="max",
                           every_n_train_steps=5, save_top_k=1, filename="{step}")
    fit(tmp_path, monitor, max_steps=20, callbacks=[monitor, best], enable_checkpointing=True)
    history = dict(monitor.history)
    # the checkpoint kept is the one saved at the probed step with the largest top eigenvalue
    step_of_max = max((s for s in history if s in (5, 10, 15, 20)), key=lambda s: history[s]["top_eigenvalue"])
    assert best.best_model_path.endswith(f"step={step_of_max}.ckpt")
    assert float(best.best_model_score) == pytest.approx(history[step_of_max]["top_eigenvalue"], rel=1e-6)


def test_the_final_probe_reaches_callback_metrics(tmp_path):
    monitor = FeatureSpectrumMonitor(schedule=every(100), images_every=0, max_samples=200)
    t = fit(tmp_path, monitor, max_steps=13)
    assert [s for s, _ in monitor.history] == [0, 13]  # at_start, then the at_end probe in on_train_end
    assert float(t.callback_metrics["probes/spectrum/nc1"]) == pytest.approx(monitor.history[-1][1]["nc1"])


def test_resume_from_mid_run_checkpoint_gives_the_same_probe_steps(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(ckpt_path=None, dirpath=None):
        monitor = FeatureSpectrumMonitor(schedule=every(7), images_every=0, max_samples=200,
                                         triggers=[StopWhen("nc1", below=-1.0)])
        callbacks = [monitor]
        if dirpath:
            callbacks.append(ModelCheckpoint(dirpath=dirpath, every_n_train_steps=30, save_top_k=-1))
        pl.seed_everything(0)
        t = trainer(tmp_path, max_steps=60, callbacks=callbacks, enable_checkpointing=bool(dirpath), logger=False)
        t.fit(small_model(), DigitsDataModule(), ckpt_path=ckpt_path)
        return monitor

    full = run(dirpath=tmp_path / "ckpt")
    resumed = run(ckpt_path=str(tmp_path / "ckpt" / "epoch=1-step=30.ckpt"))
    steps = [s for s, _ in full.history]
    assert steps == [0, 7, 14, 21, 28, 35, 42, 49, 56, 60]
    assert [s for s, _ in resumed.history] == steps
    assert resumed.clock.n_probes == full.clock.n_probes
    # probes before the checkpoint are restored as they were
    assert resumed.history[:5] == full.history[:5]


def test_csv_logger_gets_scalars_and_pictures_are_skipped_with_one_info_line(tmp_path, caplog):
    monitor = FeatureSpectrumMonitor(schedule=every(10), images_every=1, max_samples=200)
    with caplog.at_level("INFO"):
        fit(tmp_path, monitor, max_steps=20, logger=CSVLogger(str(tmp_path)))
    assert sum("CSVLogger cannot take pictures" in r.getMessage() for r in caplog.records) == 1
    import csv
    import glob

    rows = list(csv.DictReader(open(glob.glob(str(tmp_path / "**" / "metrics.csv"), recursive=True)[0])))
    steps = sorted({int(r["step"]) for r in rows if r.get("probes/spectrum/regime")})
    assert steps == [0, 10, 20]


def test_regression_head_works_without_class_statistics(tmp_path):
    x, y = load_digits_tensors()
    target = torch.stack([y.float() / 9, (y % 2).float()], 1)  # (N, 2) real-valued targets

    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(64, 32), nn.Tanh())
            self.out = nn.Linear(32, 2)

        def forward(self, x):
            return self.out(self.body(x))

        def training_step(self, batch, _):
            return nn.functional.mse_loss(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    monitor = FeatureSpectrumMonitor(head="out", schedule=every(10), images_every=0, probe_data=(x[:200], target[:200]))
    pl.seed_everything(0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, target), batch_size=64)
    trainer(tmp_path, max_steps=20, callbacks=[monitor]).fit(Regressor(), loader)
    assert [s for s, _ in monitor.history] == [0, 10, 20]
    last = monitor.history[-1][1]
    assert "nc1" not in last and 0 < last["learned_power_at_C"] <= 1 and last["n_features"] >= 1


# ---------------------------------------------------------------- bad input
def test_unknown_head_lists_the_linear_modules(tmp_path):
    with pytest.raises(ValueError, match=r"No module named 'head'.*'features.0', 'features.2', 'classifier'"):
        fit(tmp_path, FeatureSpectrumMonitor(head="head"))


def test_head_that_is_not_linear_is_refused(tmp_path):
    with pytest.raises(TypeError, match="'features.1' is a ReLU, not a Linear"):
        fit(tmp_path, FeatureSpectrumMonitor(head="features.1"))


def test_fewer_probe_samples_than_classes(tmp_path):
    with pytest.raises(ValueError, match="at least 10 probe samples, the probe set has 8"):
        fit(tmp_path, FeatureSpectrumMonitor(max_samples=8))


def test_val_probe_data_without_val_loader(tmp_path):
    x, y = load_digits_tensors()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    pl.seed_everything(0)
    t = trainer(tmp_path, max_steps=2, callbacks=[FeatureSpectrumMonitor(probe_data="val")])
    with pytest.raises(ValueError, match="no val DataLoader"):
        t.fit(small_model(), loader)


@pytest.mark.parametrize("bad", [dict(power_threshold=1.5), dict(gap=0.5), dict(num_classes=1), dict(head=""),
                                 dict(schedule="often"), dict(on_error="ignore"), dict(images_every=-1),
                                 dict(triggers=["MF"]), dict(probe_data="tset")])
def test_bad_arguments_fail_in_the_constructor(bad):
    with pytest.raises((ValueError, TypeError)):
        FeatureSpectrumMonitor(**bad)


def test_num_classes_must_match_the_head(tmp_path):
    with pytest.raises(ValueError, match="num_classes=5 but head 'classifier' has 10 outputs"):
        fit(tmp_path, FeatureSpectrumMonitor(num_classes=5))


class NaNAfter(nn.Module):
    """Identity until ``armed``; then NaN — features that blow up mid-training."""

    def __init__(self):
        super().__init__()
        self.armed = False

    def forward(self, x):
        return x * float("nan") if self.armed else x


def test_nan_features_skip_the_probe_warn_once_and_training_goes_on(tmp_path):
    model = small_model()
    blow = NaNAfter()
    model.features.append(blow)

    class Arm(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            blow.armed = trainer.global_step >= 10

    monitor = FeatureSpectrumMonitor(schedule=every(5), images_every=0, max_samples=200)
    with pytest.warns(UserWarning, match="NaN or Inf") as record:
        t = fit(tmp_path, monitor, max_steps=25, model=model, callbacks=[Arm(), monitor])
    assert t.global_step == 25  # training was not interrupted
    assert [s for s, _ in monitor.history] == [0, 5]
    assert monitor.failures == 4  # steps 10, 15, 20, 25
    # warned once for the kind of error, and once more when 3 probes in a row had failed
    assert sum("NaN or Inf" in str(w.message) and "failed and was skipped" in str(w.message) for w in record) == 1
    assert sum("3 probes in a row have failed" in str(w.message) for w in record) == 1


class Broken(FeatureSpectrumMonitor):
    def measure(self, trainer, pl_module) -> ProbeResult:
        if self.trial_probe:  # passes the fit-start trial (a monitor failing it stops the fit: tests/test_batches.py)
            return super().measure(trainer, pl_module)
        raise RuntimeError("boom")


def test_exception_in_measure_warns_and_continues_unless_raise(tmp_path):
    with pytest.warns(UserWarning, match="boom"):
        t = fit(tmp_path, Broken(schedule=every(5)), max_steps=10)
    assert t.global_step == 10
    with pytest.raises(RuntimeError, match="boom"):
        fit(tmp_path, Broken(schedule=every(5), on_error="raise"), max_steps=10)


@pytest.mark.parametrize("nc4_means", ["previous", "current"])
def test_nc4_equals_a_nearest_class_mean_classifier_built_from_the_chosen_means(tmp_path, nc4_means):
    import copy

    x, y = load_digits_tensors()
    probe_x, probe_y = x[:300], y[:300]
    snapshots = {}

    class Snapshot(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            if trainer.global_step % 5 == 0:
                snapshots[trainer.global_step] = copy.deepcopy(pl_module.state_dict())

    monitor = FeatureSpectrumMonitor(schedule=every(5), images_every=0, probe_data=(probe_x, probe_y),
                                     nc4_means=nc4_means, at_start=False, at_end=False)
    fit(tmp_path, monitor, max_steps=15, callbacks=[Snapshot(), monitor], logger=False)
    model = small_model().eval()

    def features_and_logits(step):
        model.load_state_dict(snapshots[step])
        with torch.no_grad():
            phi = model.features(probe_x)
            return phi, model.classifier(phi)

    def class_means(phi):
        return torch.stack([phi[probe_y == c].mean(0) for c in range(10)])

    for (step, scalars), previous_step in zip(monitor.history, [None, 5, 10]):
        phi, logits = features_and_logits(step)
        means_step = previous_step if nc4_means == "previous" and previous_step is not None else step
        means = class_means(features_and_logits(means_step)[0])
        nearest = torch.cdist(phi, means).argmin(1)
        assert scalars["nc4"] == pytest.approx(float((nearest == logits.argmax(1)).double().mean()), abs=1e-12), step
