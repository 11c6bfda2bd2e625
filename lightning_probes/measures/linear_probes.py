"""Layer linear probes: a linear softmax classifier on frozen layer features.

Cheng et al. 2024 §3 take v^(l) from the log-odds of such a probe on layer-l features of masked inputs; the probe
itself is not specific to interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LinearProbe", "fit_linear_probe"]

_F64 = torch.float64


@dataclass
class LinearProbe:
    """A linear softmax classifier on frozen features: logits = ((f - mean) / scale) W + b.

    Attributes:
        mean: (p,) feature mean. scale: (p,) feature scale. weight: (p, C). bias: (C,). accuracy: on the fit data.
    """

    mean: Tensor
    scale: Tensor
    weight: Tensor
    bias: Tensor
    accuracy: float

    def __call__(self, features: Tensor) -> Tensor:
        """Logits (..., C) of features (..., p)."""
        z = (features.to(self.weight.dtype) - self.mean) / self.scale
        return z @ self.weight + self.bias


def fit_linear_probe(
    features: Tensor, labels: Tensor, num_classes: int, l2: float = 1e-3, max_iter: int = 200
) -> LinearProbe:
    """Fit a softmax linear classifier on frozen layer features by full-batch L-BFGS (float64, deterministic).

    Cheng et al. 2024 §3: the log-odds of this probe on layer-l features of masked inputs define v^(l).
    Features are standardised first (conditioning); a small L2 penalty keeps separable data finite.

    Args:
        features: (N, ...) layer features (flattened to (N, p)).
        labels: (N,) integer classes.
        num_classes: C.
        l2: weight of ½‖W‖² (per sample mean loss).
        max_iter: L-BFGS iterations.

    Returns:
        A :class:`LinearProbe`.

    Raises:
        ValueError: features not (N, ...) with N >= 1 or with NaN/Inf; labels not 1-D integer classes in 0..num_classes
            - 1, or not one per feature row.

    Example:
        >>> f = torch.tensor([[0.0], [1.0], [2.0], [3.0]]); y = torch.tensor([0, 0, 1, 1])
        >>> probe = fit_linear_probe(f, y, 2)
        >>> probe(f).argmax(-1).tolist(), probe.accuracy
        ([0, 0, 1, 1], 1.0)
    """
    if features.shape[0] != labels.shape[0]:
        raise ValueError(f"{features.shape[0]} feature rows for {labels.shape[0]} labels.")
    if labels.dtype.is_floating_point:
        raise ValueError("Layer probes are classifiers: labels must be integer classes.")
    if features.ndim < 2 or features.shape[0] == 0:
        raise ValueError(f"features must have shape (N, ...) with N >= 1 samples, got {tuple(features.shape)}.")
    if features.is_floating_point() and not bool(torch.isfinite(features).all()):
        raise ValueError("features hold NaN or Inf; a linear probe cannot be fitted on them.")
    if labels.ndim != 1 or int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"labels must be 1-D class indices in 0..{num_classes - 1}, got shape {tuple(labels.shape)} "
                         f"and values {int(labels.min())}..{int(labels.max())}.")
    f = features.flatten(1).to(_F64)  # (N, p)
    mean = f.mean(0)
    scale = f.std(0, correction=0).clamp_min(1e-6)
    z = (f - mean) / scale
    weight = torch.zeros(f.shape[1], num_classes, dtype=_F64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=_F64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, line_search_fn="strong_wolfe"
    )
    target = labels.long()

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight + bias, target) + 0.5 * l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    weight, bias = weight.detach(), bias.detach()
    accuracy = float(((z @ weight + bias).argmax(-1) == target).to(_F64).mean())
    return LinearProbe(mean, scale, weight, bias, accuracy)
