"""How well a formula explains a range: IoU and coverages, mask sizes, label masking, range importance.

La Rosa et al., NeurIPS 2023, Sec. 4 (SCIENCE.md section 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "ExplanationMetrics",
    "MaskStatistics",
    "explanation_metrics",
    "label_masked_inputs",
    "label_masking_score",
    "mask_statistics",
    "prediction_change_rate",
    "zero_range",
]


@dataclass(frozen=True)
class ExplanationMetrics:
    """Quality of a formula F for a unit mask M (La Rosa et al. 2023, Sec. 4); 0 when a denominator is 0.

    Attributes:
        iou: |M ∧ F| / |M ∨ F|.
        detection_accuracy: |M ∧ F| / |F|.
        activation_coverage: |M ∧ F| / |M|.
        sample_coverage: #{x: M ∧ F != ∅} / #{x: F != ∅}.
        explanation_coverage: #{x: M ∧ F != ∅} / #{x: M != ∅}.
    """

    iou: float
    detection_accuracy: float
    activation_coverage: float
    sample_coverage: float
    explanation_coverage: float


def _ratio(num: Tensor, den: Tensor) -> float:
    return float(num) / float(den) if float(den) > 0 else 0.0


def explanation_metrics(unit_mask: Tensor, formula_mask: Tensor) -> ExplanationMetrics:
    """Metrics of SCIENCE.md section 5 for one (unit, range) and its formula.

    Args:
        unit_mask: M, boolean, shape (N, *S) (first axis = samples).
        formula_mask: F, boolean, same shape.

    Returns:
        :class:`ExplanationMetrics`.

    Raises:
        ValueError: the masks differ in shape, have no samples, or are not boolean (or 0/1 integer).

    Example:
        >>> m = torch.tensor([[1, 1, 0], [0, 0, 0]]).bool()
        >>> f = torch.tensor([[1, 0, 0], [1, 0, 0]]).bool()
        >>> explanation_metrics(m, f)
        ExplanationMetrics(iou=0.3333333333333333, detection_accuracy=0.5, activation_coverage=0.5, \
sample_coverage=0.5, explanation_coverage=1.0)
    """
    if unit_mask.shape != formula_mask.shape:
        raise ValueError(f"unit mask {tuple(unit_mask.shape)} and formula mask {tuple(formula_mask.shape)} differ.")
    if unit_mask.ndim == 0 or unit_mask.shape[0] == 0:
        raise ValueError(f"masks must have shape (N, ...) with N >= 1 samples, got {tuple(unit_mask.shape)}.")
    for label, mask in (("unit mask", unit_mask), ("formula mask", formula_mask)):
        _check_binary(mask, label)
    m = unit_mask.reshape(unit_mask.shape[0], -1).bool()  # (N, S)
    f = formula_mask.reshape(formula_mask.shape[0], -1).bool()
    both = m & f
    inter = both.sum()
    overlapping = both.any(dim=1).sum()  # samples where M and F meet
    return ExplanationMetrics(
        iou=_ratio(inter, (m | f).sum()),
        detection_accuracy=_ratio(inter, f.sum()),
        activation_coverage=_ratio(inter, m.sum()),
        sample_coverage=_ratio(overlapping, f.any(dim=1).sum()),
        explanation_coverage=_ratio(overlapping, m.any(dim=1).sum()),
    )


def _check_binary(mask: Tensor, label: str) -> None:
    if mask.dtype != torch.bool and (mask.is_floating_point() or not bool(((mask == 0) | (mask == 1)).all())):
        raise ValueError(f"{label} must be a boolean (or 0/1 integer) tensor, got dtype {mask.dtype}.")


@dataclass(frozen=True)
class MaskStatistics:
    """Sizes of the masks of one (unit, range) and its formula (the paper's mask-size analysis).

    Each is the mean, over the samples where that mask is non-empty, of the share of a sample's positions it
    covers: size(X) = mean_{x: X(x) != ∅} |X(x)| / P, P positions per sample (the reference's ``avg_mask_size``
    and ``avg_overlapping``). NaN when the mask is empty on every sample.

    Attributes:
        unit_mask_size: size(M), M the range's unit mask.
        formula_mask_size: size(F), F the formula's mask.
        overlap_size: size(M ∧ F).
        unit_mask_samples: #{x: M(x) != ∅} / N, the share of samples where the range fires.
    """

    unit_mask_size: float
    formula_mask_size: float
    overlap_size: float
    unit_mask_samples: float


def _mean_size(mask: Tensor) -> float:
    sizes = mask.sum(1, dtype=torch.float64)  # (N,)
    sizes = sizes[sizes > 0]
    return float(sizes.mean() / mask.shape[1]) if sizes.numel() else math.nan


def mask_statistics(unit_mask: Tensor, formula_mask: Tensor) -> MaskStatistics:
    """Mask sizes of a unit mask M and a formula mask F, see :class:`MaskStatistics`.

    Args:
        unit_mask: M, boolean, shape (N, *S).
        formula_mask: F, boolean, same shape.

    Returns:
        :class:`MaskStatistics`.

    Raises:
        ValueError: the masks do not share a shape (N, ...) with N >= 1.

    Example:
        >>> m = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]).bool()
        >>> f = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 1]]).bool()
        >>> mask_statistics(m, f)
        MaskStatistics(unit_mask_size=0.5, formula_mask_size=0.625, overlap_size=0.25, unit_mask_samples=0.5)
    """
    if unit_mask.shape != formula_mask.shape or unit_mask.ndim == 0 or unit_mask.shape[0] == 0:
        raise ValueError(f"masks must share a shape (N, ...) with N >= 1, got {tuple(unit_mask.shape)} and "
                         f"{tuple(formula_mask.shape)}.")
    m = unit_mask.reshape(unit_mask.shape[0], -1).bool()  # (N, P)
    f = formula_mask.reshape(formula_mask.shape[0], -1).bool()
    return MaskStatistics(_mean_size(m), _mean_size(f), _mean_size(m & f), float(m.any(1).double().mean()))


def label_masked_inputs(inputs: Tensor, label_mask: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Inputs with everything outside a label's region perturbed (the paper's label masking).

    x'(p) = x(p) where the label mask L is set, x(p)·ε(p) elsewhere, ε ~ U[0, 1) per input element (as the
    authors' reference code does): the concept's own pixels are intact, the rest is damped by noise. L is
    resized to the input's spatial size by nearest neighbour.

    Args:
        inputs: (N, C, H, W) images (or (N, H, W)).
        label_mask: (N, h, w) boolean region of the label in each sample.
        generator: for the noise (seed it for reproducible figures).

    Returns:
        Tensor of the inputs' shape.

    Raises:
        ValueError: label_mask is not (N, h, w) for the inputs (N, [C,] H, W).

    Example:
        >>> x = torch.ones(1, 1, 2, 2); keep = torch.tensor([[[True, False], [False, False]]])
        >>> out = label_masked_inputs(x, keep, torch.Generator().manual_seed(0))
        >>> out[0, 0, 0, 0].item(), bool((out[0, 0].flatten()[1:] < 1).all())
        (1.0, True)
    """
    if label_mask.ndim != 3 or label_mask.shape[0] != inputs.shape[0] or inputs.ndim not in (3, 4):
        raise ValueError(f"label_mask must be (N, h, w) for inputs (N, [C,] H, W), got {tuple(label_mask.shape)} and "
                         f"{tuple(inputs.shape)}.")
    keep = F.interpolate(label_mask[:, None].float(), size=tuple(inputs.shape[-2:]), mode="nearest")  # (N, 1, H, W)
    if inputs.ndim == 3:
        keep = keep[:, 0]
    noise = torch.rand(inputs.shape, generator=generator, dtype=inputs.dtype if inputs.is_floating_point()
                       else torch.float32).to(inputs.device)
    return inputs * (keep.to(inputs.device) + (1 - keep.to(inputs.device)) * noise)


