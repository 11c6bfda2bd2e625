"""Neural collapse NC1–NC3 (Papyan, Han, Donoho 2020) from the streaming statistics, and the nearest-class-mean
rule behind NC4.

Symbols: p features, C classes (K present in the probe set).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_probes.measures.spectrum.moments import FeatureStatisticsValue

_F64 = torch.float64


def nearest_class_mean(features: Tensor, class_means: Tensor) -> Tensor:
    """Index of the nearest class mean for each row: features (B, p), class_means (C, p) -> (B,).

    Rows of ``class_means`` that are NaN (classes absent from the probe set) are never chosen.

    Raises:
        ValueError: the two are not matrices with the same p.
    """
    if features.ndim != 2 or class_means.ndim != 2 or features.shape[1] != class_means.shape[1]:
        raise ValueError(f"features (B, p) and class_means (C, p) must share p, got {tuple(features.shape)} and "
                         f"{tuple(class_means.shape)}.")
    phi = features.to(_F64)
    means = class_means.to(device=phi.device, dtype=_F64)
    # ‖Φ - μ_c‖² = ‖μ_c‖² - 2 Φ·μ_c + const: one matmul instead of a (B, C, p) difference tensor
    dist = (means * means).sum(1) - 2 * phi @ means.T  # (B, C)
    return torch.nan_to_num(dist, nan=float("inf")).argmin(-1)




def neural_collapse(
    stats: FeatureStatisticsValue, weight: Tensor | None = None
) -> dict[str, float | Tensor]:
    """Neural-collapse figures (Papyan, Han, Donoho 2020) from the streaming statistics.

    NC1 = Tr(Σ_W Σ_B⁺)/C; NC2 equinorm = std/mean ‖μ_c - μ_G‖; NC2 equiangular = std of the pairwise cosines of
    the centred means, with their mean absolute deviation from -1/(C-1); NC3 = ‖Wᵀ/‖W‖_F - M/‖M‖_F‖_F² with M
    the (p, C) centred means. Classes absent from the probe set are left out (C counts the present ones).

    Returns:
        ``nc1``, ``nc2_equinorm``, ``nc2_equiangular``, ``nc2_angle_deviation``, ``nc3`` (floats; nc3 only
        with ``weight``) and ``class_means`` (C, p) with NaN rows for absent classes.

    Raises:
        ValueError: no class statistics (regression targets), fewer than 2 classes present, or a ``weight`` of
            the wrong shape.
        FloatingPointError: the features hold NaN or Inf.
    """
    if stats.class_counts is None or stats.class_sums is None:
        raise ValueError("neural collapse needs class statistics (classification targets).")
    if float(stats.nonfinite) > 0:
        raise FloatingPointError(
            f"features hold NaN or Inf in {int(stats.nonfinite)} of {int(stats.n)} probe samples; neural collapse "
            "is undefined."
        )
    if weight is not None and (weight.ndim != 2 or tuple(weight.shape) != tuple(stats.class_sums.shape)):
        raise ValueError(f"weight must be the (C, p) = {tuple(stats.class_sums.shape)} head weight, got "
                         f"{tuple(weight.shape)}.")
    counts, sums = stats.class_counts, stats.class_sums  # (C,), (C, p)
    present = counts > 0
    k = int(present.sum())
    class_means = sums / counts[:, None]  # (C, p); NaN rows where a class is absent
    if k < 2:
        raise ValueError(f"neural collapse needs at least 2 classes in the probe set, found {k}.")
    n = stats.n
    mu_c = class_means[present]  # (K, p)
    mu_g = stats.feature_sum / n  # (p,)
    centred = mu_c - mu_g  # (K, p)
    # Σ_B = Mᵀ M / K has rank < K, so Σ_B⁺ = K · Mᵀ (M Mᵀ)⁺² M and Tr(Σ_W Σ_B⁺) = K · Tr((M Mᵀ)⁺² M Σ_W Mᵀ):
    # K x K matrices instead of a p x p pseudo-inverse (tested equal to the direct formula)
    gram_k_pinv = torch.linalg.pinv(centred @ centred.T, hermitian=True)  # (K, K)
    # M Σ_W Mᵀ with Σ_W = S/N - Σ_c n_c μ_c μ_cᵀ / N, without forming the (p, p) Σ_W
    through_means = centred @ mu_c.T  # (K, K)
    projected = (centred @ stats.gram @ centred.T - (through_means * counts[present]) @ through_means.T) / n
    nc1 = float(torch.trace(gram_k_pinv @ gram_k_pinv @ projected))  # = K · Tr(...) / K
    norms = centred.norm(dim=1)  # (K,)
    unit = centred / norms[:, None]
    cos = (unit @ unit.T)[~torch.eye(k, dtype=torch.bool, device=unit.device)]  # (K(K-1),)
    out: dict[str, float | Tensor] = {
        "nc1": nc1,
        "nc2_equinorm": float(norms.std(unbiased=False) / norms.mean()),
        "nc2_equiangular": float(cos.std(unbiased=False)),
        "nc2_angle_deviation": float((cos + 1.0 / (k - 1)).abs().mean()),
        "class_means": class_means,
    }
    if weight is not None:
        w = weight.to(_F64)[present]  # (K, p)
        m = centred.T  # (p, K)
        out["nc3"] = float(((w.T / w.norm()) - m / m.norm()).pow(2).sum())
    return out
