"""When a monitor probes: plain callables of ``(step, clock) -> bool``.

``step`` is ``trainer.global_step`` (optimizer steps, so gradient accumulation never probes twice for one step);
``clock`` tells how much wall time training and the monitor have used so far (for :func:`budget`). Each schedule's
``repr`` says what it does, so a run's settings read well in logs and reports.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["Budget", "Clock", "Every", "LogSpaced", "Schedule", "as_schedule", "budget", "every", "log_spaced"]


@dataclass
class Clock:
    """Wall-time accounting of one monitor (seconds). ``train_seconds`` excludes the monitor's own probes."""

    train_seconds: float = 0.0
    probe_seconds: float = 0.0
    last_probe_seconds: float = 0.0
    n_probes: int = 0
    last_step: int = -1
    next_probe_seconds: float | None = None  # expected cost of the next probe, with its pictures if due; None: unknown
    total_steps: int | None = None  # the steps this fit is planned to run (None: unknown), for a budget's floor


class Schedule(ABC):
    """Decides whether a probe is due at a step. ``deterministic`` schedules depend on the step alone."""

    deterministic: bool = True

    @abstractmethod
    def __call__(self, step: int, clock: Clock) -> bool: ...

    def affords(self, seconds: float, clock: Clock) -> bool:
        """Whether ``seconds`` more of the monitor's time fit (pictures on a due probe); only a time budget says no."""
        return True

    def starved(self, step: int, clock: Clock) -> bool:
        """Whether the schedule will not afford this monitor's probes for long (only a time budget can say so)."""
        return False


class Every(Schedule):
    """Probe at ``start``, ``start + n``, ``start + 2n``, ...

    Raises:
        ValueError: n not a positive integer, or start negative.

    Example:
        >>> due = every(10, start=5)
        >>> [s for s in range(40) if due(s, Clock())]
        [5, 15, 25, 35]
    """

    def __init__(self, n: int, start: int = 0) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"every(n) needs a positive integer n, got {n!r}.")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}.")
        self.n, self.start = n, start

    def __call__(self, step: int, clock: Clock) -> bool:
        return step >= self.start and (step - self.start) % self.n == 0

    def __repr__(self) -> str:
        return f"every({self.n}, start={self.start})"


class LogSpaced(Schedule):
    """Dense early, sparse late: step 0 and the distinct steps round(10^(k / per_decade)), k = 0, 1, 2, ...

    Early training is where regimes form, so it is sampled densely; ``max_interval`` caps the gap late in
    training (probe at least every ``max_interval`` steps).

    Raises:
        ValueError: per_decade not a positive integer, or max_interval not positive.

    Example:
        >>> due = log_spaced(per_decade=4)
        >>> [s for s in range(120) if due(s, Clock())]
        [0, 1, 2, 3, 6, 10, 18, 32, 56, 100]
        >>> due = log_spaced(per_decade=4, max_interval=30)
        >>> [s for s in range(120) if due(s, Clock())][-5:]
        [32, 56, 60, 90, 100]
    """

    def __init__(self, per_decade: int = 10, max_interval: int | None = None) -> None:
        if not isinstance(per_decade, int) or per_decade < 1:
            raise ValueError(f"per_decade must be a positive integer, got {per_decade!r}.")
        if max_interval is not None and max_interval < 1:
            raise ValueError(f"max_interval must be positive, got {max_interval}.")
        self.per_decade, self.max_interval = per_decade, max_interval

    def __call__(self, step: int, clock: Clock) -> bool:
        if step == 0 or (self.max_interval is not None and step % self.max_interval == 0):
            return True
        k = round(self.per_decade * math.log10(step))
        return any(round(10 ** (j / self.per_decade)) == step for j in (k - 1, k, k + 1) if j >= 0)

    def __repr__(self) -> str:
        return f"log_spaced(per_decade={self.per_decade}, max_interval={self.max_interval})"