def label_masking_score(before: Tensor, after: Tensor, low: float, high: float) -> float:
    """How much of a range's activation survives label masking (La Rosa et al. 2023, label masking).

    With b(x) = 1[low <= a(x) <= high] the range's bitmap on the unmasked activations a (closed bounds, as
    everywhere here), the score is the mean over samples of cos(a ⊙ b, a' ⊙ b), a' the activations on the
    label-masked input (:func:`label_masked_inputs`). 1: the range fires the same way on the label alone, so
    the label is what drives it; near 0: the activation came from the context. Samples whose bitmap is empty
    are left out (the reference counts them as 0, which measures how often the range fires, not the label).

    Args:
        before: the unit's activations (N, *S) on the samples that contain the label.
        after: the same on the label-masked samples.
        low: the range's lower bound (closed).
        high: the range's upper bound (closed).

    Returns:
        The score, NaN when no sample has a position in the range.

    Raises:
        ValueError: before and after are not (N, ...) of one shape.

    Example:
        >>> a = torch.tensor([[1.0, 2.0, 0.0]]); round(label_masking_score(a, 2 * a, 1.0, 2.0), 12)
        1.0
    """
    if before.shape != after.shape or before.ndim == 0:
        raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} must be (N, ...) alike.")
    a = before.reshape(before.shape[0], -1).to(torch.float64)
    a2 = after.reshape(after.shape[0], -1).to(torch.float64)
    bitmap = (a >= low) & (a <= high)
    rows = bitmap.any(1)
    if not bool(rows.any()):
        return math.nan
    x, y = (a * bitmap)[rows], (a2 * bitmap)[rows]
    cos = (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-300)
    return float(torch.where(y.norm(dim=1) > 0, cos, torch.zeros_like(cos)).mean())


def zero_range(activations: Tensor, low: float, high: float) -> Tensor:
    """The activations with every value in [low, high] set to 0 (for range importance).

    Example:
        >>> zero_range(torch.tensor([0.5, 1.0, 2.0, 3.0]), 1.0, 2.0).tolist()
        [0.5, 0.0, 0.0, 3.0]
    """
    inside = (activations >= low) & (activations <= high)
    return torch.where(inside, torch.zeros_like(activations), activations)


def prediction_change_rate(logits: Tensor, ablated_logits: Tensor) -> float:
    """Range importance (La Rosa et al. 2023): the share of samples whose predicted class changes when one
    range's activations are zeroed, #{x: argmax f(x) != argmax f_c(x)} / N, f_c the network with the unit's
    values in range c set to 0 (:func:`zero_range`, applied by a forward hook on the concept layer).

    Args:
        logits: (N, C) of the intact network.
        ablated_logits: (N, C) with the range zeroed.

    Raises:
        ValueError: the two are not both (N, C) with N >= 1.

    Example:
        >>> prediction_change_rate(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
        0.5
    """
    if logits.shape != ablated_logits.shape or logits.ndim != 2 or logits.shape[0] == 0:
        raise ValueError(f"logits {tuple(logits.shape)} and ablated_logits {tuple(ablated_logits.shape)} must both be "
                         "(N, C) with N >= 1.")
    return float((logits.argmax(-1) != ablated_logits.argmax(-1)).double().mean())
