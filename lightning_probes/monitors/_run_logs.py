"""What a run leaves behind: a bounded probe history, the restart mark of a resumed run, text written when it changed.

- :class:`History` — a monitor's ``(step, scalars)`` per successful probe, bounded: the last ``recent`` probes at
  full resolution, older ones thinned to at most ``older`` evenly strided probes (the first probe always kept). The
  event files keep every point; this is what the monitor itself remembers (summaries, checkpoints).
- :func:`mark_restart` — a resumed fit writes TensorBoard's ``SessionLog.START`` just after the step it resumed
  from, so TensorBoard's purge of orphaned data hides what the killed run logged after its checkpoint.
- :class:`TextCache` — the last text written per tag, so an unchanged table is not rewritten on every probe.
- :class:`RunLogHooks` — the monitor's hooks that keep the logs whole: flushed before a checkpoint and after a
  crash, the restart marked once a resumed fit starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import Any, overload

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

__all__ = ["History", "RunLogHooks", "TextCache", "mark_restart"]

RECENT = 512  # probes kept at full resolution
OLDER = 512  # at most this many older probes, thinned by a power-of-two stride


class History(Sequence[tuple[int, dict[str, float]]]):
    """A bounded sequence of ``(step, scalars)``, one per successful probe, oldest first.

    Probe number ``i`` (counted from 0 over the whole run) is kept while it is among the last ``recent`` probes, and
    after that only if ``i`` is a multiple of the stride, a power of two that doubles whenever more than ``older``
    old probes would be kept. So memory is bounded by ``recent + older`` entries, an append costs O(1) amortised
    (a thinning pass of ``older`` entries every ``older / 2 · stride`` appends), and what is kept depends only on the
    sequence of appends: a resumed run, whose state was restored, keeps the same entries as an uninterrupted one.

    Example:
        >>> h = History(recent=3, older=2)
        >>> for step in range(10):
        ...     h.append((step, {"x": float(step)}))
        >>> [s for s, _ in h], len(h), h[-1][0], h.n_seen
        ([0, 4, 7, 8, 9], 5, 9, 10)
    """

    def __init__(self, items: Sequence[tuple[int, dict[str, float]]] = (), recent: int = RECENT,
                 older: int = OLDER) -> None:
        if recent < 1 or older < 1:
            raise ValueError(f"recent and older must be >= 1, got {recent}, {older}.")
        self.recent, self.older = recent, older
        self._recent: deque[tuple[int, int, dict[str, float]]] = deque()  # (probe number, step, scalars)
        self._older: list[tuple[int, int, dict[str, float]]] = []
        self.stride = 1
        self.n_seen = 0
        for item in items:
            self.append(item)

    def append(self, item: tuple[int, dict[str, float]]) -> None:
        step, scalars = item
        self._recent.append((self.n_seen, int(step), scalars))
        self.n_seen += 1
        if len(self._recent) > self.recent:
            entry = self._recent.popleft()
            if entry[0] % self.stride == 0:
                self._older.append(entry)
                while len(self._older) > self.older:  # rare: the stride doubles
                    self.stride *= 2
                    self._older = [e for e in self._older if e[0] % self.stride == 0]

    def __len__(self) -> int:
        return len(self._older) + len(self._recent)

    @overload
    def __getitem__(self, index: int) -> tuple[int, dict[str, float]]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, dict[str, float]]]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return list(self)[index]
        n = len(self)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("history index out of range")
        old = len(self._older)
        _, step, scalars = self._older[index] if index < old else self._recent[index - old]
        return step, scalars

    def __iter__(self) -> Iterator[tuple[int, dict[str, float]]]:
        for _, step, scalars in self._older:
            yield step, scalars
        for _, step, scalars in self._recent:
            yield step, scalars

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (History, list, tuple)):
            return list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"History({len(self)} of {self.n_seen} probes kept, stride {self.stride})"

    def state_dict(self) -> dict[str, Any]:
        return {
            "recent_entries": [(i, s, dict(v)) for i, s, v in self._recent],
            "older_entries": [(i, s, dict(v)) for i, s, v in self._older],
            "stride": self.stride, "n_seen": self.n_seen,
        }

    @classmethod
    def from_state(cls, state: Any, recent: int = RECENT, older: int = OLDER) -> History:
        """From :meth:`state_dict`, or from a plain list of ``(step, scalars)`` (checkpoints of earlier versions)."""
        if isinstance(state, dict) and "n_seen" in state:
            history = cls(recent=recent, older=older)
            history._recent = deque((int(i), int(s), dict(v)) for i, s, v in state["recent_entries"])
            history._older = [(int(i), int(s), dict(v)) for i, s, v in state["older_entries"]]
            history.stride, history.n_seen = int(state["stride"]), int(state["n_seen"])
            return history
        return cls([(int(s), dict(v)) for s, v in state or []], recent=recent, older=older)


def mark_restart(writers: Sequence[Any], resumed_step: int) -> None:
    """Write ``SessionLog(status=START)`` at ``resumed_step + 1`` to each SummaryWriter, once per writer.

    TensorBoard's reader, on a START event at step ``s``, drops every point it read before with step ``>= s``
    (its purge of orphaned data after a crash): here the points the killed run logged after the checkpoint it was
    resumed from. The point at ``resumed_step`` itself (logged before that checkpoint was saved) stays. Every tag of
    the directory is purged, the user's own training scalars too.
    """
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    step = int(resumed_step) + 1
    for writer in writers:
        if getattr(writer, "_lp_restart_marked", None) == step:
            continue  # several monitors of one fit share a writer: one mark
        writer._get_file_writer().add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        writer.flush()
        writer._lp_restart_marked = step


class TextCache:
    """The last text written per (writer, tag): an unchanged text table is not written again.

    Example:
        >>> cache = TextCache()
        >>> cache.changed("w", "t", "a"), cache.changed("w", "t", "a"), cache.changed("w", "t", "b")
        (True, False, True)
    """

    def __init__(self) -> None:
        self._last: dict[tuple[int, str], str] = {}

    def changed(self, writer: Any, tag: str, text: str) -> bool:
        key = (id(writer), tag)
        if self._last.get(key) == text:
            return False
        self._last[key] = text
        return True

    def clear(self) -> None:
        self._last.clear()


class RunLogHooks(Callback):
    """A base class of :class:`~lightning_probes.monitors.base.Monitor`: every point it logged reaches the disk
    before a checkpoint is saved (a run killed later loses none of them) and after a crash, and a fit resumed from
    a checkpoint marks its restart (:func:`mark_restart`) when it starts."""

    _sinks: list[Any]  # the monitor's picture and text sinks (_loggers.py)
    _resumed = False  # the fit was restored from a checkpoint: mark the restart for TensorBoard

    @override
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._resumed = True  # the fit resumes from a checkpoint: on_train_start marks the restart

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._flush(trainer)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._flush(trainer)  # keep every probe point written before the crash

    def _mark_restart(self, trainer: pl.Trainer) -> None:
        """TensorBoard hides what the killed run logged after the checkpoint the fit resumed from."""
        if self._resumed:
            from lightning_probes.monitors._publish import tensorboard_writers

            self._resumed = False
            mark_restart(tensorboard_writers(trainer), trainer.global_step)

    def _flush(self, trainer: pl.Trainer) -> None:
        for sink in self._sinks:
            sink.flush()
