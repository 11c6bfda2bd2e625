"""Fixtures shared across test files.

Lightning is imported inside the fixtures, not here: conftest is loaded before pytest's log capture is set up, and
lightning.pytorch, imported while the root logger has no handler, stops propagating its messages (``caplog``
would no longer see them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread for the test: small matrices on a shared 2-core machine gain nothing from a
    second OpenMP thread, which only spin-waits (steps up to 10x slower), and one thread keeps the reduction
    order, hence the figures, the same from run to run. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class FinishedRun:
    log_dir: str
    monitors: list[Any]  # the Monitor objects, after the fit


@pytest.fixture(scope="session")
def five_monitor_run(tmp_path_factory) -> FinishedRun:
    """One finished fit of the digits MLP with all five monitors (a preset's set), probing every 5 steps with
    pictures each time; the dashboard and the report tests read its logs."""
    import lightning.pytorch as pl
    from helpers import all_five, trainer

    from lightning_probes import presets
    from lightning_probes.datasets import DigitsDataModule
    from lightning_probes.models import MLPClassifier
    from lightning_probes.schedules import every

    monitors = presets.standard(**all_five(max_samples=200))
    for monitor in monitors:
        monitor.schedule, monitor.images_every = every(5), 1
    pl.seed_everything(0)
    t = trainer(tmp_path_factory.mktemp("five"), max_steps=10, callbacks=monitors)
    t.fit(MLPClassifier(hidden=(32,)), DigitsDataModule())
    return FinishedRun(t.log_dir, monitors)
