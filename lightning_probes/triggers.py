"""Conditions on a monitor's scalars that stop training.

A trigger looks at each probe's scalars; when its condition has held for ``patience`` consecutive probe points it
asks the monitor to stop. The monitor makes the decision identical on every rank
(``strategy.reduce_boolean_decision``), OR-s it into ``trainer.should_stop`` and logs the reason.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["Regime", "StopOnRegime", "StopWhen", "Trigger"]

Regime = Literal["MF", "EF", "below"]
"""A regime :class:`StopOnRegime` waits for: minimal feature, extended feature, or below (too few directions)."""


class Trigger(ABC):
    """Base class: ``check`` returns a human-readable reason when training should stop, else ``None``."""

    @abstractmethod
    def check(self, step: int, scalars: Mapping[str, float], prefix: str) -> str | None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class StopWhen(Trigger):
    """Stop when a reported scalar is below ``below`` (or above ``above``) for ``patience`` probes in a row — or,
    with ``mode``, when it has stopped improving: EarlyStopping's rule, counted in probes.

    Use ``StopWhen(..., mode="min")`` rather than Lightning's ``EarlyStopping`` on a probe scalar: EarlyStopping
    counts its checks (every epoch or validation), not probes, so with probes sparser than its checks it re-reads
    the last probe's value and counts it again (``every(100)``, 17 steps an epoch, ``patience=3``: stopped at step
    68 on the strength of one probe). Here every probe is counted once, and only probes are.

    Args:
        metric: the scalar's name as the monitor reports it (``"n_features"``), or its full logged key
            (``"probes/spectrum/n_features"``).
        below: the condition holds when the value is < below.
        above: the condition holds when the value is > above (with both: outside [below, above]).
        patience: consecutive probe points the condition must hold for (with ``mode``: probes without improvement).
        min_step: probe points before this global step never count.
        mode: ``"min"`` or ``"max"``: instead of a threshold, stop when the value has not improved on its best so
            far (lower for ``"min"``) by more than ``min_delta`` for ``patience`` probes in a row, as
            ``EarlyStopping(mode=..., min_delta=..., patience=...)`` does with its checks. A NaN is no improvement.
        min_delta: the smallest change that counts as an improvement (with ``mode``).

    Raises:
        ValueError: no metric name; an unknown mode; mode together with a threshold, or neither; min_delta
            negative or without mode; below greater than above; patience not a positive integer; min_step
            negative.
        KeyError: at a probe, when the monitor does not report ``metric`` (raised by :meth:`check`).

    Example:
        >>> stop = StopWhen("loss_like", below=0.5, patience=2)
        >>> [stop.check(step, {"loss_like": v}, "probes/x/") for step, v in enumerate([0.4, 0.9, 0.3, 0.2])]
        [None, None, None, 'probes/x/loss_like = 0.2 < 0.5 for 2 consecutive probes (step 3)']
        >>> plateau = StopWhen("loss_like", mode="min", min_delta=0.05, patience=2)
        >>> [plateau.check(s, {"loss_like": v}, "probes/x/") for s, v in enumerate([1.0, 0.5, 0.48, 0.47])][-1]
        'probes/x/loss_like did not improve on its best 0.5 by more than 0.05 for 2 probes (step 3)'
    """

    def __init__(
        self, metric: str, below: float | None = None, above: float | None = None, patience: int = 1,
        min_step: int = 0, mode: Literal["min", "max"] | None = None, min_delta: float = 0.0,
    ) -> None:
        if not isinstance(metric, str) or not metric:
            raise ValueError("StopWhen needs the name of a scalar the monitor reports, e.g. 'n_features'.")
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"StopWhen({metric!r}): mode must be 'min' or 'max', got {mode!r}.")
        if mode is not None and (below is not None or above is not None):
            raise ValueError(f"StopWhen({metric!r}): give a threshold (below=/above=) or mode= (stop when it stops "
                             "improving), not both.")
        if not isinstance(min_delta, (int, float)) or isinstance(min_delta, bool) or min_delta < 0:
            raise ValueError(f"StopWhen({metric!r}): min_delta must be a number >= 0, got {min_delta!r}.")
        if mode is None and min_delta:
            raise ValueError(f"StopWhen({metric!r}): min_delta applies to mode='min' / 'max' only.")
        if below is None and above is None and mode is None:
            raise ValueError(f"StopWhen({metric!r}) needs below=... or above=... (or both), or mode='min' / 'max'.")
        if below is not None and above is not None and below > above:
            raise ValueError(f"StopWhen({metric!r}): below={below} is greater than above={above}.")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}.")
        if min_step < 0:
            raise ValueError(f"min_step must be >= 0, got {min_step}.")
        self.metric, self.below, self.above = metric, below, above
        self.patience, self.min_step = patience, min_step
        self.mode, self.min_delta = mode, float(min_delta)
        self.count = 0
        self.best: float | None = None  # with mode: the best value so far

    def __repr__(self) -> str:
        bounds = ", ".join(f"{k}={v}" for k, v in (("below", self.below), ("above", self.above)) if v is not None)
        if self.mode is not None:
            bounds = f"mode={self.mode!r}, min_delta={self.min_delta}"
        return f"{type(self).__name__}({self.metric!r}, {bounds}, patience={self.patience}, min_step={self.min_step})"

    def _value(self, scalars: Mapping[str, float], prefix: str) -> float:
        name = self.metric[len(prefix):] if self.metric.startswith(prefix) else self.metric
        if name not in scalars:
            raise KeyError(
                f"{self!r} watches {self.metric!r}, which this monitor does not report. "
                f"It reports: {', '.join(sorted(scalars))}."
            )
        return float(scalars[name])

    def _holds(self, value: float) -> str | None:
        if math.isnan(value):
            return None
        if self.below is not None and value < self.below:
            return f"{value:.4g} < {self.below}"
        if self.above is not None and value > self.above:
            return f"{value:.4g} > {self.above}"
        return None

    def _improved(self, value: float) -> bool:
        """EarlyStopping's test: better than the best so far by more than min_delta (the first value always is)."""
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        return value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta

    def _check_plateau(self, step: int, value: float, prefix: str) -> str | None:
        if self._improved(value):
            self.best, self.count = value, 0
            return None
        self.count += 1
        if self.count >= self.patience:
            name = self.metric if self.metric.startswith(prefix) else prefix + self.metric
            best = "none yet" if self.best is None else f"{self.best:.4g}"
            return (f"{name} did not improve on its best {best} by more than {self.min_delta:g} for {self.count} "
                    f"probes (step {step})")
        return None

    def check(self, step: int, scalars: Mapping[str, float], prefix: str) -> str | None:
        value = self._value(scalars, prefix)
        if step < self.min_step:
            return None
        if self.mode is not None:
            return self._check_plateau(step, value, prefix)
        why = self._holds(value)
        self.count = self.count + 1 if why else 0
        if why and self.count >= self.patience:
            name = self.metric if self.metric.startswith(prefix) else prefix + self.metric
            return f"{name} = {why} for {self.count} consecutive probes (step {step})"
        return None

    def state_dict(self) -> dict[str, Any]:
        # best only with mode: a threshold trigger's state stays what it always was
        return {"count": self.count} if self.mode is None else {"count": self.count, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.count = int(state.get("count", 0))
        best = state.get("best")
        self.best = None if best is None else float(best)


class StopOnRegime(StopWhen):
    """Stop once the feature-spectrum monitor has reported ``regime`` for ``patience`` probes in a row.

    ``regime`` is "MF" (minimal feature, reported as 1), "EF" (extended feature, 0) or "below" (-1: n_features is
    within the threshold but the function uses fewer than C - 1 output directions). Only that exact state counts:
    "MF" never fires on "below". A probe whose regime is undefined (no ``regime`` scalar, or NaN: constant features,
    a zero function) never counts and breaks the run of consecutive probes.

    Raises:
        ValueError: an unknown regime, or a patience / min_step that :class:`StopWhen` refuses.

    Example:
        >>> stop = StopOnRegime("MF", patience=2)
        >>> [stop.check(s, {"regime": r}, "probes/spectrum/") is not None for s, r in enumerate([0, 1, 1])]
        [False, False, True]
        >>> stop = StopOnRegime("MF", patience=1)
        >>> [stop.check(s, r, "probes/spectrum/") for s, r in enumerate([{"regime": -1.0}, {"rank": 1.0}])]
        [None, None]
    """

    CODES = {"MF": 1.0, "EF": 0.0, "below": -1.0}

    def __init__(self, regime: Regime = "MF", patience: int = 1, min_step: int = 0) -> None:
        if regime not in self.CODES:
            raise ValueError(f"regime must be 'MF' (minimal feature), 'EF' (extended feature) or 'below' (fewer "
                             f"than C - 1 output directions used), got {regime!r}.")
        code = self.CODES[regime]
        super().__init__("regime", above=code - 0.5, patience=patience, min_step=min_step)  # _holds: == code
        self.regime = regime

    def __repr__(self) -> str:
        return f"StopOnRegime({self.regime!r}, patience={self.patience}, min_step={self.min_step})"

    def _holds(self, value: float) -> str | None:
        return f"{self.regime} regime" if value == self.CODES[self.regime] else None  # NaN: never

    def check(self, step: int, scalars: Mapping[str, float], prefix: str) -> str | None:
        if "regime" not in scalars and "rank" in scalars:  # the spectrum monitor left an undefined regime out
            if step >= self.min_step:
                self.count = 0
            return None
        why = super().check(step, scalars, prefix)
        return why.replace(" = ", ": ") if why else None
