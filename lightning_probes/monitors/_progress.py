"""What a monitor shows on Lightning's progress bar: a ``probing: <monitor>`` status while a long probe runs, and
each monitor's key scalars among the bar's metrics.

Both go through Lightning's own progress-bar machinery, not prints: the key scalars into
``trainer.progress_bar_metrics`` (the dict every progress bar's ``get_metrics`` shows, the one ``self.log(...,
prog_bar=True)`` fills), the status into the train bar's description (``TQDMProgressBar``: the tqdm bar's
``set_description``; ``RichProgressBar``: its task's ``description``). A bar of another kind, a disabled bar, or no
bar at all is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

__all__ = ["key_scalars", "probing_status", "show_key_scalars"]

LONG_PROBE_SECONDS = 1.0  # a probe expected to take this long (or of unknown cost) is shown on the bar


def key_scalars(monitor_name: str, wanted: Iterable[str], scalars: Mapping[str, float]) -> dict[str, float]:
    """The scalars named in ``wanted`` (a name or a per-layer name's last part), keyed ``<monitor>/<name>``.

    Example:
        >>> key_scalars("condensation", ["n_directions"], {"l1/n_directions": 3.0, "l1/top2_share": 0.9})
        {'condensation/l1/n_directions': 3.0}
    """
    wanted = tuple(wanted)
    return {f"{monitor_name}/{key}": float(value) for key, value in scalars.items()
            if key in wanted or key.rsplit("/", 1)[-1] in wanted}


def show_key_scalars(trainer: Any, values: Mapping[str, float]) -> None:
    """Put ``values`` among the progress bar's metrics (kept until the next probe replaces them). Also without a
    bar: ``trainer.progress_bar_metrics`` is what a bar added later, or a user's callback, reads."""
    if values:
        trainer.progress_bar_metrics.update(values)


@contextmanager
def probing_status(trainer: Any, monitor_name: str, expected_seconds: float | None) -> Iterator[None]:
    """Show ``probing: <monitor>`` on the train progress bar for the duration of the block, if the probe is
    expected to take at least :data:`LONG_PROBE_SECONDS` (or its cost is not known yet)."""
    bar = trainer.progress_bar_callback if trainer.is_global_zero else None
    show = bar is not None and (expected_seconds is None or expected_seconds >= LONG_PROBE_SECONDS)
    restore = _set_status(bar, f"probing: {monitor_name}") if show else None
    try:
        yield
    finally:
        if restore is not None:
            restore()


def _set_status(bar: Any, status: str) -> Callable[[], None] | None:
    """Append ``status`` to the train bar's description; returns the function that puts it back (or None)."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

    if isinstance(bar, TQDMProgressBar):
        tqdm_bar = getattr(bar, "_train_progress_bar", None)
        if tqdm_bar is None or tqdm_bar.disable:
            return None
        before = tqdm_bar.desc.rstrip(": ")
        tqdm_bar.set_description(f"{before} · {status}" if before else status)  # refreshes at once
        return lambda: tqdm_bar.set_description(before)
    if isinstance(bar, RichProgressBar):
        progress, task = bar.progress, getattr(bar, "train_progress_bar_id", None)
        if progress is None or task is None or not bar.is_enabled:
            return None
        before = progress.tasks[task].description
        progress.update(task, description=f"{before} · {status}")
        bar.refresh()

        def restore() -> None:
            progress.update(task, description=before)
            bar.refresh()

        return restore
    return None
