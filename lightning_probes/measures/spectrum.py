"""Diagonalising the forward feature map (Nam, Mingard, Lee, Hayou, Louis 2024, arXiv 2410.04264).

The network is split into a feature map Φ: X → R^p (the input of the final linear layer) and the head
f(x) = W Φ(x) + b. Gradient descent on the head acts through the kernel K(x, x') = Φ(x)·Φ(x'); its
eigenfunctions on the probe distribution are the "features" the network uses, and λ_i is the speed at which
the error along e_i decays. Everything here is computed from fixed-size sufficient statistics (SCIENCE.md §1),
so memory is O(p² + pC) whatever the number of probe samples, and a DDP reduction is a plain sum.

Symbols: N samples, p features, C outputs (classes, or regression outputs), r the numerical rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "FeatureStatistics",
    "NearestMeanAgreement",
    "Spectrum",
    "SpectrumSummary",
    "cumulative_learned_power",
    "cumulative_target_power",
    "diagonalise",
    "features_needed",
    "kernel_diagonalise",
    "nearest_class_mean",
    "neural_collapse",
    "participation_ratio",
    "spectral_gap",
    "summarise",
]

_F64 = torch.float64


class FeatureStatistics(Metric):
    """Streaming sufficient statistics of features Φ and targets y (sum-reduced across batches and ranks).

    One float64 state holds them all: the moment matrix Σ_n z zᵀ of z = [Φ, y, 1] (size p + C + 1), so a batch
    costs a single matrix product. Its blocks are S = Σ Φ Φᵀ (p, p), B = Σ Φ yᵀ (p, C), Σ y yᵀ (C, C),
    s = Σ Φ (p,), Σ y (C,) and N; for one-hot classes Bᵀ holds the class sums Σ_{y=c} Φ (C, p) and the diagonal
    of Σ y yᵀ the class counts n_c. ``nonfinite`` counts samples whose features hold NaN/Inf; their values still
    enter the sums so every rank sees the same (poisoned) result. Memory O((p + C)²), independent of N.

    Args:
        num_features: p, the feature dimension.
        num_outputs: C, the number of classes (integer targets) or regression outputs (float targets).
        classification: integer class targets (one-hot y, class statistics) or real-valued targets.

    Example:
        >>> stats = FeatureStatistics(num_features=3, num_outputs=2)
        >>> stats.update(torch.eye(3)[:2], torch.tensor([0, 1]))
        >>> out = stats.compute()
        >>> int(out.n), out.gram.shape, out.class_counts.tolist()
        (2, torch.Size([3, 3]), [1.0, 1.0])
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, num_features: int, num_outputs: int, classification: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if num_features < 1 or num_outputs < 1:
            raise ValueError(f"num_features and num_outputs must be positive, got {num_features}, {num_outputs}.")
        self.num_features = num_features
        self.num_outputs = num_outputs
        self.classification = classification
        size = num_features + num_outputs + 1
        self.add_state("moments", torch.zeros(size, size, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("nonfinite", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        # the rank tolerance depends on the precision the features were computed in (see `diagonalise`):
        # the coarsest floating dtype seen wins; integer features are exact and use float32's default
        self.feature_eps = 0.0

    def update(self, features: Tensor, targets: Tensor) -> None:
        """Add a batch: features (B, p); targets (B,) class indices, or (B, C) / (B,) real values."""
        if features.ndim != 2 or features.shape[1] != self.num_features:
            raise ValueError(f"features must have shape (B, {self.num_features}), got {tuple(features.shape)}.")
        batch = len(features)
        if features.is_floating_point():
            self.feature_eps = max(self.feature_eps, torch.finfo(features.dtype).eps)
        p, c = self.num_features, self.num_outputs
        z = features.new_empty((batch, p + c + 1), dtype=_F64)  # z = [Φ, y, 1]
        z[:, :p] = features.detach()
        self._write_targets(z[:, p : p + c], targets, batch)
        z[:, -1] = 1.0
        # a sample's features are non-finite iff their sum is: one (B,) reduction instead of a (B, p) mask. (Finite
        # values whose sum overflows float64 would also have overflowing squares, so the moments are lost either way.)
        self.nonfinite.add_((~torch.isfinite(z[:, :p].sum(dim=1))).sum())
        self.moments.addmm_(z.T, z)

    def _write_targets(self, out: Tensor, targets: Tensor, batch: int) -> None:
        if len(targets) != batch:
            raise ValueError(f"got {batch} feature rows but {len(targets)} targets.")
        if self.classification:
            if targets.is_floating_point() or targets.ndim != 1:
                raise ValueError("classification targets must be a 1-D tensor of class indices.")
            low, high = torch.aminmax(targets) if len(targets) else (0, 0)
            if low < 0 or high >= self.num_outputs:
                raise ValueError(f"class indices must lie in [0, {self.num_outputs}); got {int(low)}..{int(high)}.")
            out.zero_().scatter_(1, targets.long().view(-1, 1), 1.0)  # one-hot
            return
        y = targets.detach().reshape(batch, -1)
        if y.shape[1] != self.num_outputs:
            raise ValueError(f"regression targets must have {self.num_outputs} values per sample, got {y.shape[1]}.")
        if y.is_floating_point() and not bool(torch.isfinite(y).all()):
            bad = int((~torch.isfinite(y).all(dim=1)).sum())
            raise ValueError(f"regression targets hold NaN or Inf in {bad} of {batch} samples; fix the probe targets.")
        out.copy_(y)

    def compute(self) -> FeatureStatisticsValue:
        """The summed statistics (synchronised across ranks by torchmetrics), as views of the moment blocks."""
        p, c, m = self.num_features, self.num_outputs, self.moments
        yy = m[p : p + c, p : p + c]  # (C, C) Σ y yᵀ
        cross = m[:p, p : p + c]  # (p, C)
        return FeatureStatisticsValue(
            n=m[-1, -1], nonfinite=self.nonfinite, feature_sum=m[:p, -1], gram=m[:p, :p], cross=cross,
            target_sum=m[p : p + c, -1], target_sq=torch.trace(yy),
            class_counts=torch.diagonal(yy) if self.classification else None,
            class_sums=cross.T if self.classification else None,
            feature_eps=self.feature_eps or torch.finfo(torch.float32).eps,
        )


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
        stats = FeatureStatistics(features.shape[1], num_outputs, classification)
        stats.update(features, targets)
        return stats.compute()


class NearestMeanAgreement(Metric):
    """NC4 counts: how often the network's argmax equals the nearest-class-mean classifier (sum-reduced).

    Example:
        >>> agree = NearestMeanAgreement()
        >>> means = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
        >>> agree.update(torch.tensor([[0.1, 0.0], [0.9, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]), means)
        >>> float(agree.compute())
        0.5
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("agree", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def update(self, features: Tensor, logits: Tensor, class_means: Tensor) -> None:
        """features (B, p), logits (B, C), class_means (C, p) (rows of absent classes are NaN)."""
        nearest = nearest_class_mean(features, class_means)  # (B,)
        self.agree.add_((nearest == logits.argmax(-1)).sum())  # in place: no Module.__setattr__ per batch
        self.total.add_(len(features))

    def compute(self) -> Tensor:
        return self.agree / self.total.clamp_min(1)


def nearest_class_mean(features: Tensor, class_means: Tensor) -> Tensor:
    """Index of the nearest class mean for each row: features (B, p), class_means (C, p) -> (B,).

    Rows of ``class_means`` that are NaN (classes absent from the probe set) are never chosen.
    """
    if features.ndim != 2 or class_means.ndim != 2 or features.shape[1] != class_means.shape[1]:
        raise ValueError(f"features (B, p) and class_means (C, p) must share p, got {tuple(features.shape)} and "
                         f"{tuple(class_means.shape)}.")
    phi = features.to(_F64)
    means = class_means.to(device=phi.device, dtype=_F64)
    # ‖Φ - μ_c‖² = ‖μ_c‖² - 2 Φ·μ_c + const: one matmul instead of a (B, C, p) difference tensor
    dist = (means * means).sum(1) - 2 * phi @ means.T  # (B, C)
    return torch.nan_to_num(dist, nan=float("inf")).argmin(-1)


@dataclass(frozen=True)
class Spectrum:
    """Eigen-decomposition of the feature second-moment Σ, split at the numerical rank r.

    Attributes:
        eigenvalues: (p,) all eigenvalues λ_1 ≥ … ≥ λ_p (clamped at 0).
        eigenvectors: (p, r) the unit eigenvectors u_i with λ_i above the tolerance.
        tolerance: eigenvalues at or below it count as zero.
    """

    eigenvalues: Tensor  # (p,)
    eigenvectors: Tensor  # (p, r)
    tolerance: float

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
    """(Σλ)² / Σλ²: the effective number of eigenvalues (1 for one direction, p for a flat spectrum)."""
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
        weight: (C, p) head weight W; bias: (C,) or None.
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


@dataclass(frozen=True)
class SpectrumSummary:
    """Everything one probe of the spectrum monitor reports (float64 tensors, floats and ints)."""

    spectrum: Spectrum
    target_power: Tensor  # (r,) Π*
    learned_power: Tensor  # (r,) Π̂
    n_features: int
    n_features_99: int
    participation_ratio: float
    gap_at_C: float
    regime: int  # 1 = Minimal Feature, 0 = Extended Feature
    num_outputs: int

    def scalars(self) -> dict[str, float]:
        c = self.num_outputs
        at_c = min(c, self.spectrum.rank)
        pick = lambda curve: float(curve[at_c - 1]) if at_c > 0 else float("nan")  # noqa: E731
        return {
            "n_features": float(self.n_features),
            "n_features_99": float(self.n_features_99),
            "participation_ratio": self.participation_ratio,
            "gap_at_C": self.gap_at_C,
            "regime": float(self.regime),
            "target_power_at_C": pick(self.target_power),
            "learned_power_at_C": pick(self.learned_power),
            "top_eigenvalue": float(self.spectrum.eigenvalues[0]),
            "rank": float(self.spectrum.rank),
        }


def summarise(
    stats: FeatureStatisticsValue,
    weight: Tensor,
    bias: Tensor | None,
    center: bool = False,
    power_threshold: float = 0.95,
    gap: float | None = None,
) -> SpectrumSummary:
    """Diagonalise Σ from the statistics and compute powers, n_f, the gap and the MF/EF regime.

    Args:
        stats: summed statistics of N probe samples.
        weight: (C, p) head weight; bias: (C,) head bias or None.
        center: use Σ = S/N - μμᵀ (fluctuations only) instead of the uncentred S/N.
        power_threshold: ρ in n_f = min{k : Π̂(k) ≥ ρ}.
        gap: if set, MF also requires λ_C / λ_{C+1} ≥ gap.

    Example:
        >>> phi = torch.eye(4).repeat(5, 1)          # 20 samples, 4 orthogonal class prototypes
        >>> y = torch.arange(4).repeat(5)
        >>> stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=4)
        >>> s = summarise(stats, weight=torch.eye(4), bias=torch.zeros(4))
        >>> s.n_features, s.regime, round(float(s.target_power[-1]), 6)
        (4, 1, 1.0)
    """
    n = float(stats.n)
    if n < 1:
        raise ValueError("no probe samples were seen.")
    p = stats.gram.shape[0]
    if weight.ndim != 2 or weight.shape[1] != p:
        raise ValueError(f"weight must be the (C, {p}) head weight of these {p} features, got {tuple(weight.shape)}.")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},) to match weight, got {tuple(bias.shape)}.")
    if not _all_finite(weight) or (bias is not None and not _all_finite(bias)):
        raise FloatingPointError("the head's weight or bias holds NaN or Inf; the learned function's power is "
                                 "undefined; probe skipped.")
    if not 0 < power_threshold <= 1:  # `not`: NaN is refused too
        raise ValueError(f"power_threshold must be in (0, 1], got {power_threshold}.")
    if gap is not None and not gap >= 1:
        raise ValueError(f"gap is a ratio λ_C/λ_(C+1) >= 1, got {gap}.")
    if float(stats.nonfinite) > 0:
        raise FloatingPointError(
            f"features hold NaN or Inf in {int(stats.nonfinite)} of {int(n)} probe samples; probe skipped."
        )
    mean = stats.feature_sum / n  # (p,)
    sigma = stats.gram / n  # (p, p)
    cross = stats.cross / n  # (p, C)
    target_sq = float(stats.target_sq) / n
    if center:
        sigma = sigma - torch.outer(mean, mean)
        y_mean = stats.target_sum / n
        cross = cross - torch.outer(mean, y_mean)
        target_sq = target_sq - float(y_mean @ y_mean)
    spec = diagonalise(sigma, stats.feature_eps, size=max(int(n), len(sigma)))
    if spec.rank == 0:
        raise ValueError("the feature map is identically zero on the probe set (all eigenvalues vanish).")
    target = cumulative_target_power(spec, cross, target_sq) if target_sq > 0 else \
        torch.full((spec.rank,), float("nan"), dtype=_F64)
    learned = cumulative_learned_power(spec, weight, bias, None if center else mean, sigma)
    c = weight.shape[0]
    n_f = features_needed(learned, power_threshold)
    gap_c = spectral_gap(spec.eigenvalues, c, spec.tolerance)
    minimal = 0 < n_f <= c and (gap is None or gap_c >= gap)
    return SpectrumSummary(
        spectrum=spec, target_power=target, learned_power=learned, n_features=n_f,
        n_features_99=features_needed(learned, 0.99), participation_ratio=participation_ratio(spec.eigenvalues),
        gap_at_C=gap_c, regime=int(minimal), num_outputs=c,
    )