class Budget(Schedule):
    """Adaptive: probe whenever the monitor's cumulative time, plus the expected cost of one more probe (the last
    probe's measurement, plus the last pictures' when pictures are due), stays within ``fraction`` of the training
    time so far — so the overhead stays at or below ``1 + fraction``. ``min_interval`` spaces probes by at least that
    many steps. Pictures come out of the same budget: a probe draws its due pictures only when their expected cost
    fits too, else a later probe does. The expected cost comes from the monitor's cost model
    (``lightning_probes.monitors._cost.CostModel``).

    A floor of ``min_probes`` (default 3) holds on a run whose length is known (``Clock.total_steps``, set by the
    monitor at fit start): with the probe at step 0 and the one of the final state (``at_end``), it probes at
    ``min_probes - 2`` evenly spaced middle points whatever the budget says, so a run too short for the budget still
    shows how the measurement moved. On a run long against one probe the budget probes more often than that, and
    the floor never acts. When the budget cannot afford the next probe for long (:meth:`starved`), the monitor is
    asked for a cheaper probe (``Monitor.cheaper``).

    Raises:
        ValueError: fraction not positive, min_interval below 1, or min_probes not a non-negative integer.

    Example:
        >>> due = budget(0.05)
        >>> due(100, Clock(train_seconds=10.0, probe_seconds=0.2, last_probe_seconds=0.2, n_probes=1))
        True
        >>> due(101, Clock(train_seconds=10.0, probe_seconds=0.45, last_probe_seconds=0.2, n_probes=2))
        False
        >>> tight = Clock(train_seconds=1.0, probe_seconds=0.45, last_probe_seconds=0.2, n_probes=1, total_steps=700)
        >>> due(349, tight), due(350, tight)  # the floor: the middle of a 700-step run
        (False, True)
    """

    deterministic = False

    def __init__(self, fraction: float = 0.05, min_interval: int = 1, min_probes: int = 3) -> None:
        if not 0 < fraction:
            raise ValueError(f"budget fraction must be positive (0.05 = 5% overhead), got {fraction}.")
        if min_interval < 1:
            raise ValueError(f"min_interval must be >= 1, got {min_interval}.")
        if isinstance(min_probes, bool) or not isinstance(min_probes, int) or min_probes < 0:
            raise ValueError(f"min_probes must be a non-negative integer, got {min_probes!r}.")
        self.fraction, self.min_interval, self.min_probes = fraction, min_interval, min_probes

    def __call__(self, step: int, clock: Clock) -> bool:
        if clock.n_probes and step - clock.last_step < self.min_interval:
            return False
        if self._floor_due(step, clock):
            return True
        return clock.probe_seconds + self._expected(clock) <= self.fraction * clock.train_seconds

    @staticmethod
    def _expected(clock: Clock) -> float:
        return clock.last_probe_seconds if clock.next_probe_seconds is None else clock.next_probe_seconds

    def _floor_due(self, step: int, clock: Clock) -> bool:
        """The floor: with the run's length known, the k-th of the ``min_probes - 2`` evenly spaced interior points
        (the first and last probes being the ``at_start`` and ``at_end`` ones) is probed once passed, if fewer than
        k + 1 probes were made — so a run too short for the budget still shows its middle, not only its ends."""
        total = clock.total_steps
        if total is None or self.min_probes < 3 or step >= total:
            return False
        k = clock.n_probes  # probes so far, the one at step 0 included: the next interior point due is the k-th
        return 1 <= k <= self.min_probes - 2 and step >= math.ceil(k * total / (self.min_probes - 1))

    def starved(self, step: int, clock: Clock) -> bool:
        """Whether the budget cannot afford the next probe for long: its expected cost does not fit in this
        monitor's share of the whole run (training time so far, projected over ``total_steps``; without a known
        length, over twice the time so far). A monitor told so is asked for a cheaper probe.

        Example:
            >>> clock = Clock(train_seconds=1.0, probe_seconds=0.1, next_probe_seconds=0.5, n_probes=1,
            ...               last_step=100, total_steps=700)
            >>> budget(0.02).starved(100, clock), budget(0.2).starved(100, clock)
            (True, False)
        """
        if clock.n_probes == 0 or step <= 0:
            return False
        projected = clock.train_seconds * (clock.total_steps / step if clock.total_steps else 2.0)
        return clock.probe_seconds + self._expected(clock) > self.fraction * projected

    def affords(self, seconds: float, clock: Clock) -> bool:
        """Pictures are paid from the same budget: ``seconds`` more must fit, and training must have paid for
        something first (no pictures before the first step).

        Example:
            >>> budget(0.1).affords(0.5, Clock(train_seconds=10.0, probe_seconds=0.4))
            True
            >>> budget(0.1).affords(0.7, Clock(train_seconds=10.0, probe_seconds=0.4))
            False
        """
        return clock.train_seconds > 0 and clock.probe_seconds + seconds <= self.fraction * clock.train_seconds

    def __repr__(self) -> str:
        # min_probes only when not the default, so the repr (part of a monitor's state_key) of older runs still holds
        floor = "" if self.min_probes == 3 else f", min_probes={self.min_probes}"
        return f"budget({self.fraction}, min_interval={self.min_interval}{floor})"


def every(n: int, start: int = 0) -> Every:
    """Probe every ``n`` optimizer steps from ``start``.

    Raises:
        ValueError: n not a positive integer, or start negative.
    """
    return Every(n, start)


def log_spaced(per_decade: int = 10, max_interval: int | None = None) -> LogSpaced:
    """Probe densely early and sparsely late (``per_decade`` probes per decade of steps).

    Raises:
        ValueError: per_decade not a positive integer, or max_interval not positive.
    """
    return LogSpaced(per_decade, max_interval)


def budget(fraction: float = 0.05, min_interval: int = 1, min_probes: int = 3) -> Budget:
    """Probe as often as a time budget of ``fraction`` of training allows, and at least ``min_probes`` times in a
    run of known length (start, evenly spaced middle points, end; see :class:`Budget`).

    Raises:
        ValueError: fraction not positive, min_interval below 1, or min_probes not a non-negative integer.
    """
    return Budget(fraction, min_interval, min_probes)


def as_schedule(schedule: Schedule | int) -> Schedule:
    """An int ``n`` means ``every(n)``; a :class:`Schedule` passes through.

    Raises:
        TypeError: neither an int (a bool is refused) nor a Schedule.
        ValueError: an int that is not positive.
    """
    if isinstance(schedule, bool):
        raise TypeError("schedule must be an int or a Schedule, not a bool.")
    if isinstance(schedule, int):
        return Every(schedule)
    if isinstance(schedule, Schedule):
        return schedule
    raise TypeError(
        f"schedule must be an int (every n steps) or a Schedule such as every(10), log_spaced(), budget(0.05); "
        f"got {type(schedule).__name__}."
    )
