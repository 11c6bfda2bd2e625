"""The summed feature statistics and the moments of each operator built from them (SCIENCE.md §1).

Symbols: N samples, p features, C outputs; q = p + 1 for the augmented operator, else p.
"""

from __future__ import annotations

from difflib import get_close_matches
from typing import Literal, NamedTuple

import torch
from torch import Tensor

_F64 = torch.float64


class FeatureStatisticsValue(NamedTuple):
    """The sums held by :class:`FeatureStatistics` (float64).

    A NamedTuple rather than a dataclass: torchmetrics passes ``compute()``'s result through ``apply_to_collection``,
    which deep-copies a dataclass (the whole moment matrix, ~0.35 ms a probe) but rebuilds a tuple from its fields.
    """

    n: Tensor  # ()
    nonfinite: Tensor  # ()
    feature_sum: Tensor  # (p,)
    gram: Tensor  # (p, p)
    cross: Tensor  # (p, C)
    target_sum: Tensor  # (C,)
    target_sq: Tensor  # ()
    class_counts: Tensor | None  # (C,)
    class_sums: Tensor | None  # (C, p)
    feature_eps: float = torch.finfo(torch.float32).eps

    @classmethod
    def from_features(cls, features: Tensor, targets: Tensor, num_outputs: int, classification: bool = True):
        """Statistics of one stored batch (for tests and notebooks)."""
        from lightning_probes.measures.spectrum.metrics import FeatureStatistics  # the Metric imports this module

        stats = FeatureStatistics(features.shape[1], num_outputs, classification)
        stats.update(features, targets)
        return stats.compute()



Operator = Literal["centred", "augmented", "uncentred"]
"""The name of an operator the regime is read from (see :data:`OPERATORS`)."""

OPERATORS: tuple[Operator, ...] = ("centred", "augmented", "uncentred")
"""The operators the regime can be read from (SCIENCE.md §1, correction of turn 2):

- ``"centred"`` (default): Σ = S/N - μμᵀ with the centred learned function f - E f and centred targets; the bias
  drops out and the constant function is not a feature. Centred one-hot class means span C - 1 dimensions, so the
  regime threshold is C - 1 for classification (C for regression).
- ``"augmented"``: the head's true operator with its bias, on the features [Φ, 1] and the head [W, b]; the
  constant belongs to the span, threshold C.
- ``"uncentred"``: the first definition, Σ = S/N with f = WΦ + b; the bias enters through E[Φ] only (with
  near-zero-mean features and a large bias Π̂ cannot reach 1), threshold C. Its top eigenfunction is nearly the
  constant at initialisation, so a fresh ReLU network reads MF there (an artefact); kept as an option.
"""

REGIME_BELOW, REGIME_EF, REGIME_MF = -1, 0, 1
REGIME_NAMES = {REGIME_MF: "MF", REGIME_EF: "EF", REGIME_BELOW: "below"}


def check_operator(operator: str) -> Operator:
    """The operator name, or a ValueError that names the close choices.

    Raises:
        ValueError: ``operator`` is not one of :data:`OPERATORS`.
    """
    if operator not in OPERATORS:
        close = get_close_matches(str(operator), OPERATORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"operator must be one of {', '.join(map(repr, OPERATORS))}, got {operator!r}.{hint}")
    return operator  # narrowed to Operator by the membership test


class OperatorMoments(NamedTuple):
    """The moments of the features an operator diagonalises, and the head that acts on them.

    features: ``"centred"``: Φ - μ; ``"augmented"``: [Φ, 1]; ``"uncentred"``: Φ. q = p + 1 for augmented, else p.
    """

    sigma: Tensor  # (q, q) second moment of the operator's features
    cross: Tensor  # (q, C) E[features · yᵀ] (centred: the cross-covariance)
    target_sq: float  # E‖y‖² (centred: the total target variance)
    weight: Tensor  # (C, q) the head on those features ([W, b] for augmented)
    bias: Tensor | None  # (C,) the bias left outside the operator (uncentred only)
    mean: Tensor | None  # (p,) E[Φ] where the bias enters through it (uncentred only)
    centre: Tensor | None  # (p,) the mean subtracted from the features (centred only)


def operator_moments(stats: FeatureStatisticsValue, weight: Tensor, bias: Tensor | None,
                     operator: Operator = "centred") -> OperatorMoments:
    """Moments and head of one operator from the streaming statistics (all float64)."""
    n = float(stats.n)
    mean = stats.feature_sum / n  # (p,)
    sigma = stats.gram / n  # (p, p)
    cross = stats.cross / n  # (p, C)
    target_sq = float(stats.target_sq) / n
    w = weight.to(_F64)
    b = None if bias is None else bias.to(device=w.device, dtype=_F64)
    if operator == "centred":
        y_mean = stats.target_sum / n  # (C,)
        return OperatorMoments(sigma - torch.outer(mean, mean), cross - torch.outer(mean, y_mean),
                               target_sq - float(y_mean @ y_mean), w, None, None, mean)
    if operator == "augmented":
        p = len(mean)
        sig = sigma.new_empty((p + 1, p + 1))  # E[[Φ, 1][Φ, 1]ᵀ]
        sig[:p, :p], sig[:p, p], sig[p, :p], sig[p, p] = sigma, mean, mean, 1.0
        cr = torch.cat([cross, (stats.target_sum / n)[None, :]], 0)  # (p + 1, C)
        wa = torch.cat([w, (b if b is not None else w.new_zeros(len(w)))[:, None]], 1)  # (C, p + 1)
        return OperatorMoments(sig, cr, target_sq, wa, None, None, None)
    return OperatorMoments(sigma, cross, target_sq, w, b, mean, None)
