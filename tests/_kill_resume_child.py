"""A digits fit that kills itself with SIGKILL between two checkpoints, or resumes from the last one, or runs whole.

Run as ``python _kill_resume_child.py MODE ROOT`` by tests/test_run_logs.py (MODE: ``kill``, ``resume``, ``full``).
Spectrum and condensation probe every step; checkpoints every ``CHECKPOINT_EVERY`` steps with ``save_last=True``;
TensorBoard logs under ``ROOT/run/version_0``. ``kill`` flushes the writer and sends itself SIGKILL after step
``KILL_STEP``: the worst case, where everything the killed run logged after its last checkpoint (step 4) is on disk.
"""

from __future__ import annotations

import os
import signal
import sys

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every

CHECKPOINT_EVERY = 4
KILL_STEP = 7  # probes 5, 6, 7 were logged after the checkpoint at step 4: the resumed run logs them again
MAX_STEPS = 12


class KillAt(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == KILL_STEP:
            for logger in trainer.loggers:
                logger.experiment.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def fit_run(mode: str, root: str) -> pl.Trainer:
    torch.set_num_threads(1)
    pl.seed_everything(0)
    monitors = [FeatureSpectrumMonitor(schedule=every(1), images_every=0),
                CondensationMonitor(layers="auto", schedule=every(1), images_every=0)]
    checkpoints = ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), every_n_train_steps=CHECKPOINT_EVERY,
                                  save_last=True, save_top_k=-1)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=MAX_STEPS, logger=TensorBoardLogger(root, name="run", version=0),
        callbacks=[*monitors, *([KillAt()] if mode == "kill" else []), checkpoints], enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1, limit_val_batches=0,
    )
    trainer.fit(MLPClassifier(hidden=(32,)), DigitsDataModule(batch_size=64),
                ckpt_path="last" if mode == "resume" else None)
    return trainer


if __name__ == "__main__":
    fit_run(sys.argv[1], sys.argv[2])
