"""DDP with 2 CPU processes (gloo): the same scalars as one process, and a stop on one rank stops both."""

import json

import lightning.pytorch as pl
import pytest
import torch.distributed as dist
from helpers import ClosesProcessGroup

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every
from lightning_probes.triggers import StopWhen

pytestmark = pytest.mark.ddp


class DumpHistory(pl.Callback):
    """Each rank writes what its monitor saw and where training ended (spawned ranks share no memory)."""

    def __init__(self, monitor, directory):
        self.monitor, self.directory = monitor, str(directory)

    def on_train_end(self, trainer, pl_module):
        out = {"history": list(self.monitor.history), "global_step": trainer.global_step,
               "reason": self.monitor.stop_reason}
        with open(f"{self.directory}/rank{trainer.global_rank}.json", "w") as fh:
            json.dump(out, fh)


class OnlyOnRankOne(StopWhen):
    """A trigger whose condition holds on rank 1 alone."""

    def check(self, step, scalars, prefix):
        super().check(step, scalars, prefix)
        return "rank 1 says stop" if dist.is_initialized() and dist.get_rank() == 1 and step >= 4 else None


class FailOnRankOne(FeatureSpectrumMonitor):
    """The probe's forward passes fail on rank 1 alone at step 4 (as a bad batch or an OOM would)."""

    def measure(self, trainer, pl_module):
        if trainer.global_rank == 1 and self.step == 4:
            self.rank_local(trainer, lambda: (_ for _ in ()).throw(RuntimeError("rank 1 probe blew up")))
        return super().measure(trainer, pl_module)


def _run(tmp_path, devices, monitor, max_steps):
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_steps=max_steps,
        callbacks=[monitor, DumpHistory(monitor, tmp_path), ClosesProcessGroup()], logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(MLPClassifier(hidden=(32, 32)), DigitsDataModule(batch_size=32))
    return [json.load(open(tmp_path / f"rank{r}.json")) for r in range(devices)]


def test_two_ranks_give_the_same_scalars_as_one_process(tmp_path):
    def monitor():  # probe only before the first step: both runs have the same weights there
        return FeatureSpectrumMonitor(schedule=every(1000), at_end=False, images_every=0, max_samples=301)

    (single,) = _run(tmp_path, 1, monitor(), max_steps=1)
    ranks = _run(tmp_path, 2, monitor(), max_steps=1)
    (step, expected), = single["history"]
    assert step == 0
    for rank in ranks:  # each rank probed half of the probe set; the reduced sums are the whole
        (step, got), = rank["history"]
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-7, abs=1e-9), key


def test_a_stop_on_one_rank_stops_both_without_hanging(tmp_path):
    monitor = FeatureSpectrumMonitor(schedule=every(2), images_every=0, max_samples=200,
                                     triggers=[OnlyOnRankOne("nc1", below=-1.0)])
    ranks = _run(tmp_path, 2, monitor, max_steps=40)
    assert [r["global_step"] for r in ranks] == [4, 4]
    assert ranks[0]["reason"] == "a trigger fired on another rank at step 4"
    assert ranks[1]["reason"] == "rank 1 says stop"


def test_a_probe_failing_on_one_rank_is_skipped_on_both_without_hanging(tmp_path):
    monitor = FailOnRankOne(schedule=every(2), images_every=0, max_samples=200, at_end=False)
    ranks = _run(tmp_path, 2, monitor, max_steps=8)
    for rank in ranks:
        assert rank["global_step"] == 8  # training finished on both ranks
        assert [s for s, _ in rank["history"]] == [0, 2, 6, 8]  # step 4 skipped everywhere
