"""One probe's summary: diagonalise the operator from the statistics and read powers, n_features, the gap and
the regime (SCIENCE.md §1, correction of turn 2).

Symbols: N samples, p features, C outputs, r the numerical rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lightning_probes.measures.spectrum.eigen import (
    Spectrum,
    _all_finite,
    diagonalise,
    participation_ratio,
    spectral_gap,
)
from lightning_probes.measures.spectrum.moments import (
    REGIME_BELOW,
    REGIME_EF,
    REGIME_MF,
    REGIME_NAMES,
    FeatureStatisticsValue,
    Operator,
    check_operator,
    operator_moments,
)
from lightning_probes.measures.spectrum.power import (
    cumulative_learned_power,
    cumulative_target_power,
    features_needed,
    function_covariance,
    function_rank,
    learned_function_alignment,
)
from lightning_probes.measures.spectrum.topk import leading_spectrum

_F64 = torch.float64

Eigensolver = Literal["auto", "full", "topk"]
"""The name of an eigensolver route of :func:`summarise` (see :data:`EIGENSOLVERS`)."""

EIGENSOLVERS: tuple[Eigensolver, ...] = ("auto", "full", "topk")
TOPK_FROM = 1024
"""``eigensolver="auto"`` takes the top-k route from this many features (q, the operator's size) on: measured with
``benchmarks/spectrum_scale.py`` (one thread), the top-k route is faster than the full eigh from p ≈ 512 when the
head is carried by ~10 eigenfunctions, but a head spread over ~p/4 of them pays a Krylov attempt and then the full
solve below ~1024 (README, performance)."""


def check_eigensolver(eigensolver: str) -> Eigensolver:
    """The eigensolver name, or a ValueError that names the choices.

    Raises:
        ValueError: ``eigensolver`` is not one of :data:`EIGENSOLVERS`.
    """
    if eigensolver not in EIGENSOLVERS:
        raise ValueError(f"eigensolver must be one of {', '.join(map(repr, EIGENSOLVERS))}, got {eigensolver!r}.")
    return eigensolver  # narrowed to Eigensolver by the membership test


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
    operator: Operator = "centred"
    regime_threshold: int = 0
    function_rank: int = 0  # output directions along which f varies (rank of Cov(f), see function_rank)
    directions_needed: int = 0  # C - 1 for classes, C for regression
    alignment: Tensor | None = None  # (r, C) E[f_c e_i] (centred: of f - E f)
    offset: Tensor | None = None  # (C,) E f for the centred operator (what its truncations start from), else 0
    centre: Tensor | None = None  # (p,) μ subtracted from the features (centred operator)
    n_features_decisions: int | None = None  # set by the caller from :class:`DecisionAgreement`
    undefined_reason: str = ""
    eigensolver: Literal["full", "topk"] = "full"  # the route that gave the figures: "full" or "topk" (see summarise)
    fallback_reason: str = ""  # why the top-k route fell back to the full eigh ("" when it did not, or was not used)

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
            # the numerical rank is known only when every non-zero eigenvalue was found (not so from the top-k route)
            "rank": float(self.spectrum.rank) if self.spectrum.complete else float("nan"),
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
    operator: Operator = "centred",
    function_tolerance: float = 1e-6,
    eigensolver: Eigensolver = "full",
) -> SpectrumSummary:
    """Diagonalise the operator from the statistics and compute powers, n_f, the gap and the regime.

    Args:
        stats: summed statistics of N probe samples.
        weight: (C, p) head weight.
        bias: (C,) head bias, or None.
        center: the first API: ``True`` = ``operator="centred"``, ``False`` = ``operator="uncentred"``
            (``None``: use ``operator``).
        power_threshold: ρ in n_f = min{k : Π̂(k) ≥ ρ}.
        gap: if set, MF also requires λ_T / λ_{T+1} ≥ gap (T the regime threshold).
        operator: ``"centred"`` (default), ``"augmented"`` ([Φ, 1] with the head [W, b]) or ``"uncentred"``;
            see :data:`OPERATORS`.
        function_tolerance: relative eigenvalue level of E[f fᵀ] below which an output direction counts as unused
            (:func:`function_rank`).
        eigensolver: ``"full"`` (float64 ``eigh`` of Σ, the default), ``"topk"`` (the leading eigenpairs by block
            Krylov, :func:`~lightning_probes.measures.spectrum.topk.leading_spectrum`: n_features, n_features_99,
            the powers at C, the gap and the regime equal the full solve's whenever the pairs found reach
            n_features_99, which the route makes sure of or falls back to the full solve, saying why in
            ``fallback_reason``) or ``"auto"`` (top-k from q = :data:`TOPK_FROM` features, where it pays).

    Raises:
        ValueError: no probe samples; ``weight`` or ``bias`` of the wrong shape; ``power_threshold`` outside
            (0, 1]; ``gap`` below 1; an unknown ``operator`` or ``eigensolver``.
        FloatingPointError: the head or the features hold NaN or Inf.

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
    check_eigensolver(eigensolver)
    moments = operator_moments(stats, weight, bias, operator)
    size = max(int(n), len(moments.sigma))
    c = weight.shape[0]
    classification = stats.class_counts is not None
    threshold = c - 1 if operator == "centred" and classification else c
    needed = c - 1 if classification else c
    wants_topk = eigensolver == "topk" or (eigensolver == "auto" and len(moments.sigma) >= TOPK_FROM)
    route: Literal["full", "topk"] = "topk" if wants_topk else "full"
    fallback = ""
    if route == "full":
        spec = diagonalise(moments.sigma, stats.feature_eps, size=size)
        target = cumulative_target_power(spec, moments.cross, moments.target_sq) if moments.target_sq > 0 \
            and spec.rank else torch.full((spec.rank,), float("nan"), dtype=_F64)
        learned = cumulative_learned_power(spec, moments.weight, moments.bias, moments.mean, moments.sigma) \
            if spec.rank else torch.zeros(0, dtype=_F64)
        gap_c = spectral_gap(spec.eigenvalues, threshold, spec.tolerance)
        ratio = participation_ratio(spec.eigenvalues)
    else:  # the same figures from the leading pairs and the traces (tested equal to the full route to 1e-9)
        mean = moments.mean if moments.bias is not None else None  # without a bias, E[Φ] does not enter
        lead = leading_spectrum(moments.sigma, moments.weight, moments.bias, mean, moments.cross,
                                moments.target_sq, threshold=power_threshold, gap_index=threshold,
                                regime_threshold=threshold, min_gap=gap, feature_eps=stats.feature_eps, size=size,
                                direct_below=0)
        spec = Spectrum(lead.eigenvalues, lead.eigenvectors, lead.tolerance, complete=lead.complete)
        target, learned, gap_c, ratio = lead.target_power, lead.learned_power, lead.gap, lead.participation_ratio
        fallback = lead.reason if lead.fallback else ""
    align = learned_function_alignment(spec, moments.weight, moments.bias, moments.mean)  # (r, C)
    f_rank = function_rank(function_covariance(stats, weight), function_tolerance)
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
    if moments.centre is not None:  # the centred operator
        offset = w @ moments.centre + (b if b is not None else 0.0)  # E f
    return SpectrumSummary(
        spectrum=spec, target_power=target, learned_power=learned, n_features=n_f, n_features_99=n_99,
        participation_ratio=ratio, gap_at_C=gap_c, regime=regime, num_outputs=c, operator=operator,
        regime_threshold=threshold, function_rank=f_rank, directions_needed=needed, alignment=align, offset=offset,
        centre=moments.centre, undefined_reason=why, eigensolver=route, fallback_reason=fallback,
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
