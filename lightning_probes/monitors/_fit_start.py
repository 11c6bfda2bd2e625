"""What a monitor does once when a fit starts, before its first probe (``on_train_start``, outside the training
clock): fix the probe set and check the model takes it, write the merged dashboard, mark a resumed run's restart,
find the loggers that take pictures, pay the one-off costs and learn how many steps the fit plans. The fit-start
trial probe (``trial.py``) follows at the first epoch's start, once every monitor has prepared itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightning_probes.monitors import _loggers
from lightning_probes.monitors._cost import planned_steps, warm_up
from lightning_probes.monitors._publish import write_dashboard
from lightning_probes.probe_set import check_forward

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_probes.monitors.base import Monitor

__all__ = ["start_fit"]


def start_fit(monitor: Monitor, trainer: pl.Trainer, pl_module: pl.LightningModule,
              attached: Sequence[Monitor]) -> None:
    """Prepare ``monitor`` for the fit (``attached``: every monitor of the Trainer, for the merged dashboard).

    Raises:
        ValueError: the probe set has fewer samples than the monitor needs, or the model cannot take it.
    """
    if monitor.probe_set is not None:
        monitor.probe_set.materialise(trainer, pl_module.device)
        need = monitor.min_probe_samples(pl_module)
        if len(monitor.probe_set) < need:
            raise ValueError(
                f"{type(monitor).__name__} needs at least {need} probe samples, the probe set has "
                f"{len(monitor.probe_set)}; raise max_samples or pass more probe_data."
            )
        check_forward(monitor.probe_set, pl_module, type(monitor).__name__)
    monitor._tried = False
    write_dashboard(monitor, trainer, attached)
    monitor._texts.clear()
    monitor._mark_restart(trainer)  # TensorBoard hides what the killed run logged after the checkpoint
    monitor._sinks = _loggers.picture_sinks(trainer, announce=monitor.images_every > 0)
    warm_up(pictures=bool(monitor._sinks) and monitor.images_every > 0)
    monitor.clock.total_steps = planned_steps(trainer)
    monitor._train_base = monitor.clock.train_seconds
