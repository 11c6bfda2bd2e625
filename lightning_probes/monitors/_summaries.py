"""What a monitor says at the end of a run: what it saw (:meth:`Summaries.summary`, which a monitor overrides), its
failed probes (appended to every ``summary()``, a subclass's own too) and what its probes cost."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from lightning.pytorch.callbacks import Callback

from lightning_probes.monitors._cost import cost_summary
from lightning_probes.monitors._failures import FailureLog
from lightning_probes.monitors._run_logs import History

__all__ = ["Summaries", "with_failures"]


class Summaries(Callback):
    """A base class of :class:`~lightning_probes.monitors.base.Monitor`: its end-of-run lines."""

    name: str
    history: History
    failures: int
    failure_log: FailureLog

    def summary(self) -> str:
        """A few lines on what this monitor saw, for the end of a run."""
        if not self.history:
            return f"[{self.name}] no successful probe ({self.failures} failed)."
        step, scalars = self.history[-1]
        shown = ", ".join(f"{k}={v:.4g}" for k, v in list(scalars.items())[:8])
        return f"[{self.name}] {self.history.n_seen} probes; at step {step}: {shown}"

    def failure_summary(self) -> str:
        """Lines on this monitor's failed probes (count and last messages); empty when none failed. Every
        ``summary()`` ends with them (a subclass's own ``summary`` too: see ``__init_subclass__``)."""
        return "\n".join(self.failure_log.lines(self.name))

    def cost_summary(self) -> str:
        """One line: how many probes this monitor made and their cost as a share of training time (the final
        probe's apart)."""
        return cost_summary(self)  # type: ignore[arg-type]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "summary" in cls.__dict__:  # a subclass's summary() lists the failures too, without repeating the call
            # Replacing a method is what this does (method-assign); mypy does not treat a plain Callable stored on
            # the class as a function that binds `self` (assignment), though at run time it binds as one.
            cls.summary = with_failures(cls.__dict__["summary"])  # type: ignore[method-assign, assignment]


def with_failures(summary: Callable[[Any], str]) -> Callable[[Any], str]:
    """``summary`` followed by the monitor's failure lines, added once by the outermost summary() call (a
    subclass's summary that calls ``super().summary()`` does not get them twice)."""
    if getattr(summary, "_lp_with_failures", False):
        return summary

    @functools.wraps(summary)
    def wrapped(self: Any) -> str:
        if getattr(self, "_in_summary", False):
            return summary(self)
        self._in_summary = True
        try:
            text = summary(self)
        finally:
            self._in_summary = False
        extra = self.failure_summary()
        return f"{text}\n{extra}" if extra else text

    wrapped._lp_with_failures = True  # type: ignore[attr-defined]
    return wrapped


Summaries.summary = with_failures(Summaries.summary)  # type: ignore[method-assign, assignment]  # as in __init_subclass__
