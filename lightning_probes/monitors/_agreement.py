"""The DDP failure protocol: a probe that fails on one rank is skipped on every rank, and leaves no trace.

Under DDP every rank runs every probe on its share of the probe set, and the ranks must stay alike: the same
history, the same trigger counts, the same monitor state going into the next probe. So when a probe fails on some
rank, all ranks agree on it (one ``reduce_boolean_decision``) and every rank skips it, and a rank whose probe had
already moved its state on (interactions' previous values, concepts' formulas, the spectrum's class means) puts
that state back.

- :func:`rank_local` runs rank-local work (forward passes, accumulation) and agrees on a failure *before* a
  collective step, so a rank that failed does not leave the others waiting in a metric sync forever;
- :func:`agree_on_failure` is the agreement after ``measure()`` (skipped when :func:`rank_local` agreed already:
  the ranks must call the same collectives);
- :func:`rollback_point` / :func:`roll_back` save and restore what a probe may change: the monitor's
  :meth:`~lightning_probes.monitors.base.Monitor.probe_state`, not its whole ``state_dict()`` (the history,
  clock, trigger counts and failure log move only after the ranks have agreed, so they need no copy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_probes.monitors.base import Monitor

__all__ = [
    "FAILED_ELSEWHERE", "RankWork", "agree_on_failure", "own_state_only", "rank_local", "ranks_agreed", "roll_back",
    "rollback_point",
]

FAILED_ELSEWHERE = "the probe failed on another rank (see its warning); skipped on all ranks"


def ranks_agreed(error: BaseException | None) -> bool:
    """Whether the ranks already agreed on this failure in :func:`rank_local` (also when re-raised as another
    exception).

    Example:
        >>> ranks_agreed(None), ranks_agreed(ValueError("x"))
        (False, False)
    """
    while error is not None:
        if getattr(error, "_lp_ranks_agreed", False):
            return True
        error = error.__cause__ or error.__context__
    return False


def rank_local(trainer: pl.Trainer, work: Callable[[], Any]) -> Any:
    """Run ``work()`` and return its result; under DDP all ranks first agree whether any of them failed, and each
    raises (its own error, or one that says another rank failed) before anyone enters the next collective."""
    error: Exception | None = None
    result = None
    try:
        result = work()
    except Exception as err:  # re-raised below, after the ranks have agreed
        error = err
    if trainer.world_size > 1 and trainer.strategy.reduce_boolean_decision(error is not None, all=False):
        error = error or RuntimeError(FAILED_ELSEWHERE)
        error._lp_ranks_agreed = True  # type: ignore[attr-defined]  # the probe must not ask the ranks again
        raise error
    if error is not None:
        raise error
    return result


class RankWork(Callback):
    """A base class of :class:`~lightning_probes.monitors.base.Monitor`: the helpers a monitor's ``measure()``
    calls under DDP."""

    @staticmethod
    def rank_share(trainer: pl.Trainer) -> tuple[int, int]:
        """(rank, world size): a monitor with sum-reducible statistics probes only its rank's share."""
        return trainer.global_rank, trainer.world_size

    @staticmethod
    def rank_local(trainer: pl.Trainer, work: Callable[[], Any]) -> Any:
        """Run rank-local work (forward passes, accumulation) before a collective step such as a metric sync.

        All ranks agree whether any of them failed before anyone enters the collective, so a probe that fails on
        one rank fails on all of them instead of leaving the others waiting in the sync forever. (A probe that
        fails on one rank outside ``rank_local`` is agreed on by the base class after :meth:`measure`; its
        agreement meets the others' first ``rank_local``, so everything before the first one is covered too.)
        """
        return rank_local(trainer, work)


def agree_on_failure(trainer: pl.Trainer, error: Exception | None) -> Exception | None:
    """This rank's error, or (under DDP) one saying another rank failed, or None when the probe succeeded on all.

    Unless the ranks agreed already in :func:`rank_local`, they agree here — and a rank that failed before its
    first ``rank_local`` meets, with this collective, the others waiting in theirs (no hang).
    """
    if trainer.world_size > 1 and not ranks_agreed(error) \
            and trainer.strategy.reduce_boolean_decision(error is not None, all=False):
        return error or RuntimeError(FAILED_ELSEWHERE)
    return error


def rollback_point(monitor: Monitor, trainer: pl.Trainer) -> dict[str, Any] | None:
    """What the probe about to run may change (under DDP, where a probe skipped because another rank failed must
    leave no trace); None in a single process, where a failed probe is only counted."""
    return monitor.probe_state() if trainer.world_size > 1 else None


def roll_back(monitor: Monitor, snapshot: dict[str, Any] | None) -> None:
    """Put back the state saved by :func:`rollback_point`, so every rank carries the same state into the next
    probe."""
    if snapshot is not None:
        monitor.load_probe_state(snapshot)


@contextmanager
def own_state_only(monitor: Monitor) -> Iterator[None]:
    """Within the block the base's part of ``monitor.state_dict()`` is empty and its ``load_state_dict`` leaves
    the base's state alone, so a subclass's ``state_dict()`` gives (and takes) only its own entries."""
    monitor._own_state_only = True
    try:
        yield
    finally:
        monitor._own_state_only = False
