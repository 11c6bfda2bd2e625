"""What a probe produced (:class:`ProbeResult`) and where it goes: the history, every logger, the progress bar.

- :func:`measured` runs ``measure()`` the way every probe does (probing mode, training precision) and checks it;
- :func:`check_result` refuses what ``measure()`` must not return (another type, a scalar that is no float);
- :func:`publish` hands a successful probe on: its scalars to the monitor's history, to every logger (at every
  probe point, not thinned by ``log_every_n_steps``) and to ``trainer.callback_metrics``; its pictures,
  histograms and changed text tables to the loggers that take them (``_loggers.py``); its key scalars to the
  progress bar (``_progress.py``);
- :func:`write_dashboard` writes the custom-scalars layout of every monitor of the Trainer, merged, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

from lightning_probes.monitors import _loggers, _progress
from lightning_probes.precision import probe_precision
from lightning_probes.probe_set import probing
from lightning_probes.tensorboard import has_matplotlib, merge_layouts, write_layout_once

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_probes.monitors.base import Monitor

__all__ = [
    "ProbeResult", "check_result", "log_scalars", "measured", "publish", "tensorboard_writers", "write_dashboard",
]


@dataclass
class ProbeResult:
    """What one probe produced. Scalars go to every logger and to ``trainer.callback_metrics``; images
    ((H, W, 3) uint8), histograms and markdown texts go to TensorBoard on rank 0. Keys are relative:
    the monitor prefixes them with ``probes/<monitor>/``.

    Example:
        >>> result = ProbeResult(scalars={"n_features": 3.0})
        >>> check_result(result); result.scalars
        {'n_features': 3.0}
    """

    scalars: dict[str, float] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: dict[str, Tensor | np.ndarray] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)


def check_result(result: Any) -> None:
    """Raise a TypeError unless ``result`` is a :class:`ProbeResult` whose scalars are Python numbers."""
    if not isinstance(result, ProbeResult):
        raise TypeError(f"measure() must return a ProbeResult, got {type(result).__name__}.")
    for key, value in result.scalars.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"scalar {key!r} must be a Python float, got {type(value).__name__}.")


def measured(monitor: Monitor, trainer: pl.Trainer, pl_module: pl.LightningModule, status: bool = True) -> ProbeResult:
    """``monitor.measure()`` in probing mode (eval, no_grad unless ``needs_grad``, a forked RNG) and in the precision
    the model trains in (autocast under "bf16-mixed": ``lightning_probes.precision``), its result checked; with
    ``status``, a long probe shows ``probing: <monitor>`` on the progress bar meanwhile."""
    shown = _progress.probing_status(trainer, monitor.name, monitor.cost_model.expected(monitor.render_images)) \
        if status else nullcontext()
    with shown, probing(pl_module, grad=monitor.needs_grad), probe_precision(trainer):
        result = monitor.measure(trainer, pl_module)
    check_result(result)
    return result


def publish(monitor: Monitor, trainer: pl.Trainer, result: ProbeResult, step: int) -> None:
    """Hand on a successful probe: history, loggers and ``callback_metrics``, pictures and texts, progress bar."""
    monitor.failure_log.succeeded()
    monitor.history.append((step, dict(result.scalars)))
    log_scalars(trainer, {monitor.prefix + k: float(v) for k, v in result.scalars.items()}, step)
    # texts are cheap and go out on every probe (a monitor adds pictures only when render_images is set); a text
    # table that has not changed since it was last written is not written again
    texts = {key: text for key, text in result.texts.items() if monitor._texts.changed(None, key, text)}
    if result.images or result.histograms or texts:
        _loggers.publish(monitor._sinks, monitor.prefix, result.images, result.histograms, texts, step)
    _progress.show_key_scalars(trainer, _progress.key_scalars(monitor.name, monitor.progress_bar_scalars,
                                                              result.scalars))


def log_scalars(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
    """``metrics`` (full tags) to every logger at ``step`` and into ``trainer.callback_metrics``."""
    for logger in trainer.loggers:  # every logger, every probe point (not thinned by log_every_n_steps)
        logger.log_metrics(metrics, step=step)
    # callback_metrics is what EarlyStopping and ModelCheckpoint read (and any callback). Written directly
    # rather than through pl_module.log: that costs ~0.35 ms per scalar (5.3 ms for the spectrum's 15, 40%
    # of its measurement), would send a second, thinned copy to the loggers, and is refused in
    # on_train_end, where the final probe runs. Lightning keeps this dict for the whole fit.
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})


def write_dashboard(monitor: Monitor, trainer: pl.Trainer, attached: Sequence[Monitor]) -> None:
    """The merged custom-scalars layout of the Trainer's monitors (``attached``) to its TensorBoard writers (once
    each); ``monitor``'s pictures off, with a warning, where matplotlib is missing."""
    writers = tensorboard_writers(trainer)
    if not writers:
        return
    layout = merge_layouts(_named_dashboard(m) for m in attached)  # one layout for all monitors
    for writer in writers:
        write_layout_once(writer, layout)
    if monitor.images_every and not has_matplotlib():
        monitor.warn_once("no-matplotlib", "matplotlib is not installed, so pictures are skipped "
                                           "(pip install matplotlib); scalars and text still flow.")
        monitor.images_every = 0


def tensorboard_writers(trainer: pl.Trainer) -> list[Any]:
    """The SummaryWriters of the trainer's TensorBoard loggers, on global rank 0 only."""
    if not trainer.is_global_zero:
        return []
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def _named_dashboard(monitor: Monitor) -> dict[str, dict[str, list]]:
    """The monitor's dashboard with its class's section ``probes/<class name>`` renamed ``probes/<name>`` (the
    charts' tag patterns already use the monitor's prefix), so two monitors of one class get a section each."""
    layout = monitor.dashboard()
    default = f"probes/{type(monitor).name}"
    if monitor.name == type(monitor).name or default not in layout:
        return layout
    return {(f"probes/{monitor.name}" if category == default else category): charts
            for category, charts in layout.items()}
