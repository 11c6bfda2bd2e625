"""What probes cost: the training clock all monitors of a fit share, and the cost model a time budget reads.

Two things decide whether a :func:`~lightning_probes.schedules.budget` schedule lets a monitor probe: how much
*training* time has passed (wall time since fit start, less every monitor's probes and set-up), and what the next
probe is *expected* to cost. Both used to be worked out inside ``Monitor._probe``; they live here, each in one class:

- :class:`TrainingClock` — one per ``Trainer`` and fit, shared by every monitor attached to it (grouped or not): a
  monitor's training time is the fit's wall time less *all* monitors' probes and fit-start work, so in a
  :class:`~lightning_probes.monitors.group.MonitorGroup` no monitor's budget grows with the others' probes, and
  the work one monitor does at fit start (fixing its probe set, warm-up) is not training time for another.
- :class:`CostModel` — one per monitor: a probe's time split into its measurement and its pictures, so the next
  probe is expected to cost the last *measurement*, plus the last pictures' drawing time only when pictures are
  due. One-off costs (the first matplotlib draw, the first LAPACK call) are paid by :func:`warm_up` at
  ``on_train_start``, outside the training clock, rather than by the first probe, whose cost would otherwise be
  every later probe's expectation.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from lightning_probes.schedules import Clock
from lightning_probes.tensorboard import drawing_seconds, has_matplotlib

__all__ = ["CostModel", "ProbeTiming", "TrainingClock", "training_clock", "warm_up"]


class TrainingClock:
    """Training wall time of one fit: seconds since it started, less the time every monitor spent probing or
    setting up (:meth:`exclude`).

    Example:
        >>> clock = TrainingClock(start=0.0)
        >>> clock.exclude(2.0)
        >>> clock.seconds(now=10.0)
        8.0
    """

    def __init__(self, start: float | None = None) -> None:
        self.start = time.perf_counter() if start is None else start
        self.excluded = 0.0
        self.members: set[int] = set()  # ids of the monitors that joined this fit's clock

    def exclude(self, seconds: float) -> None:
        """Take ``seconds`` (a probe, a monitor's fit-start work) out of training time."""
        self.excluded += seconds

    def seconds(self, now: float | None = None) -> float:
        """Training seconds so far in this fit."""
        return (time.perf_counter() if now is None else now) - self.start - self.excluded


_CLOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def training_clock(trainer: Any, monitor: Any) -> TrainingClock:
    """The training clock of ``trainer``'s current fit, joined by ``monitor`` (call from ``on_train_start``).

    A monitor that joins a clock it is already a member of starts a new fit: the clock is started afresh.
    """
    clock = _CLOCKS.get(trainer)
    if clock is None or id(monitor) in clock.members:
        clock = _CLOCKS[trainer] = TrainingClock()
    clock.members.add(id(monitor))
    return clock


@dataclass
class ProbeTiming:
    """Where one probe's time went (seconds): ``total`` = ``measure`` + ``pictures``."""

    total: float
    pictures: float

    @property
    def measure(self) -> float:
        return self.total - self.pictures


class CostModel:
    """The expected cost of a monitor's next probe, from the costs of its past probes.

    A probe's time is split into its measurement and its pictures (timed by
    :func:`~lightning_probes.tensorboard.drawing` around every picture helper and image write): pictures come on
    some probes only and can cost ten times the rest (the spectrum: ~0.2 s against 9 ms), so a picture probe's whole
    time taken as the next plain probe's cost would hold a budget off for the rest of a run. So:

        expected(next) = last measurement × scale + (last pictures if pictures are due next else 0)

    ``scale`` is 1, or 1/2 after each time the monitor made its probes cheaper (:meth:`cheaper`), until a probe at
    the new size has been measured. Before any probe the cost is unknown (``None``): a budget then probes at once.

    Example:
        >>> model = CostModel()
        >>> model.expected(pictures_due=True) is None
        True
        >>> model.record(ProbeTiming(total=0.25, pictures=0.2), drew_pictures=True)
        >>> round(model.expected(pictures_due=False), 3), round(model.expected(pictures_due=True), 3)
        (0.05, 0.25)
        >>> model.cheaper()
        >>> round(model.expected(pictures_due=False), 3)
        0.025
    """

    def __init__(self) -> None:
        self.measure_seconds: float | None = None  # the last probe's measurement
        self.picture_seconds = 0.0  # the last pictures' drawing and writing time
        self.scale = 1.0
        self.final_seconds: float | None = None  # the cost of the probe of the final state (at_end)

    def start(self) -> tuple[float, float]:
        """A token for :meth:`stop`: the wall clock and the drawing clock now."""
        return time.perf_counter(), drawing_seconds()

    @staticmethod
    def stop(token: tuple[float, float]) -> ProbeTiming:
        """The timing of the probe started at ``token``."""
        return ProbeTiming(time.perf_counter() - token[0], drawing_seconds() - token[1])

    def record(self, timing: ProbeTiming, drew_pictures: bool, final: bool = False) -> None:
        """Learn from a finished probe."""
        self.measure_seconds, self.scale = timing.measure, 1.0
        if drew_pictures:
            self.picture_seconds = timing.pictures
        if final:
            self.final_seconds = timing.total

    def cheaper(self) -> None:
        """The monitor has halved its probe's size: expect half the measurement until it is measured again."""
        self.scale /= 2

    def expected(self, pictures_due: bool) -> float | None:
        """Expected seconds of the next probe; None before the first."""
        if self.measure_seconds is None:
            return None
        return self.measure_seconds * self.scale + (self.picture_seconds if pictures_due else 0.0)

    def update_clock(self, clock: Clock, timing: ProbeTiming, pictures_due_next: bool, step: int) -> None:
        """Book a finished probe on the monitor's :class:`~lightning_probes.schedules.Clock` (which the schedule
        and the checkpoint see) and set its expectation of the next probe."""
        clock.last_probe_seconds = timing.total
        clock.probe_seconds += timing.total
        clock.n_probes += 1
        clock.last_step = step
        clock.next_probe_seconds = self.expected(pictures_due_next)


def warm_up(pictures: bool) -> float:
    """Pay the one-off costs every first probe would otherwise carry: the first float64 LAPACK calls (eigh, SVD,
    least squares) and, if pictures will be drawn, matplotlib's first draw (font cache, Agg canvas). Returns the
    seconds it took (call it at ``on_train_start``, outside the training clock).

    Example:
        >>> warm_up(pictures=False) >= 0
        True
    """
    start = time.perf_counter()
    m = torch.eye(4, dtype=torch.float64) + 0.1
    torch.linalg.eigh(m)
    torch.linalg.svdvals(m)
    torch.linalg.lstsq(m, m[:, :1])
    if pictures and has_matplotlib() and not _WARM["pictures"]:
        from lightning_probes.tensorboard import line_image

        line_image({"a": ([0, 1], [0.0, 1.0]), "b": ([0, 1], [1.0, 0.0])}, "warm-up", logy=True)
        _WARM["pictures"] = True
    return time.perf_counter() - start


_WARM = {"pictures": False}  # matplotlib's first draw is paid once per process
