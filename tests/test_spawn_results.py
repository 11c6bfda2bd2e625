"""ddp_spawn: the workers probe; the monitors in the launching process get rank 0's results back."""

import json

import lightning.pytorch as pl
import pytest
from helpers import ClosesProcessGroup

from lightning_probes import MonitorGroup
from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every

pytestmark = pytest.mark.ddp


class DumpHistory(pl.Callback):
    """Each rank writes what its monitors saw (spawned ranks share no memory with the launcher)."""

    def __init__(self, monitors, directory):
        self.monitors, self.directory = monitors, str(directory)

    def on_train_end(self, trainer, pl_module):
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as fh:
            json.dump({m.name: list(m.history) for m in self.monitors}, fh)


def test_the_launching_process_gets_the_workers_history(tmp_path):
    spectrum = FeatureSpectrumMonitor(schedule=every(2), images_every=0, max_samples=200)
    condensation = CondensationMonitor(schedule=every(2), images_every=0)
    group = MonitorGroup([spectrum, condensation])
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=4, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
        callbacks=[group, DumpHistory(group.monitors, tmp_path), ClosesProcessGroup()],
    )
    trainer.fit(MLPClassifier(hidden=(32,)), DigitsDataModule(batch_size=32))
    worker = json.load(open(tmp_path / "rank0.json"))
    for monitor in (spectrum, condensation):
        steps = [s for s, _ in monitor.history]
        assert steps == [0, 2, 4]
        assert [[s, v] for s, v in monitor.history] == worker[monitor.name]  # exactly rank 0's probes
        assert "no successful probe" not in monitor.summary()
        assert monitor.clock.n_probes == 3 and monitor.clock.last_step == 4
    assert condensation.initial_weights["features.0"].shape == (32, 64)  # its own state came back too
    assert spectrum.class_means is not None and spectrum.class_means.shape == (10, 32)
