"""How the target and the learned function spread over the eigenfunctions: cumulative powers Π*(k), Π̂(k),
n_features and the learned function's rank (SCIENCE.md §1).

Symbols: p features, C outputs, r the numerical rank.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_probes.measures.spectrum.eigen import Spectrum

if TYPE_CHECKING:
    from lightning_probes.measures.spectrum.moments import FeatureStatisticsValue

_F64 = torch.float64


def cumulative_target_power(spec: Spectrum, cross_mean: Tensor, target_sq_mean: float) -> Tensor:
    """Π*(k) = Σ_{i≤k} Σ_c a_{i,c}² / E‖y‖², a_{i,c} = u_iᵀ E[Φ y_c] / √λ_i.  Returns (r,).

    Args:
        spec: the spectrum of Σ.
        cross_mean: (p, C) E[Φ yᵀ] (centred: the cross-covariance).
        target_sq_mean: E‖y‖² (centred: the total target variance).
    """
    a = spec.eigenvectors.T @ cross_mean.to(_F64) / spec.nonzero.sqrt()[:, None]  # (r, C)
    return torch.cumsum((a * a).sum(1), 0) / target_sq_mean


def learned_function_alignment(spec: Spectrum, weight: Tensor, bias: Tensor | None, mean: Tensor | None) -> Tensor:
    """E[f_c e_i] = W_c u_i √λ_i + b_c u_iᵀ μ / √λ_i (uncentred; pass ``mean=None`` when centred).  (r, C)."""
    w = weight.to(_F64)  # (C, p)
    root = spec.nonzero.sqrt()  # (r,)
    out = (w @ spec.eigenvectors).T * root[:, None]  # (r, C)
    if bias is not None and mean is not None:
        out = out + (spec.eigenvectors.T @ mean.to(_F64) / root)[:, None] * bias.to(_F64)[None, :]
    return out


def cumulative_learned_power(
    spec: Spectrum, weight: Tensor, bias: Tensor | None, mean: Tensor | None, second_moment: Tensor
) -> Tensor:
    """Π̂(k) = Σ_{i≤k} Σ_c E[f_c e_i]² / E‖f‖² for the head f = WΦ + b.  Returns (r,).

    Args:
        spec: the spectrum of ``second_moment``.
        weight: (C, p) head weight W.
        bias: (C,) head bias b, or None.
        mean: (p,) E[Φ] for the uncentred operator, None for the centred one (the bias then drops out).
        second_moment: (p, p) the Σ that was diagonalised.
    """
    w = weight.to(_F64)
    sigma = second_moment.to(_F64)
    energy = ((w @ sigma) * w).sum()  # tr(W Σ Wᵀ)
    if bias is not None and mean is not None:
        b = bias.to(_F64)
        energy = energy + 2 * b @ (w @ mean.to(_F64)) + b @ b  # E‖WΦ + b‖²
    align = learned_function_alignment(spec, weight, bias, mean)
    if float(energy) <= 0:
        return torch.full((spec.rank,), float("nan"), dtype=_F64, device=sigma.device)
    return torch.cumsum((align * align).sum(1), 0) / energy


def features_needed(cumulative: Tensor, threshold: float) -> int:
    """min{k : Π(k) ≥ ρ} (1-based); the rank r if the curve never gets there (only rounding can cause that).

    Example:
        >>> features_needed(torch.tensor([0.5, 0.96, 1.0]), 0.95)
        2
    """
    if cumulative.numel() == 0 or torch.isnan(cumulative).any():
        return 0 if cumulative.numel() == 0 else -1
    hits = (cumulative >= threshold - 1e-12).nonzero()
    return int(hits[0]) + 1 if len(hits) else len(cumulative)



def function_covariance(stats: FeatureStatisticsValue, weight: Tensor) -> Tensor:
    """Cov(f) = W (S/N - μμᵀ) Wᵀ (C, C): the learned function's covariance over the probe set (its bias is a
    constant and drops out)."""
    n = float(stats.n)
    mean = stats.feature_sum / n
    w = weight.to(_F64)
    wm = w @ mean  # (C,)
    return w @ (stats.gram / n) @ w.T - torch.outer(wm, wm)


def function_rank(second_moment: Tensor, tolerance: float = 1e-6) -> int:
    """How many output directions the learned function uses: eigenvalues of Cov(f) above ``tolerance`` · λ_max.

    A direction below 1e-6 of the top one carries less than a millionth of the function's power (its singular
    value is under 1e-3 of the top one), so a head of rank k reads k even after float32 rounding.

    Example:
        >>> function_rank(torch.diag(torch.tensor([4.0, 1.0, 1e-9], dtype=torch.float64)))
        2
    """
    lam = torch.linalg.eigvalsh((second_moment + second_moment.T) / 2)
    top = float(lam.max()) if lam.numel() else 0.0
    return int((lam > tolerance * top).sum()) if top > 0 else 0
