"""Bringing a monitor's results back from ``ddp_spawn`` / ``ddp_fork`` workers to the process that called ``fit``.

Under a spawn (or fork) launcher the training runs in worker processes, each with its own copy of every callback;
the launching process runs no callback hook at all, so its monitors would stay empty and ``summary()`` would say
"no successful probe" after a successful run. Lightning sends the workers' weights, trainer state and
``callback_metrics`` back; a callback's own state it does not. So global rank 0 writes its monitor's
``state_dict()`` to a file named by a token the monitor carries into the workers, and the monitor in the
launching process (which never ran ``setup``) loads it the first time its history is read, then deletes it.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from typing import Any

import torch

__all__ = ["new_token", "is_spawned_worker", "send_to_launcher", "receive_from_worker"]


def new_token() -> str:
    return uuid.uuid4().hex


def _path(token: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"lightning_probes_state_{token}.pt")


def is_spawned_worker(trainer: Any) -> bool:
    """Whether this process is a worker started by Lightning's multiprocessing launcher (ddp_spawn, ddp_fork,
    ddp_notebook): hooks run only in the workers there, so a process running hooks under it is one."""
    from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

    return isinstance(getattr(trainer.strategy, "launcher", None), _MultiProcessingLauncher)


def send_to_launcher(token: str, state: dict[str, Any], trainer: Any) -> None:
    """On global rank 0 of a spawned fit: leave ``state`` for the launching process (the ranks agree on it)."""
    if trainer.is_global_zero:
        tmp = _path(token) + f".{os.getpid()}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, _path(token))  # whole or absent, never half-written


def receive_from_worker(token: str) -> dict[str, Any] | None:
    """The state a spawned worker left for this token, once (the file is removed), or None."""
    path = _path(token)
    if not os.path.exists(path):
        return None
    try:
        state = torch.load(path, weights_only=True)
    finally:
        os.remove(path)
    return state
