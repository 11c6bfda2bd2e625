"""The monitors attached to a Trainer, and their names.

Here rather than in ``group.py`` or ``base.py`` so the arrows run one way (group → base → this): the base needs
every attached monitor (to name them at setup, to merge their dashboards) without importing the group, so a
callback that holds monitors says so with the class attribute ``_lp_holds_monitors`` and lists them in
``monitors`` (:class:`~lightning_probes.monitors.group.MonitorGroup` does), and the caller names the monitor class.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["assign_names", "attached_monitors"]

M = TypeVar("M")


def attached_monitors(trainer: Any, kind: type[M]) -> list[M]:
    """Every callback of ``trainer`` of class ``kind``, those inside a monitor holder (a ``MonitorGroup``)
    included, in callback order."""
    found: list[M] = []
    for callback in trainer.callbacks:
        if isinstance(callback, kind):
            found.append(callback)
        elif getattr(type(callback), "_lp_holds_monitors", False):
            found.extend(m for m in callback.monitors if isinstance(m, kind))
    return found


def assign_names(monitors: Sequence[Any]) -> None:
    """Give ``monitors`` (those of one Trainer) distinct names, and refuse two that would write the same tags.

    A monitor without ``name=`` is named after its class (``spectrum``). When two or more monitors of one
    class have no ``name=``, each is named ``<class name>_<what tells it apart>``: the values of the arguments in its
    ``state_key_fields`` that differ among them (``spectrum_head_a`` / ``spectrum_head_b`` for two heads), or its
    position among them (``spectrum_1``, ``spectrum_2``) when none differ. A single monitor keeps today's tags.

    Raises:
        ValueError: two monitors (grouped or not) have the same name, so would write the same
            ``probes/<name>/...`` tags; the message names both.
    """
    unnamed: dict[str, list[Any]] = {}
    for monitor in monitors:
        if monitor._explicit_name is None:
            unnamed.setdefault(type(monitor).name, []).append(monitor)
    for default, same in unnamed.items():
        if len(same) == 1:
            same[0].name = default
            continue
        fields = [m.state_key_fields() for m in same]
        differing = [k for k in fields[0] if any(f.get(k) != fields[0][k] for f in fields)]
        for i, (monitor, f) in enumerate(zip(same, fields), 1):
            suffix = "_".join(_slug(f[k]) for k in differing) if differing else str(i)
            monitor.name = f"{default}_{suffix}"
    seen: dict[str, Any] = {}
    for monitor in monitors:
        other = seen.setdefault(monitor.name, monitor)
        if other is not monitor:
            raise ValueError(
                f"two attached monitors would write the same tags probes/{monitor.name}/...: {other!r} and "
                f"{monitor!r} (one would overwrite the other's points at every step both probe). Give them "
                "different name= arguments."
            )


def _slug(value: Any) -> str:
    """A value as a tag-safe name part: ``"head.a"`` -> ``head.a``, ``("l1", "l2")`` -> ``l1-l2``.

    Example:
        >>> _slug("head.a"), _slug(("l1", "l2"))
        ('head.a', 'l1-l2')
    """
    if isinstance(value, (list, tuple)):
        text = "-".join(map(str, value))
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-") or "x"
