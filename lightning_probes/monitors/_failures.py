"""Failed probes, counted where the user looks: a ``failed_probes`` scalar, a ``failures`` text table, warnings.

A probe that raises (with ``on_error="warn"``) is caught (:func:`attempt`) and skipped, and training goes on. So
that a monitor failing from step k on does not just stop drawing points, each failure (:func:`record_failure`)

- is counted in ``probes/<monitor>/failed_probes`` (the run's total so far), logged at the failing step to every
  logger (so it shows in TensorBoard and CSV files, and in ``trainer.callback_metrics``);
- is listed with its message in the ``probes/<monitor>/failures`` text (the last :data:`KEPT` failures), which the
  report shows, and in the monitor's ``summary()``;
- is warned: once per kind of error, and again each time a monitor has failed :data:`IN_A_ROW` probes in a row
  (three: one failure can be a passing accident, three in a row mean the monitor has stopped measuring).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_warn

from lightning_probes.monitors import _loggers
from lightning_probes.monitors._publish import ProbeResult, log_scalars, measured

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_probes.monitors.base import Monitor

__all__ = ["IN_A_ROW", "KEPT", "FailureLog", "attempt", "record_failure"]

IN_A_ROW = 3  # consecutive failed probes that warn again
KEPT = 20  # failures whose message is kept (in memory, in checkpoints and in the text table)
_MESSAGE_CHARS = 300


class FailureLog:
    """The failures of one monitor's probes: total, current streak, the last :data:`KEPT` messages.

    Example:
        >>> log = FailureLog()
        >>> [log.record(s, ValueError("bad labels")) for s in (5, 10, 15)]
        [False, False, True]
        >>> log.total, log.in_a_row, log.records[-1]
        (3, 3, (15, 'ValueError', 'bad labels'))
        >>> log.succeeded(); log.in_a_row
        0
    """

    def __init__(self) -> None:
        self.total = 0
        self.in_a_row = 0
        self.records: list[tuple[int, str, str]] = []  # (step, exception type, message)

    def record(self, step: int, error: BaseException) -> bool:
        """Count a failed probe; True when this failure completes a run of :data:`IN_A_ROW` in a row."""
        self.total += 1
        self.in_a_row += 1
        message = " ".join(str(error).split())[:_MESSAGE_CHARS]
        self.records = [*self.records, (int(step), type(error).__name__, message)][-KEPT:]
        return self.in_a_row % IN_A_ROW == 0

    def succeeded(self) -> None:
        self.in_a_row = 0

    def table(self) -> str:
        """The kept failures as a markdown table (newest last)."""
        from lightning_probes.tensorboard import markdown_table

        shown = f" (the last {len(self.records)})" if self.total > len(self.records) else ""
        return (f"{self.total} failed probe(s){shown}.\n\n"
                + markdown_table(["step", "error", "message"], [list(r) for r in self.records]))

    def lines(self, name: str) -> list[str]:
        """Summary lines: the count and the last failures' messages (empty if none failed)."""
        if not self.total:
            return []
        out = [f"[{name}] {self.total} probe(s) failed" + (f", the last {self.in_a_row} in a row" if self.in_a_row
                                                             else "") + ":"]
        out += [f"[{name}]   step {s}: {kind}: {msg}" for s, kind, msg in self.records[-3:]]
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"total": self.total, "in_a_row": self.in_a_row, "records": list(self.records)}

    def load_state_dict(self, state: dict[str, Any] | None, total: int = 0) -> None:
        state = state or {}
        self.total = int(state.get("total", total))
        self.in_a_row = int(state.get("in_a_row", 0))
        self.records = [(int(s), str(k), str(m)) for s, k, m in state.get("records", [])]


def attempt(monitor: Monitor, trainer: pl.Trainer, pl_module: pl.LightningModule
            ) -> tuple[ProbeResult | None, Exception | None]:
    """(the checked result, None) of ``monitor``'s measurement (:func:`~lightning_probes.monitors._publish.measured`),
    or (None, the error) when it failed; with ``on_error="raise"`` the error is raised instead."""
    try:
        return measured(monitor, trainer, pl_module), None
    except Exception as err:  # a failed measurement must not kill someone's training run
        if monitor.on_error == "raise":
            raise
        return None, err


def record_failure(monitor: Monitor, trainer: pl.Trainer, step: int, error: Exception) -> None:
    """Count a failed probe, log it (``failed_probes`` scalar, ``failures`` text) and warn (once per kind of error,
    and again each :data:`IN_A_ROW` failures in a row)."""
    monitor.failures += 1
    streak = monitor.failure_log.record(step, error)
    monitor.warn_once(
        type(error).__name__,
        f"probe at step {step} failed and was skipped ({type(error).__name__}: {error}); training goes on and "
        "the next due step tries again. Pass on_error='raise' to stop on it.",
    )
    if streak:
        rank_zero_warn(f"[lightning-probes/{monitor.name}] {monitor.failure_log.in_a_row} probes in a row have failed "
                       f"(the last at step {step}: {type(error).__name__}: {error}); {monitor.failures} in all. This "
                       f"monitor is not measuring; see {monitor.prefix}failures.")
    log_scalars(trainer, {monitor.prefix + "failed_probes": float(monitor.failures)}, step)
    _loggers.write_text(monitor._sinks, monitor.prefix + "failures", monitor.failure_log.table(), step)

