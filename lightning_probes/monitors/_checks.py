"""Checks of the probe labels made once at fit start, so a label the head cannot have fails there with a message about
the probe data, instead of failing every probe of the run (one warning, then silence)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_class_labels", "check_regression_targets"]


def check_class_labels(owner: str, targets: Tensor, num_classes: int, head: str) -> None:
    """Class indices ``targets`` (N,) must lie in ``[0, num_classes)``, the head's outputs.

    Example:
        >>> check_class_labels("Monitor", torch.tensor([0, 2, 1]), 3, "classifier")
        >>> check_class_labels("Monitor", torch.tensor([0, 3]), 3, "classifier")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: Monitor: the probe labels run 0..3, but 'classifier' has 3 outputs (classes 0..2); 1 of 2 probe
        samples have a label outside them. Fix probe_data's labels, or watch the head that has these classes.
    """
    if targets.is_floating_point() or targets.ndim != 1:
        raise ValueError(f"{owner}: classification probe labels must be a 1-D tensor of class indices, got "
                         f"{targets.dtype} of shape {tuple(targets.shape)}.")
    if not len(targets):
        return
    low, high = (int(v) for v in torch.aminmax(targets))
    if low < 0 or high >= num_classes:
        bad = int(((targets < 0) | (targets >= num_classes)).sum())
        raise ValueError(
            f"{owner}: the probe labels run {low}..{high}, but {head!r} has {num_classes} outputs (classes "
            f"0..{num_classes - 1}); {bad} of {len(targets)} probe samples have a label outside them. Fix "
            "probe_data's labels, or watch the head that has these classes."
        )


def check_regression_targets(owner: str, targets: Tensor, num_outputs: int, head: str) -> None:
    """Real targets (N,) or (N, num_outputs) must give one value per head output, finite.

    Example:
        >>> check_regression_targets("Monitor", torch.zeros(4, 2), 2, "out")
        >>> check_regression_targets("Monitor", torch.zeros(4, 3), 2, "out")  # doctest: +NORMALIZE_WHITESPACE
        Traceback (most recent call last):
        ...
        ValueError: Monitor: the probe targets have 3 values per sample (shape (4, 3)), but 'out' has 2 outputs; they
        must match (one target per output).
    """
    per_sample = int(targets[0].numel()) if len(targets) else num_outputs
    if per_sample != num_outputs:
        raise ValueError(f"{owner}: the probe targets have {per_sample} values per sample (shape "
                         f"{tuple(targets.shape)}), but {head!r} has {num_outputs} outputs; they must match (one "
                         "target per output).")
    finite = torch.isfinite(targets.reshape(len(targets), -1)).all(dim=1)
    if not bool(finite.all()):
        raise ValueError(f"{owner}: the probe targets hold NaN or Inf in {int((~finite).sum())} of {len(targets)} "
                         "probe samples; fix probe_data's targets.")
