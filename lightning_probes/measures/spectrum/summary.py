"""Diagonalising the forward feature map (Nam, Mingard, Lee, Hayou, Louis 2024, arXiv 2410.04264).

The network is split into a feature map Φ: X → R^p (the input of the final linear layer) and the head
f(x) = W Φ(x) + b. Gradient descent on the head acts through the kernel K(x, x') = Φ(x)·Φ(x'); its
eigenfunctions on the probe distribution are the "features" the network uses, and λ_i is the speed at which
the error along e_i decays. Everything here is computed from fixed-size sufficient statistics (SCIENCE.md §1),
so memory is O(p² + pC) whatever the number of probe samples, and a DDP reduction is a plain sum.

Symbols: N samples, p features, C outputs (classes, or regression outputs), r the numerical rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from difflib import get_close_matches
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "OPERATORS",
    "DecisionAgreement",
    "FeatureStatistics",
    "NearestMeanAgreement",
    "Spectrum",
    "SpectrumSummary",
    "cumulative_learned_power",
    "cumulative_target_power",
    "decision_features",
    "diagonalise",
    "features_needed",
    "function_rank",
    "function_covariance",
    "kernel_diagonalise",
    "nearest_class_mean",
    "operator_moments",
    "neural_collapse",
    "participation_ratio",
    "spectral_gap",
    "summarise",
    "truncated_decisions",
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


OPERATORS = ("centred", "augmented", "uncentred")
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


def check_operator(operator: str) -> str:
    """The operator name, or a ValueError that names the close choices."""
    if operator not in OPERATORS:
        close = get_close_matches(str(operator), OPERATORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"operator must be one of {', '.join(map(repr, OPERATORS))}, got {operator!r}.{hint}")
    return operator


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
                     operator: str = "centred") -> OperatorMoments:
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


@dataclass(frozen=True)
class SpectrumSummary:
    """Everything one probe of the spectrum monitor reports (float64 tensors, floats and ints).

    ``regime`` is 1 (MF: n_features ≤ threshold and the function uses at least threshold output directions),
    0 (EF: n_features > threshold), -1 ("below": n_features ≤ threshold but the learned function varies along
    fewer than ``directions_needed`` output directions — C - 1 for classes, whose means span C - 1 dimensions, C for
    regression — so it cannot separate the classes as a collapsed function does: a rank-2 head is not MF) or None
    (undefined: the features are constant on the probe set, e.g. a dead network, or the learned function is
    identically zero). ``regime_threshold`` is C - 1 for the centred operator on classes, else C (the constant
    function is one of the uncentred and augmented operators' eigenfunctions).
    """

    spectrum: Spectrum
    target_power: Tensor  # (r,) Π*
    learned_power: Tensor  # (r,) Π̂
    n_features: int | None
    n_features_99: int | None
    participation_ratio: float
    gap_at_C: float
    regime: int | None
    num_outputs: int
    operator: str = "centred"
    regime_threshold: int = 0
    function_rank: int = 0  # output directions along which f varies (rank of Cov(f), see function_rank)
    directions_needed: int = 0  # C - 1 for classes, C for regression
    alignment: Tensor | None = None  # (r, C) E[f_c e_i] (centred: of f - E f)
    offset: Tensor | None = None  # (C,) E f for the centred operator (what its truncations start from), else 0
    centre: Tensor | None = None  # (p,) μ subtracted from the features (centred operator)
    n_features_decisions: int | None = None  # set by the caller from :class:`DecisionAgreement`
    undefined_reason: str = ""

    @property
    def defined(self) -> bool:
        return self.regime is not None

    @property
    def regime_name(self) -> str:
        return "undefined" if self.regime is None else REGIME_NAMES[self.regime]

    def scalars(self) -> dict[str, float]:
        """The monitorable numbers by name. Undefined figures (NaN) are left out, never logged as NaN."""
        at_c = min(self.regime_threshold or self.num_outputs, self.spectrum.rank)
        pick = lambda curve: float(curve[at_c - 1]) if at_c > 0 and len(curve) >= at_c else float("nan")  # noqa
        out = {
            "n_features": float("nan") if self.n_features is None else float(self.n_features),
            "n_features_99": float("nan") if self.n_features_99 is None else float(self.n_features_99),
            "participation_ratio": self.participation_ratio,
            "gap_at_C": self.gap_at_C,
            "regime": float("nan") if self.regime is None else float(self.regime),
            "target_power_at_C": pick(self.target_power),
            "learned_power_at_C": pick(self.learned_power) if self.defined else float("nan"),
            "top_eigenvalue": float(self.spectrum.eigenvalues[0]) if self.spectrum.eigenvalues.numel() else 0.0,
            "rank": float(self.spectrum.rank),
            "function_rank": float(self.function_rank),
        }
        if self.n_features_decisions is not None:
            out["n_features_decisions"] = float(self.n_features_decisions)
        return {k: v for k, v in out.items() if not math.isnan(v)}


def summarise(
    stats: FeatureStatisticsValue,
    weight: Tensor,
    bias: Tensor | None,
    center: bool | None = None,
    power_threshold: float = 0.95,
    gap: float | None = None,
    operator: str = "centred",
    function_tolerance: float = 1e-6,
) -> SpectrumSummary:
    """Diagonalise the operator from the statistics and compute powers, n_f, the gap and the regime.

    Args:
        stats: summed statistics of N probe samples.
        weight: (C, p) head weight; bias: (C,) head bias or None.
        center: the first API: ``True`` = ``operator="centred"``, ``False`` = ``operator="uncentred"``
            (``None``: use ``operator``).
        power_threshold: ρ in n_f = min{k : Π̂(k) ≥ ρ}.
        gap: if set, MF also requires λ_T / λ_{T+1} ≥ gap (T the regime threshold).
        operator: ``"centred"`` (default), ``"augmented"`` ([Φ, 1] with the head [W, b]) or ``"uncentred"``;
            see :data:`OPERATORS`.
        function_tolerance: relative eigenvalue level of E[f fᵀ] below which an output direction counts as unused
            (:func:`function_rank`).

    Example:
        >>> phi = torch.eye(4).repeat(5, 1)          # 20 samples, 4 orthogonal class prototypes
        >>> y = torch.arange(4).repeat(5)
        >>> stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=4)
        >>> s = summarise(stats, weight=torch.eye(4), bias=torch.zeros(4))
        >>> s.n_features, s.regime_threshold, s.regime_name, round(float(s.target_power[-1]), 6)
        (3, 3, 'MF', 1.0)
        >>> summarise(stats, torch.eye(4), torch.zeros(4), operator="uncentred").regime_threshold
        4
    """
    if center is not None:
        operator = "centred" if center else "uncentred"
    check_operator(operator)
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
    moments = operator_moments(stats, weight, bias, operator)
    size = max(int(n), len(moments.sigma))
    spec = diagonalise(moments.sigma, stats.feature_eps, size=size)
    c = weight.shape[0]
    classification = stats.class_counts is not None
    threshold = c - 1 if operator == "centred" and classification else c
    needed = c - 1 if classification else c
    target = cumulative_target_power(spec, moments.cross, moments.target_sq) if moments.target_sq > 0 \
        and spec.rank else torch.full((spec.rank,), float("nan"), dtype=_F64)
    learned = cumulative_learned_power(spec, moments.weight, moments.bias, moments.mean, moments.sigma) \
        if spec.rank else torch.zeros(0, dtype=_F64)
    align = learned_function_alignment(spec, moments.weight, moments.bias, moments.mean)  # (r, C)
    f_rank = function_rank(function_covariance(stats, weight), function_tolerance)
    gap_c = spectral_gap(spec.eigenvalues, threshold, spec.tolerance)
    why = _undefined_reason(stats, spec, learned)
    if why:
        n_f = n_99 = regime = None
    else:
        n_f, n_99 = features_needed(learned, power_threshold), features_needed(learned, 0.99)
        if n_f > threshold:
            regime = REGIME_EF
        elif f_rank < needed:
            regime = REGIME_BELOW
        else:
            regime = REGIME_MF if gap is None or gap_c >= gap else REGIME_EF
    w, b = weight.to(_F64), None if bias is None else bias.to(_F64)
    offset = w.new_zeros(c)
    if operator == "centred":
        offset = w @ moments.centre + (b if b is not None else 0.0)  # E f
    return SpectrumSummary(
        spectrum=spec, target_power=target, learned_power=learned, n_features=n_f, n_features_99=n_99,
        participation_ratio=participation_ratio(spec.eigenvalues), gap_at_C=gap_c, regime=regime, num_outputs=c,
        operator=operator, regime_threshold=threshold, function_rank=f_rank, directions_needed=needed, alignment=align, offset=offset,
        centre=moments.centre, undefined_reason=why,
    )


def _undefined_reason(stats: FeatureStatisticsValue, spec: Spectrum, learned: Tensor) -> str:
    """Why the regime cannot be read ("" when it can): constant features, or a learned function that vanishes."""
    n = float(stats.n)
    mean = stats.feature_sum / n
    variance = float(torch.diagonal(stats.gram).sum()) / n - float(mean @ mean)  # tr(S/N - μμᵀ)
    scale = float(torch.diagonal(stats.gram).sum()) / n
    size = max(int(n), stats.gram.shape[0])
    if variance <= scale * max((size * stats.feature_eps) ** 2, size * torch.finfo(_F64).eps):
        return "the features are constant on the probe set (a dead network?): no eigenfunction varies"
    if spec.rank == 0:
        return "the operator has no non-zero eigenvalue"
    if learned.numel() == 0 or bool(torch.isnan(learned).any()):
        return "the learned function is identically zero on the probe set"
    return ""


def truncated_decisions(
    features: Tensor, weight: Tensor, bias: Tensor | None, summary: SpectrumSummary, stop_at: float | None = None,
    chunk: int = 1 << 22,
) -> Tensor:
    """For every k, how many samples' argmax the k-eigenfunction truncation of f keeps.  Returns (r,) counts.

    The truncation f_k(x) = offset + Σ_{i≤k} E[f e_i] e_i(x) (offset = E f for the centred operator, 0 otherwise)
    is built for all k at once: with X the operator's features ([Φ, 1], Φ - μ or Φ), E[f e_i] e_i(x) =
    (E[f e_i] / √λ_i) · (X u_i), and a cumulative sum over i gives every f_k. Compared with argmax_c of the
    head's own output WΦ + b. The eigenfunctions are taken in blocks of 16, 16, 32, 64, ... so that with
    ``stop_at`` the work ends with the first block in which some k keeps that share of the decisions (the counts
    then stop there: every k up to the fewest one that qualifies is still counted, so the count is exact).

    Args:
        features: (B, p) features Φ.
        weight: (C, p) head weight; bias: (C,) or None.
        summary: from :func:`summarise` (its spectrum, alignment, offset and centre).
        stop_at: a share of decisions; stop after the first block reaching it (None: all r eigenfunctions).
        chunk: the largest B·k·C block built at once.

    Example:
        >>> phi = torch.eye(3).repeat(4, 1); y = torch.arange(3).repeat(4)
        >>> s = summarise(FeatureStatisticsValue.from_features(phi, y, 3), torch.eye(3), torch.zeros(3))
        >>> kept = truncated_decisions(phi, torch.eye(3), torch.zeros(3), s)
        >>> len(kept), float(kept[-1])  # 2 centred eigenfunctions; all of them give f back, so all 12 decisions
        (2, 12.0)
    """
    spec = summary.spectrum
    phi = features.to(_F64)  # (B, p)
    w = weight.to(device=phi.device, dtype=_F64)
    full = phi @ w.T  # (B, C)
    if bias is not None:
        full = full + bias.to(device=phi.device, dtype=_F64)
    decisions = full.argmax(-1)  # (B,)
    if summary.operator == "centred":
        x = phi - summary.centre.to(phi.device)
    elif summary.operator == "augmented":
        x = torch.cat([phi, phi.new_ones(len(phi), 1)], 1)
    else:
        x = phi
    u = spec.eigenvectors.to(phi.device)  # (q, r)
    coef = summary.alignment.to(phi.device) / spec.nonzero.sqrt().to(phi.device)[:, None]  # (r, C)
    r, c = coef.shape
    running = summary.offset.to(phi.device).expand(len(phi), c).clone()  # (B, C) f_k of the block's start
    counts: list[Tensor] = []
    start, width = 0, 16
    while start < r:
        stop = min(r, start + width)
        kept = phi.new_zeros(stop - start)
        step = max(1, chunk // max(1, (stop - start) * c))
        for lo in range(0, len(phi), step):
            proj = x[lo : lo + step] @ u[:, start:stop]  # (b, k) = √λ_i e_i(x)
            trunc = running[lo : lo + step, None, :] + torch.cumsum(proj[:, :, None] * coef[None, start:stop], 1)
            kept += (trunc.argmax(-1) == decisions[lo : lo + step, None]).sum(0)  # (k,)
            running[lo : lo + step] = trunc[:, -1]
        counts.append(kept)
        if stop_at is not None and bool((kept >= stop_at * len(phi) * (1 - 1e-12)).any()):
            break
        start, width = stop, width if start == 0 else 2 * width
    return torch.cat(counts) if counts else phi.new_zeros(0)


class DecisionAgreement(Metric):
    """Counts of kept argmax decisions per truncation level k (sum-reduced across batches and ranks).

    Args:
        max_k: the largest number of eigenfunctions (p + 1 covers every operator).
    """

    full_state_update = False

    def __init__(self, max_k: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_k = max_k
        self.add_state("kept", torch.zeros(max_k, dtype=_F64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=_F64), dist_reduce_fx="sum")

    def update(self, features: Tensor, weight: Tensor, bias: Tensor | None, summary: SpectrumSummary) -> None:
        kept = truncated_decisions(features, weight, bias, summary)
        self.kept[: len(kept)].add_(kept)
        self.total.add_(len(features))

    def compute(self) -> Tensor:
        """(max_k,) the share of kept decisions for k = 1, 2, ...; entries past the rank are meaningless."""
        return self.kept / self.total.clamp_min(1)


def decision_features(kept_share: Tensor, rank: int, threshold: float = 0.99) -> int:
    """n_features_decisions: the fewest k whose truncated f keeps ``threshold`` of the argmax decisions (≤ r).

    Example:
        >>> decision_features(torch.tensor([0.5, 0.995, 1.0, 0.0]), rank=3)
        2
    """
    return features_needed(kept_share[:rank], threshold)
