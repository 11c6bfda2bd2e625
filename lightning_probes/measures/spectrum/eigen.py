"""The spectrum of the feature second moment Σ: float64 eigendecomposition split at the numerical rank, its
participation ratio and gaps.

Symbols: N samples, p features, r the numerical rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_F64 = torch.float64


@dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of the feature second-moment Σ, split at the numerical rank r.

    Attributes:
        eigenvalues: (p,) all eigenvalues λ_1 ≥ … ≥ λ_p (clamped at 0); from the top-k eigensolver, the leading k
            non-zero ones only.
        eigenvectors: (p, r) the unit eigenvectors u_i with λ_i above the tolerance (top-k: (p, k)).
        tolerance: eigenvalues at or below it count as zero.
        complete: every eigenvalue above the tolerance is here, so ``rank`` is the numerical rank (False only from
            the top-k eigensolver, whose ``rank`` is then k, a lower bound).
    """

    eigenvalues: Tensor  # (p,)
    eigenvectors: Tensor  # (p, r)
    tolerance: float
    complete: bool = True

    @property
    def rank(self) -> int:
        return self.eigenvectors.shape[1]

    @property
    def nonzero(self) -> Tensor:  # (r,)
        return self.eigenvalues[: self.rank]


def _all_finite(t: Tensor) -> bool:
    """Whether every entry is finite. A NaN or Inf anywhere makes the sum non-finite, so one reduction settles the
    usual case (elementwise ``isfinite(...).all()`` costs ~15x more on a CPU); only a non-finite sum, which finite
    but huge entries can also give, asks for the elementwise check."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def _rank_tolerance(eigenvalues: Tensor, size: int, feature_eps: float) -> float:
    # The numerical rank of Φ itself, as in matrix_rank: singular values σ_i ≤ max(N, p)·eps·σ_1 are rounding
    # noise of the features' own dtype (float32 ≈ 1e-7, far above float64's). λ = σ²/N, so the eigenvalue
    # tolerance is the square of that relative level times λ_1 — but never below what a float64 eigensolver
    # resolves on Σ itself (size·eps64·λ_1).
    top = float(eigenvalues.max().clamp_min(0)) if eigenvalues.numel() else 0.0
    return top * max((size * feature_eps) ** 2, size * torch.finfo(_F64).eps)


def diagonalise(
    second_moment: Tensor, feature_eps: float = torch.finfo(torch.float32).eps, size: int | None = None
) -> Spectrum:
    """Σ = U Λ Uᵀ in float64, eigenvalues descending, eigenvectors kept up to the numerical rank.

    Args:
        second_moment: (p, p) symmetric Σ (S/N, or S/N - μμᵀ when centred).
        feature_eps: machine epsilon of the features' dtype, which sets the rank tolerance.
        size: max(N, p) of the feature matrix behind Σ (default p), which scales the rank tolerance.

    Raises:
        ValueError: ``second_moment`` is not square, or holds NaN or Inf.

    Example:
        >>> spec = diagonalise(torch.diag(torch.tensor([1.0, 4.0, 0.0])))
        >>> spec.eigenvalues.tolist(), spec.rank
        ([4.0, 1.0, 0.0], 2)
    """
    if second_moment.ndim != 2 or second_moment.shape[0] != second_moment.shape[1]:
        raise ValueError(f"second_moment must be a square (p, p) matrix, got shape {tuple(second_moment.shape)}.")
    if not _all_finite(second_moment):
        raise ValueError("second_moment holds NaN or Inf; the spectrum of non-finite features is undefined.")
    sigma = second_moment.to(_F64)
    evals, evecs = torch.linalg.eigh(sigma)  # ascending; reads one triangle, so no symmetrising copy
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    tol = _rank_tolerance(evals, size or len(evals), feature_eps)
    rank = int((evals > tol).sum())
    return Spectrum(evals, evecs[:, :rank], tol)


def kernel_diagonalise(
    features: Tensor, center: bool = False, feature_eps: float | None = None
) -> Spectrum:
    """The same spectrum from stored features, through the smaller of the N×N kernel and the p×p moment.

    When N < p, K = Φ Φᵀ / N has the non-zero eigenvalues of Σ = Φᵀ Φ / N and u_i = Φᵀ v_i / √(N λ_i).

    Args:
        features: (N, p) features Φ.
        center: subtract the mean feature first (the ``center=True`` operator).
        feature_eps: rank-tolerance epsilon (default: that of ``features.dtype``).

    Raises:
        ValueError: ``features`` is not a non-empty (N, p) matrix, or holds NaN or Inf.

    Example:
        >>> phi = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
        >>> kernel_diagonalise(phi).nonzero.tolist()
        [2.0, 0.5]
    """
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must be a non-empty (N, p) matrix, got shape {tuple(features.shape)}.")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features hold NaN or Inf; the spectrum of non-finite features is undefined.")
    if feature_eps is not None:
        eps = feature_eps
    else:  # integer features are exact: float32's tolerance, as FeatureStatistics uses
        eps = torch.finfo(features.dtype if features.is_floating_point() else torch.float32).eps
    phi = features.to(_F64)  # (N, p)
    if center:
        phi = phi - phi.mean(0)
    n, p = phi.shape
    if n >= p:
        return diagonalise(phi.T @ phi / n, eps, size=n)
    kernel = phi @ phi.T / n  # (N, N)
    evals, evecs = torch.linalg.eigh((kernel + kernel.T) / 2)
    evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
    full = torch.cat([evals, evals.new_zeros(p - n)])  # Σ has p - N extra zero eigenvalues
    tol = _rank_tolerance(full, p, eps)
    rank = int((evals > tol).sum())
    u = phi.T @ evecs[:, :rank] / torch.sqrt(n * evals[:rank])  # (p, r), orthonormal columns
    return Spectrum(full, u, tol)


def participation_ratio(eigenvalues: Tensor) -> float:
    """(Σλ)² / Σλ²: the effective number of eigenvalues (1 for one direction, p for a flat spectrum).

    Raises:
        ValueError: an eigenvalue is negative or not finite.
    """
    lam = eigenvalues.to(_F64)
    if not bool(torch.isfinite(lam).all()) or bool((lam < 0).any()):
        raise ValueError("eigenvalues must be finite and non-negative (those of a covariance), got "
                         f"{eigenvalues.tolist() if eigenvalues.numel() <= 8 else 'NaN, Inf or negative values'}.")
    denom = float((lam * lam).sum())
    return float(lam.sum() ** 2 / denom) if denom > 0 else 0.0


def spectral_gap(eigenvalues: Tensor, index: int, tolerance: float = 0.0) -> float:
    """λ_C / λ_{C+1} with C = ``index`` (1-based); ``inf`` when λ_{C+1} is numerically zero, nan if undefined."""
    if index < 1 or index >= len(eigenvalues):
        return float("nan")
    nxt = float(eigenvalues[index])
    cur = float(eigenvalues[index - 1])
    if nxt <= tolerance:
        return float("inf") if cur > tolerance else float("nan")
    return cur / nxt
