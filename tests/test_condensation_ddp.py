"""CondensationMonitor under DDP (2 CPU processes, gloo): every rank reports the same figures as one process."""

import json

import lightning.pytorch as pl
import pytest
from helpers import ClosesProcessGroup

from lightning_probes.datasets import RegressionDataModule
from lightning_probes.models import ThreeLayerRegressor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.schedules import every

pytestmark = pytest.mark.ddp


class DumpHistory(pl.Callback):
    """Each rank writes what its monitor saw (spawned ranks share no memory)."""

    def __init__(self, monitor, directory):
        self.monitor, self.directory = monitor, str(directory)

    def on_train_end(self, trainer, pl_module):
        out = {"history": list(self.monitor.history), "stage_end": self.monitor.stage_end}
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as fh:
            json.dump(out, fh)


def _run(tmp_path, devices, max_steps):
    monitor = CondensationMonitor(schedule=every(3), images_every=0, stage_threshold=0.1, stage_by="relative_change")
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_steps=max_steps,
        callbacks=[monitor, DumpHistory(monitor, tmp_path), ClosesProcessGroup()], logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
    )
    trainer.fit(ThreeLayerRegressor(width=16, init_gamma=0.5), RegressionDataModule(num_train=256, batch_size=32))
    return [json.load(open(tmp_path / f"rank{r}.json")) for r in range(devices)]


def test_two_ranks_agree_with_each_other_and_with_one_process_at_init(tmp_path):
    (single,) = _run(tmp_path, 1, max_steps=1)
    ranks = _run(tmp_path, 2, max_steps=9)
    assert ranks[0] == ranks[1]  # DDP keeps the weights identical, so every figure and the stage end agree
    assert [s for s, _ in ranks[0]["history"]] == [0, 3, 6, 9]
    step, expected = single["history"][0]
    assert step == 0
    for key, value in expected.items():  # same initial weights: same figures as one process
        assert ranks[0]["history"][0][1][key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
