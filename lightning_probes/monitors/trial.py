"""The fit-start trial probe: every monitor runs its whole probe once on a few probe samples before training.

A monitor that cannot run on the model (its output has no logits, a layer returns a tuple, players do not fit the
inputs, ...) would otherwise fail every probe behind one warning and the run would "succeed" with no probe. The
trial runs :meth:`Monitor.measure` on a small view of the probe set, in probing mode (eval, no_grad, a forked RNG),
outside the training clock; its result is checked and thrown away and the monitor's state is put back, so nothing
is logged, counted or kept. Under DDP all ranks agree on a failure, and every rank raises it.
"""

from __future__ import annotations

import copy
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

import torch

from lightning_probes.monitors._agreement import agree_on_failure
from lightning_probes.monitors._publish import measured

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_probes.monitors.base import Monitor

__all__ = ["trial_probe", "explained", "TRIAL_SAMPLES"]

TRIAL_SAMPLES = 16  # probe samples of the trial (or the monitor's minimum, if larger): enough classes, still cheap


def trial_probe(monitor: Monitor, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    """Run ``monitor``'s probe once on a few probe samples; raise its error (with what failed) if it fails. Its time
    is no training time: it leaves the fit's shared training clock."""
    started = time.perf_counter()
    try:
        _trial(monitor, trainer, pl_module)
    finally:
        if monitor._training is not None:
            monitor._training.exclude(time.perf_counter() - started)


def _trial(monitor: Monitor, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
    saved = dict(monitor.__dict__)
    warned = set(monitor._warned)
    state = copy.deepcopy(monitor.state_dict())
    error: Exception | None = None
    try:
        probe = monitor.probe_set
        if probe is not None:
            n = min(len(probe), max(TRIAL_SAMPLES, monitor.min_probe_samples(pl_module)))
            # spread over the probe set, so class-sorted probe data still shows the trial several classes
            indices = torch.linspace(0, len(probe) - 1, n).round().long().unique()
            monitor.probe_set = probe.select(indices)
            monitor.trial_view(indices)
        monitor.trial_probe = True
        monitor.render_images = False  # pictures are drawn from the figures the trial checks; not worth their cost
        monitor.step = trainer.global_step
        # in the training precision, like every probe: a trial in float32 would miss a bf16-only failure
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            measured(monitor, trainer, pl_module, status=False)
    except Exception as err:
        error = err
    finally:
        monitor.__dict__.clear()
        monitor.__dict__.update(saved)
        monitor._warned.clear()
        monitor._warned.update(warned)
        monitor.load_state_dict(state)
    error = agree_on_failure(trainer, error)  # under DDP all ranks agree, and every rank raises
    if error is not None:
        raise explained(error, type(monitor).__name__)


def explained(error: Exception, name: str) -> Exception:
    """The error, of its own type, with a message that says the monitor cannot run here (the cause chained)."""
    message = (f"{name} cannot run on this model and probe data: its trial probe at fit start failed "
               f"({type(error).__name__}: {error}). Fix the monitor's arguments or the probe data (see the README, "
               "'Your own model').")
    try:
        new: Any = type(error)(message)
    except Exception:  # an exception type with other constructor arguments: keep it, with a note
        new = None
    if not isinstance(new, Exception) or str(new) != message:
        if sys.version_info >= (3, 11):
            error.add_note(message)
        else:  # Python 3.10 has no add_note: keep the note where 3.11's tracebacks would show it
            error.__notes__ = [*getattr(error, "__notes__", []), message]  # type: ignore[attr-defined]
        return error
    new.__cause__ = error
    return new
