"""What probes cost: the training clock all monitors of a fit share, and the cost model a time budget reads.

Two things decide whether a :func:`~lightning_probes.schedules.budget` schedule lets a monitor probe: how much
*training* time has passed (wall time since fit start, less every monitor's probes and set-up), and what the next
probe is *expected* to cost. Both used to be worked out inside ``Monitor._probe``; they live here, each in one class:

- :class:`TrainingClock` — one per ``Trainer`` and fit, shared by every monitor attached to it (grouped or not): a
  monitor's training time is the fit's wall time less *all* monitors' probes and fit-start work, so in a
  :class:`~lightning_probes.monitors.group.MonitorGroup` no monitor's budget grows with the others' probes, and
  the work one monitor does at fit start (fixing its probe set, warm-up) is not training time for another.
- :func:`probe_due` decides after each step whether a probe is due, :func:`pictures_due`, before a probe, whether it
  draws pictures; :func:`book` accounts for it after.
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
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_probes.schedules import Clock
from lightning_probes.tensorboard import drawing_seconds, has_matplotlib

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_probes.monitors.base import Monitor

__all__ = [
    "CostModel", "ProbeTiming", "TrainingClock", "book", "cost_summary", "pictures_due", "planned_steps", "probe_due",
    "train_seconds", "training_clock", "warm_up",
]


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


def probe_due(monitor: Monitor, trainer: pl.Trainer, step: int) -> bool:
    """Whether ``monitor``'s schedule asks for a probe after the optimizer step ``step`` (at most one per step).
    Under DDP a time-based decision is rank 0's, so every rank probes at the same steps."""
    if step == monitor.clock.last_step:
        return False
    if not monitor.schedule.deterministic:
        monitor.clock.train_seconds = train_seconds(monitor)
    due = monitor.schedule(step, monitor.clock)
    if not monitor.schedule.deterministic and trainer.world_size > 1:
        due = bool(trainer.strategy.broadcast(due, src=0))  # a time-based decision must be the same everywhere
    return due


def pictures_due(monitor: Monitor, final: bool) -> tuple[bool, bool]:
    """(draw pictures on this probe, pictures wait for a later one): pictures come every ``images_every``-th
    probe, and on the final one, only where a logger takes them (drawn for no one, they cost a spectrum probe 1.1 s
    instead of 13 ms); under a time budget they wait for a probe the budget can afford them on."""
    due = bool(monitor._sinks) and monitor.images_every > 0 and (
        final or monitor._pictures_pending or monitor.clock.n_probes % monitor.images_every == 0)
    # the final state's pictures are drawn whatever the budget says (they are the ones people look at)
    render = due and (final or monitor.schedule.affords(monitor.cost_model.picture_seconds, monitor.clock))
    return render, due and not render


def book(monitor: Monitor, trainer: pl.Trainer, token: tuple[float, float], step: int, final: bool) -> None:
    """Account for a finished probe: the cost model learns from it, the shared training clock leaves it out,
    and a budget that cannot afford the next probe for long gets a cheaper one (said once)."""
    model, clock = monitor.cost_model, monitor.clock
    timing = model.stop(token)
    model.record(timing, drew_pictures=monitor.render_images, final=final)
    pictures_next = bool(monitor._sinks) and monitor.images_every > 0 and (
        monitor._pictures_pending or (clock.n_probes + 1) % monitor.images_every == 0)
    model.update_clock(clock, timing, pictures_next, step)
    if monitor._training is not None:
        monitor._training.exclude(timing.total)
    clock.train_seconds = train_seconds(monitor)
    starved = not final and monitor.schedule.starved(step, clock)
    if not final and not monitor.schedule.deterministic and trainer.world_size > 1:
        starved = bool(trainer.strategy.broadcast(starved, src=0))  # every rank probes the same size
    change = monitor.cheaper() if starved else None
    if change:
        model.cheaper()
        clock.next_probe_seconds = model.expected(pictures_next)
        if "cheaper" not in monitor._warned:
            monitor._warned.add("cheaper")
            rank_zero_info(f"[lightning-probes/{monitor.name}] the time budget cannot afford this probe for "
                           f"long: probing cheaper ({change}) from step {step} on.")


def cost_summary(monitor: Monitor) -> str:
    """One line: how many probes ``monitor`` made and their cost as a share of training time (the final probe's
    apart)."""
    clock, final_seconds = monitor.clock, monitor.cost_model.final_seconds
    share = clock.probe_seconds / clock.train_seconds if clock.train_seconds > 0 else float("nan")
    final = "" if final_seconds is None else f", the final-state probe {final_seconds:.2f} s"
    return (f"[{monitor.name}] {clock.n_probes} probes, {clock.probe_seconds:.2f} s = {share:.1%} of training time "
            f"({clock.train_seconds:.1f} s){final}")


def planned_steps(trainer: Any) -> int | None:
    """The optimizer steps this fit is planned to run (``max_steps``, or Lightning's estimate from the epochs and
    the loader's length); None when unknown or unbounded."""
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # an iterable loader without a length, a strategy that cannot tell yet
        return None
    return int(total) if isinstance(total, (int, float)) and np.isfinite(total) and total > 0 else None


def train_seconds(monitor: Monitor) -> float:
    """``monitor``'s training seconds so far: those of earlier fits (restored from a checkpoint) and this fit's
    shared training clock."""
    return monitor._train_base + (monitor._training.seconds() if monitor._training is not None else 0.0)
