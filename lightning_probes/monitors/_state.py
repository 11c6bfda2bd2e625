"""A monitor's state: what a checkpoint keeps, what a ``ddp_spawn`` worker sends back, what a DDP rollback saves.

:class:`MonitorState` is the part of :class:`~lightning_probes.monitors.base.Monitor` that holds it: the history,
the ``state_key`` a checkpoint files the state under, ``state_dict`` / ``load_state_dict`` (a subclass adds its
own entries to the base's with ``super()``), and :meth:`MonitorState.probe_state`, the smaller part a probe may
change, which the DDP failure protocol saves before each probe (``_agreement.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_probes.monitors._agreement import own_state_only
from lightning_probes.monitors._failures import FailureLog
from lightning_probes.monitors._run_logs import History
from lightning_probes.monitors._stopping import load_trigger_states, trigger_states
from lightning_probes.schedules import Clock
from lightning_probes.spawn import is_spawned_worker, new_token, receive_from_worker, send_to_launcher

if TYPE_CHECKING:
    from lightning_probes.schedules import Schedule
    from lightning_probes.triggers import Trigger

__all__ = ["MonitorState"]


class MonitorState(Callback):
    """The state half of a :class:`~lightning_probes.monitors.base.Monitor` (its base class; the monitor sets
    ``schedule``, ``triggers`` and ``_explicit_name``)."""

    schedule: Schedule
    triggers: list[Trigger]
    _explicit_name: str | None
    _own_state_only = False  # inside probe_state() / load_probe_state(): the base's entries are left out

    def __init__(self) -> None:
        self.clock = Clock()
        self.history = History()  # bounded: recent probes in full, older ones thinned (_run_logs.py)
        self.stop_reason: str | None = None
        self.failures = 0
        self.failure_log = FailureLog()
        self._state_key: tuple[Schedule, str] | None = None
        self._spawn_token = new_token()  # names the state a ddp_spawn worker sends back (see lightning_probes.spawn)
        self._ran_hooks = False  # set at setup: this copy runs the fit (never true in a ddp_spawn launcher)

    @property
    def history(self) -> History:
        """(step, scalars) of every successful probe (older ones thinned, see ``History``). After a ``ddp_spawn``
        fit, the launching process's monitor takes rank 0's state (history, clock, triggers, stop reason, its own
        state) the first time this is read."""
        if not self._ran_hooks:
            state = receive_from_worker(self._spawn_token)
            if state is not None:
                self.load_state_dict(state)
        return self._history

    @history.setter
    def history(self, value: Sequence[tuple[int, dict[str, float]]]) -> None:
        # a plain list (a test, a user's own bookkeeping) becomes a History, so state_dict and thinning still work
        self._history = value if isinstance(value, History) else History(value)

    @property
    @override
    def state_key(self) -> str:
        # Lightning reads state_key on every hook call of every step (it names the profiler section), so it is built
        # once per schedule rather than each time; the other fields are constructor arguments and never change.
        # An explicit name= is part of it (two monitors that differ only by name keep apart states); a default
        # name is not, so checkpoints written before name= existed still load
        cached = self._state_key
        if cached is None or cached[0] is not self.schedule:
            named = {} if self._explicit_name is None else {"name": self._explicit_name}
            key = self._generate_state_key(schedule=repr(self.schedule), **self.state_key_fields(), **named)
            cached = self._state_key = (self.schedule, key)
        return cached[1]

    def state_key_fields(self) -> dict[str, Any]:
        """Arguments that tell two instances of this monitor apart (for ``state_key``)."""
        return {}

    @override
    def state_dict(self) -> dict[str, Any]:
        """The base's entries (a subclass adds its own): the schedule's clock, the history, each trigger's state
        under its key (``_stopping.py``), the stop reason and the failures."""
        if self._own_state_only:
            return {}
        return {
            "clock": asdict(self.clock),
            "history": self.history.state_dict(),
            **trigger_states(self.triggers),
            "stop_reason": self.stop_reason,
            "failures": self.failures,
            "failure_log": self.failure_log.state_dict(),
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self._own_state_only:
            return
        self.clock = Clock(**state_dict["clock"])
        self.history = History.from_state(state_dict.get("history", []))
        load_trigger_states(self, state_dict)  # type: ignore[arg-type]
        self.stop_reason = state_dict.get("stop_reason")
        self.failures = int(state_dict.get("failures", 0))
        self.failure_log.load_state_dict(state_dict.get("failure_log"), total=self.failures)

    def probe_state(self) -> dict[str, Any]:
        """What a probe may change, saved before each probe under DDP to undo one that another rank failed: the
        subclass's own ``state_dict()`` entries (the base's history, clock, triggers and failures change only after
        the ranks have agreed). A subclass may override it (and :meth:`load_probe_state`) with less."""
        with own_state_only(self):  # type: ignore[arg-type]
            return self.state_dict()

    def load_probe_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`probe_state` saved."""
        with own_state_only(self):  # type: ignore[arg-type]
            self.load_state_dict(state)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and is_spawned_worker(trainer):
            send_to_launcher(self._spawn_token, self.state_dict(), trainer)  # the launcher's copy saw nothing
