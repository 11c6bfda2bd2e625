"""The precision a probe runs in: the one the model trains in.

Under mixed precision (``"bf16-mixed"``, ``"16-mixed"``) training runs its forward passes under autocast, with
float32 master weights; a probe outside that context would measure a float32 model the user never trains. So a
probe's forward passes run under the trainer's own autocast context. The measurements are safe inside it: autocast
leaves float64 tensors alone, and every measure casts what it captures to float64 (or float32) before its math.
The true-precision plugins (``"bf16-true"``, ``"64-true"``) are not entered: their weights already have that dtype,
and their context would change the default dtype of every tensor a measurement creates.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["probe_precision"]


def probe_precision(trainer: Any) -> contextlib.AbstractContextManager:
    """The trainer's autocast context under mixed precision; a no-op context otherwise.

    Example:
        >>> import lightning.pytorch as pl, torch
        >>> with probe_precision(pl.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False)):
        ...     torch.is_autocast_enabled("cpu")
        True
        >>> with probe_precision(pl.Trainer(accelerator="cpu", logger=False)):
        ...     torch.is_autocast_enabled("cpu")
        False
    """
    from lightning.pytorch.plugins.precision import MixedPrecision

    plugin = getattr(getattr(trainer, "strategy", None), "precision_plugin", None)
    if isinstance(plugin, MixedPrecision):
        return plugin.forward_context()
    return contextlib.nullcontext()
