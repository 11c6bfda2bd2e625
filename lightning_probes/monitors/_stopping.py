"""The stop decision and the triggers' saved state.

After each probe every trigger of a monitor sees its scalars (:func:`decide_stop`); a stop asked for by any trigger
on any rank stops every rank, with the reason logged. A checkpoint keeps each trigger's patience count under the
trigger's key (:func:`trigger_key`: its ``repr``, which names the watched scalar and the condition), so a resumed
monitor whose triggers were reordered, added or removed gives each trigger its own count back and warns about the
rest; checkpoints of earlier versions, which kept the states by position only, still load.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lightning.pytorch.utilities import rank_zero_info

from lightning_probes.monitors import _loggers
from lightning_probes.triggers import Trigger

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_probes.monitors._publish import ProbeResult
    from lightning_probes.monitors.base import Monitor

__all__ = ["decide_stop", "load_trigger_states", "trigger_key", "trigger_keys", "trigger_states"]


def decide_stop(monitor: Monitor, trainer: pl.Trainer, result: ProbeResult | None, step: int) -> None:
    """Let every trigger see the probe's scalars (None: the probe failed) and stop training, on every rank, when
    one of them fires on any rank."""
    if not monitor.triggers:
        return
    reason = None
    if result is not None:
        for trig in monitor.triggers:  # every trigger sees every probe, so patience counts stay right
            why = trig.check(step, result.scalars, monitor.prefix)
            reason = reason or why
    # identical on every rank: a stop decided by any rank stops all of them (and is always reached, even
    # when this rank's probe failed, so no rank waits for another)
    if trainer.strategy.reduce_boolean_decision(reason is not None, all=False):
        monitor.stop_reason = reason or f"a trigger fired on another rank at step {step}"
        trainer.should_stop = True
        rank_zero_info(f"[lightning-probes/{monitor.name}] stopping training: {monitor.stop_reason}")
        _loggers.write_text(monitor._sinks, monitor.prefix + "stop_reason", monitor.stop_reason, step)


def trigger_key(trigger: Trigger) -> str:
    """A trigger's identity across runs: its ``repr`` (the class's name where the repr is the default one, which
    holds a memory address).

    Example:
        >>> from lightning_probes.triggers import StopWhen
        >>> trigger_key(StopWhen("nc1", below=0.1, patience=3))
        "StopWhen('nc1', below=0.1, patience=3, min_step=0)"
    """
    if type(trigger).__repr__ is object.__repr__:
        return f"{type(trigger).__module__}.{type(trigger).__qualname__}"
    return repr(trigger)


def trigger_keys(triggers: Sequence[Trigger]) -> list[str]:
    """The keys of ``triggers``, made distinct: the second of two equal triggers gets ``#2``, and so on.

    Example:
        >>> from lightning_probes.triggers import StopOnRegime
        >>> trigger_keys([StopOnRegime("MF"), StopOnRegime("MF")])
        ["StopOnRegime('MF', patience=1, min_step=0)", "StopOnRegime('MF', patience=1, min_step=0)#2"]
    """
    seen: dict[str, int] = {}
    keys = []
    for trig in triggers:
        key = trigger_key(trig)
        seen[key] = seen.get(key, 0) + 1
        keys.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return keys


def trigger_states(triggers: Sequence[Trigger]) -> dict[str, Any]:
    """The checkpoint entries of ``triggers``: their states in order (``triggers``, the format of earlier versions,
    which they read by position) and their keys (``trigger_keys``), by which they are read back."""
    return {"triggers": [t.state_dict() for t in triggers], "trigger_keys": trigger_keys(triggers)}


def load_trigger_states(monitor: Monitor, state: dict[str, Any]) -> None:
    """Give each of ``monitor``'s triggers its saved state, matched by key (by position in a checkpoint of an
    earlier version); warn, once, about triggers without a saved state and saved states without a trigger."""
    saved = list(state.get("triggers", []))
    keys = state.get("trigger_keys")
    if keys is None:  # an earlier version's checkpoint: the states in the order of its triggers
        for trig, st in zip(monitor.triggers, saved):
            trig.load_state_dict(st)
        if saved and len(saved) != len(monitor.triggers):
            monitor.warn_once("trigger-states", f"the checkpoint holds {len(saved)} trigger state(s) for this "
                                                f"monitor's {len(monitor.triggers)} trigger(s); they were matched by "
                                                "position (the checkpoint names no trigger).")
        return
    by_key = dict(zip(keys, saved))
    mine = trigger_keys(monitor.triggers)
    for trig, key in zip(monitor.triggers, mine):
        if key in by_key:
            trig.load_state_dict(by_key[key])
    fresh = [k for k in mine if k not in by_key]
    dropped = [k for k in keys if k not in mine]
    if fresh or dropped:
        parts = ([f"no saved state for {', '.join(fresh)} (it starts afresh, its patience from zero)"] if fresh
                 else []) + ([f"saved states of triggers this monitor no longer has were left out: "
                              f"{', '.join(dropped)}"] if dropped else [])
        monitor.warn_once("trigger-states", f"resuming the triggers: {'; '.join(parts)}.")
