"""Leading eigenpairs of the feature operator without the full O(p³) eigensolve (SCIENCE.md §1 at large p).

Only the leading eigenfunctions matter for the regime: n_f = min{k : Π̂(k) ≥ ρ} rarely exceeds a few hundred, while
a full float64 ``eigh`` of Σ costs O(p³) (≈35 s at p = 4096 on one CPU thread). This module finds the leading k
eigenpairs of Σ by a float64 block Krylov method (block Lanczos with full re-orthogonalisation and Rayleigh–Ritz,
checked by explicit residuals), grows k until the cumulative utilisation reaches ``cover`` (0.99 by default), and
computes everything else a probe reports from traces, which need no eigenvectors:

- the denominators: E‖f‖² = tr(W Σ Wᵀ) + 2 bᵀ W μ + ‖b‖² for f = WΦ + b with the uncentred Σ = S/N (bias and mean
  given), tr(W Σ Wᵀ) for the centred Σ = S/N − μμᵀ (f − E f; the bias drops out) or the augmented operator on
  [Φ, 1] (the bias is a column of W there); E‖y‖² is passed in;
- the participation ratio (Σλ)² / Σλ² = (tr Σ)² / ‖Σ‖_F².

So Π̂(k), Π*(k) for every k up to the converged count, n_f at ρ ≤ cover, the gap λ_T / λ_{T+1} and the regime are
those of the full solve (tests: 1e-9) whenever the converged count exceeds n_features_99. When that cannot be had —
p small enough that the full solve is cheaper, no convergence within the basis budget, or Π̂ not reaching ``cover``
by ``k_cap`` (e.g. the uncentred operator with a large bias, whose Π̂ never reaches 1) — the full ``eigh`` is run and
the result says so (``fallback``, ``reason``).

On accelerators, whose float64 throughput is 1/32–1/64 of float32, the statistics take each batch's product in
float32 around a shift with float64 sums (``FeatureStatistics(product="auto")``, what the monitor uses);
:class:`~lightning_probes.measures.spectrum.metrics.MomentAccumulator` does the same for plain Σ x xᵀ, with a
compensated float32 reduction where a device has no float64.

Symbols: p features (q = p + 1 for the augmented operator), C outputs, k the leading eigenpairs found, m the Krylov
basis size, b its block size.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from lightning_probes.measures.spectrum.eigen import diagonalise, spectral_gap
from lightning_probes.measures.spectrum.power import features_needed

__all__ = [
    "DIRECT_BELOW",
    "LeadingSpectrum",
    "leading_eigenpairs",
    "leading_spectrum",
]

_F64 = torch.float64
_EPS64 = torch.finfo(_F64).eps

_BASIS_PER_PAIR = 3  # measured: ~3 basis vectors per converged pair (tol 1e-10) on power-law spectra

DIRECT_BELOW = 512
"""Below this p the full ``eigh`` is used directly (measured with ``benchmarks/spectrum_scale.py --crossover``, one
thread, shared machine: for a head carried by ~10 eigenfunctions the Krylov route is 0.6x the speed of the full solve
at p = 256, 1.5x at 384, 2.7x at 512, 5.3x at 768 and 8.6x at 1024; below 512 the full solve costs < 0.2 s anyway).
A head spread over ~p/4 eigenfunctions falls back to the full solve at these p, after a Krylov attempt that costs
about as much again (see the README's performance section for the measured worst case)."""


class LeadingSpectrum(NamedTuple):
    """The leading eigenpairs of Σ and every figure of a spectrum probe that depends on them.

    Attributes:
        eigenvalues: (k,) λ_1 ≥ … ≥ λ_k, all above ``tolerance`` (the numerically non-zero ones).
        eigenvectors: (q, k) orthonormal u_i.
        target_power: (k,) Π*(k) (NaN when E‖y‖² ≤ 0 or no targets were given).
        learned_power: (k,) Π̂(k) (NaN when E‖f‖² ≤ 0).
        n_features: min{k : Π̂(k) ≥ threshold} as :func:`features_needed` gives it on the full spectrum
            (-1 when Π̂ is undefined, 0 when Σ = 0).
        n_features_99: the same at 0.99 (None when ``cover`` < 0.99 and the pairs found stop short of it).
        participation_ratio: (tr Σ)² / ‖Σ‖_F², exact whatever k.
        gap: λ_T / λ_{T+1} at T = ``gap_index`` (as :func:`spectral_gap`).
        regime: 1 (Minimal Feature: 0 < n_features ≤ regime_threshold, and gap ≥ ``min_gap`` if given), else 0.
        trace: tr Σ (the total eigenvalue mass; the tail's mass is ``trace - eigenvalues.sum()``).
        function_energy: E‖f‖² (the denominator of Π̂).
        tolerance: eigenvalues at or below it count as zero (the rule of :func:`diagonalise`).
        complete: every eigenvalue above ``tolerance`` is in ``eigenvalues`` (so ``rank`` is known).
        fallback: the full ``eigh`` was used.
        reason: why (``""`` when the Krylov route gave the answer).
        basis_size: Krylov basis size m at the end (0 on the direct route).
        max_residual: max_i ‖Σ u_i − λ_i u_i‖ / λ_1 over the pairs returned (0 on the direct route).
        tie_at_cut: λ_{n_f} and λ_{n_f+1} agree to 1e-9 relative: Π̂(n_f) then depends on the basis chosen inside
            the tied eigenspace (as it does for the full ``eigh``), so n_features is one valid answer of several.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    target_power: Tensor
    learned_power: Tensor
    n_features: int
    n_features_99: int | None
    participation_ratio: float
    gap: float
    regime: int
    trace: float
    function_energy: float
    tolerance: float
    complete: bool
    fallback: bool
    reason: str
    basis_size: int
    max_residual: float
    tie_at_cut: bool

    @property
    def k(self) -> int:
        return len(self.eigenvalues)

    @property
    def rank(self) -> int | None:
        """The numerical rank, when known (``complete``), else None (it is at least ``k``)."""
        return self.k if self.complete else None


# ------------------------------------------------------------------------------------------------ block Krylov
class _BlockKrylov:
    """An orthonormal basis Q of the block Krylov space of Σ and T = Q Σ Qᵀ, kept as the basis grows.

    Basis vectors are rows, Q (m, p), and Σ is applied as Q_j Σ (= (Σ Q_jᵀ)ᵀ, Σ symmetric): a (b, p) @ (p, p) product
    runs ~2x faster on one CPU thread than (p, p) @ (p, b) (measured with MKL). T is built from the projections of
    every new block on the whole basis (full re-orthogonalisation), so T = Q Σ Qᵀ to rounding. The residual of a Ritz
    vector x = yᵀQ is then yᵀ R with R the rows of Q Σ − T Q, which vanish except for the last block's: that block's
    remainder is what the next block is made of (``pending``), so residual norms cost a (c, b) @ (b, p) product.
    """

    def __init__(self, sigma: Tensor, block: int, max_basis: int, generator: torch.Generator) -> None:
        p = sigma.shape[0]
        # Σ is symmetric, so Σᵀ is as good as Σ: take whichever layout is row-major (no copy for a transposed view)
        self.sigma = (sigma if sigma.is_contiguous() or not sigma.T.is_contiguous() else sigma.T).contiguous()
        self.block, self.max_basis, self.gen = block, max_basis, generator
        self.q = sigma.new_zeros((max_basis, p))  # (m_max, p) basis rows
        self.t = sigma.new_zeros((max_basis, max_basis))  # (m_max, m_max) Q Σ Qᵀ
        self.m = 0
        self.last = 0  # rows in the last block
        self.pending = self._random(block)  # (b, p) the next block: the last block's remainder (one pass done)
        self.scale = self.pending.norm(dim=1)  # (b,) norms of the rows of Q_last Σ the remainder was taken from

    def _random(self, rows: int) -> Tensor:
        return torch.randn(rows, self.sigma.shape[0], generator=self.gen, dtype=_F64).to(self.sigma.device)

    def _orthogonalise(self, w: Tensor) -> Tensor:
        """Remove from w (c, p) its component in span(Q), twice (classical Gram–Schmidt twice: orthogonal to ~eps)."""
        q = self.q[: self.m]
        for _ in range(2):
            w = w - (w @ q.T) @ q
        return w

    @staticmethod
    def _orthonormal_rows(w: Tensor) -> Tensor:
        return torch.linalg.qr(w.T)[0].T.contiguous()  # (c, p)

    def extend(self) -> bool:
        """Append one block (fewer rows if the basis is full); False when it is already full."""
        rows = min(self.block, self.max_basis - self.m)
        if rows <= 0:
            return False
        q = self.q[: self.m]
        w = self.pending[:rows]
        w = w - (w @ q.T) @ q  # the second Gram–Schmidt pass ("twice is enough")
        # a remainder at rounding level means an (almost) invariant subspace: continue with random directions.
        # What is dropped is below 1e-12 of Σ's scale, so the residual formula of `ritz` stays exact to that level.
        lost = w.norm(dim=1) <= 1e-12 * self.scale[:rows].clamp_min(torch.finfo(_F64).tiny)
        if bool(lost.any()):
            w[lost] = self._orthogonalise(self._random(int(lost.sum())))
        qt, r = torch.linalg.qr(w.T)  # (p, c), (c, c)
        qb = qt.T.contiguous()
        diag = r.diagonal().abs()
        if float(diag.min()) < 1e-4 * float(diag.max()):  # nearly dependent rows: QR amplified what was left along Q
            qb = self._orthonormal_rows(self._orthogonalise(qb))
        m, m2 = self.m, self.m + rows
        self.q[m:m2] = qb
        aqb = qb @ self.sigma  # (c, p): the one product with Σ per block
        h = aqb @ self.q[:m2].T  # (c, m2) row block of Q Σ Qᵀ
        self.t[m:m2, :m2] = h
        self.t[:m, m:m2] = h[:, :m].T
        self.t[m:m2, m:m2] = (h[:, m:] + h[:, m:].T) / 2
        self.m, self.last = m2, rows
        self.scale = aqb.norm(dim=1)
        self.pending = aqb - h @ self.q[:m2]  # the remainder: first Gram–Schmidt pass of the next block, from T
        return True

    def ritz(self, count: int) -> tuple[Tensor, Tensor, Tensor]:
        """The leading ``count`` Ritz pairs: values (c,) descending, coordinates y (m, c), residual norms (c,)."""
        theta, y = torch.linalg.eigh(self.t[: self.m, : self.m])
        theta, y = theta.flip(0)[:count], y.flip(1)[:, :count]  # (c,), (m, c)
        resid = (y[self.m - self.last :].T @ self.pending[: self.last]).norm(dim=1)  # ‖Σx − θx‖, x = yᵀQ
        return theta, y, resid

    def vectors(self, y: Tensor) -> Tensor:
        """Ritz vectors (p, c) of coordinates y (m, c)."""
        return (y.T @ self.q[: self.m]).T

    def project(self, x: Tensor) -> Tensor:
        """Q x (m, ...) for x (p, ...): coordinates in which Ritz vectors' inner products are y-linear."""
        return self.q[: self.m] @ x


def leading_eigenpairs(
    sigma: Tensor,
    k: int,
    tol: float = 1e-10,
    block: int = 32,
    max_basis: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor, Tensor, bool]:
    """The k leading eigenpairs of a symmetric PSD Σ by float64 block Krylov (no full eigensolve).

    Args:
        sigma: (p, p) symmetric positive semi-definite matrix.
        k: how many leading eigenpairs (1 ≤ k ≤ p).
        tol: a pair counts as converged when ‖Σu − λu‖ ≤ tol · λ_1.
        block: Krylov block size b (it also bounds the multiplicity of an eigenvalue the method can resolve).
        max_basis: the largest basis m (default min(p, max(4k, k + 8b))).
        seed: seed of the random start block (a private generator: the global RNG is not touched).

    Returns:
        eigenvalues (k,) descending, eigenvectors (p, k), residual norms (k,) relative to λ_1, and whether all k
        converged.

    Example:
        >>> sigma = torch.diag(torch.arange(1.0, 101.0, dtype=torch.float64))
        >>> lam, u, res, ok = leading_eigenpairs(sigma, 3)
        >>> [round(v, 9) for v in lam.tolist()], ok, bool(res.max() < 1e-10)
        ([100.0, 99.0, 98.0], True, True)
    """
    p = _check_square(sigma)
    if not 1 <= k <= p:
        raise ValueError(f"k must be in [1, p = {p}], got {k}.")
    sig = sigma.to(_F64)
    m_max = min(p, max_basis or max(4 * k, k + 8 * block))
    kry = _BlockKrylov(sig, min(block, m_max), m_max, torch.Generator().manual_seed(seed))
    while True:
        grown = kry.extend()
        if kry.m < min(k + block, m_max) and grown:
            continue
        theta, y, resid = kry.ritz(min(k, kry.m))
        top = float(theta[0]) if len(theta) else 0.0
        rel = resid / top if top > 0 else resid
        if (len(theta) == k and bool((rel <= tol).all())) or not grown:
            break
    return theta, kry.vectors(y), rel, len(theta) == k and bool((rel <= tol).all())


# ------------------------------------------------------------------------------------------------ the probe figures
def _check_square(sigma: Tensor) -> int:
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"sigma must be a square (p, p) matrix, got shape {tuple(sigma.shape)}.")
    if not bool(torch.isfinite(sigma).all()):
        raise ValueError("sigma holds NaN or Inf; the spectrum of non-finite features is undefined.")
    return sigma.shape[0]


def _tolerance(top: float, size: int, feature_eps: float) -> float:
    # the rule of measures.spectrum.diagonalise (numerical rank of Φ in its own dtype, never below what a float64
    # eigensolver resolves on Σ); it needs only λ_1, which the Krylov route has
    return max(top, 0.0) * max((size * feature_eps) ** 2, size * _EPS64)


def _energy(sigma: Tensor, weight: Tensor, bias: Tensor | None, mean: Tensor | None) -> float:
    """E‖f‖²: tr(W Σ Wᵀ), plus 2 bᵀWμ + ‖b‖² when the bias acts outside Σ (uncentred operator)."""
    energy = float(((weight @ sigma) * weight).sum())
    if bias is not None and mean is not None:
        energy += float(2 * bias @ (weight @ mean) + bias @ bias)
    return energy


def _powers(
    lam: Tensor, u: Tensor, weight: Tensor, bias: Tensor | None, mean: Tensor | None, cross: Tensor | None,
    target_sq: float, energy: float,
) -> tuple[Tensor, Tensor]:
    """Π̂ and Π* (k,) from the leading pairs: the formulas of measures.spectrum, on k columns instead of r."""
    root = lam.sqrt()  # (k,)
    align = (weight @ u).T * root[:, None]  # (k, C) E[f_c e_i] = W_c u_i √λ_i
    if bias is not None and mean is not None:
        align = align + (u.T @ mean / root)[:, None] * bias[None, :]  # + b_c u_iᵀμ / √λ_i
    nan = torch.full_like(lam, float("nan"))
    learned = torch.cumsum((align * align).sum(1), 0) / energy if energy > 0 else nan
    if cross is None or not target_sq > 0:
        return learned, nan
    a = u.T @ cross / root[:, None]  # (k, C) a_{i,c} = u_iᵀ E[Φ y_c] / √λ_i
    return learned, torch.cumsum((a * a).sum(1), 0) / target_sq


def _crossing(curve: Tensor, level: float) -> int | None:
    """min{k : curve(k) ≥ level} (1-based) if the curve gets there, else None (same slack as features_needed)."""
    hits = (curve >= level - 1e-12).nonzero()
    return int(hits[0]) + 1 if len(hits) else None


def leading_spectrum(
    sigma: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    mean: Tensor | None = None,
    cross: Tensor | None = None,
    target_sq: float = float("nan"),
    *,
    threshold: float = 0.95,
    cover: float = 0.99,
    gap_index: int | None = None,
    regime_threshold: int | None = None,
    min_gap: float | None = None,
    feature_eps: float = torch.finfo(torch.float32).eps,
    size: int | None = None,
    k_start: int = 16,
    k_cap: int = 512,
    tol: float = 1e-10,
    block: int | None = None,
    max_basis: int | None = None,
    direct_below: int = DIRECT_BELOW,
    seed: int = 0,
) -> LeadingSpectrum:
    """Leading eigenpairs of Σ, cumulative powers, n_f, gap and regime, without the full eigensolve when it can.

    k starts at ``k_start`` and doubles (up to ``k_cap``) until the leading converged pairs reach Π̂ ≥ max(cover,
    threshold) with one pair to spare (λ_{n+1}, for ties and the gap) and cover ``gap_index`` + 1. The Krylov basis
    is kept across doublings. Works for the three operators of the spectrum monitor: uncentred Σ = S/N (pass
    ``bias`` and ``mean`` = E[Φ]), centred Σ = S/N − μμᵀ (pass the centred ``cross``/``target_sq``, ``mean=None``:
    the bias drops out), augmented [Φ, 1] (Σ of size p + 1 and the head [W, b] as ``weight``, ``bias=None``).

    Args:
        sigma: (q, q) the operator Σ (float64 preferred).
        weight: (C, q) the head on these features.
        bias: (C,) the head bias acting outside Σ (uncentred operator only), or None.
        mean: (q,) E[Φ] for the uncentred operator, or None.
        cross: (q, C) E[Φ yᵀ] (centred: the cross-covariance), or None (no target power).
        target_sq: E‖y‖² (centred: the target variance).
        threshold: ρ of n_features.
        cover: the Π̂ level the found pairs must reach (n_features_99 is exact when cover ≥ 0.99).
        gap_index: T of the reported gap λ_T / λ_{T+1} (default C).
        regime_threshold: MF when n_features ≤ this (default C).
        min_gap: if set, MF also requires gap ≥ min_gap.
        feature_eps: machine epsilon of the features' dtype (the rank tolerance, as in ``diagonalise``).
        size: max(N, q) of the feature matrix behind Σ (the rank tolerance; default q).
        k_start: the first k tried.
        k_cap: the largest k tried.
        tol: residual tolerance ‖Σu − λu‖ ≤ tol · λ_1 of a converged pair.
        block: Krylov block size b (default min(32, max(8, q/64)): wide blocks run Σ products at BLAS-3 speed,
            narrow ones give a deeper Krylov space for the same basis size, which small q needs).
        max_basis: the largest Krylov basis before falling back (default q/2 from q = 2048, q/3 below, where the
            full eigh is relatively cheaper; and at most 2·k_cap + 4·block).
        direct_below: use the full ``eigh`` when q is below this (:data:`DIRECT_BELOW`, measured).
        seed: seed of the random start block.

    Returns:
        :class:`LeadingSpectrum`.

    Raises:
        ValueError: ``sigma`` is not square or holds NaN/Inf; ``weight``, ``bias``, ``mean`` or ``cross`` has the
            wrong shape; only one of ``bias`` and ``mean`` is given; ``threshold`` or ``cover`` is outside (0, 1];
            not 1 <= ``k_start`` <= ``k_cap``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> scale = torch.arange(1.0, 1001.0, dtype=torch.float64)
        >>> phi = torch.randn(4000, 1000, generator=g, dtype=torch.float64) / scale
        >>> sigma = phi.T @ phi / 4000                                  # (1000, 1000), a decaying spectrum
        >>> w = torch.zeros(10, 1000, dtype=torch.float64)
        >>> w[:, :5] = torch.randn(10, 5, generator=g, dtype=torch.float64)  # a head on the 5 widest directions
        >>> out = leading_spectrum(sigma, w, threshold=0.95)
        >>> out.fallback, out.k < 1000, out.n_features <= out.n_features_99 < out.k
        (False, True, True)
        >>> lam = torch.linalg.eigvalsh(sigma).flip(0)[: out.k]
        >>> bool(torch.allclose(out.eigenvalues, lam, rtol=1e-9, atol=0))
        True
    """
    q = _check_square(sigma)
    w = weight.to(device=sigma.device, dtype=_F64)
    b, mu, cr = (None if t is None else t.to(device=sigma.device, dtype=_F64) for t in (bias, mean, cross))
    _check_head(q, w, b, mu, cr)
    c = w.shape[0]
    for name, value in (("threshold", threshold), ("cover", cover)):
        if not 0 < value <= 1:
            raise ValueError(f"{name} must be in (0, 1], got {value}.")
    if not 1 <= k_start <= k_cap:
        raise ValueError(f"need 1 <= k_start <= k_cap, got k_start={k_start}, k_cap={k_cap}.")
    sig = sigma.to(_F64)
    block = block or min(32, max(8, q // 64))
    t_index = c if gap_index is None else gap_index
    r_threshold = c if regime_threshold is None else regime_threshold
    trace = float(torch.diagonal(sig).sum())
    frob2 = float((sig * sig).sum())
    energy = _energy(sig, w, b, mu)
    size = size or q
    ctx = _Context(w=w, b=b, mu=mu, cr=cr, target_sq=target_sq, energy=energy, threshold=threshold,
                   t_index=t_index, r_threshold=r_threshold, min_gap=min_gap, trace=trace, frob2=frob2, q=q)
    if frob2 == 0.0:  # Σ = 0: no eigenfunction at all
        empty = sig.new_zeros(0)
        return _result(empty, sig.new_zeros((q, 0)), ctx, tol=0.0, complete=True, fallback=False, reason="",
                       basis=0, resid=0.0)
    if q < direct_below:
        return _direct(sig, feature_eps, size, f"q = {q} < direct_below = {direct_below}: the full eigh is cheaper",
                       ctx)
    level = max(cover, threshold)
    need_gap = t_index + 1  # pairs needed for the gap λ_T / λ_{T+1}
    k_want = min(max(k_start, need_gap), k_cap, q - 1)
    # beyond ~q/2 basis vectors (q/3 below q = 2048, where eigh is relatively faster) the full solve is cheaper:
    # measured, one thread: a basis of 0.42q costs 0.45x the full eigh at q = 2048 but 1.4x at q = 1024
    m_max = min(q, max_basis or min(q // 2 if q >= 2048 else q // 3, 2 * k_cap + 4 * block))
    kry = _BlockKrylov(sig, block, m_max, torch.Generator().manual_seed(seed))
    full = False
    while True:
        while kry.m < min(k_want + 2 * block, m_max) and not full:
            full = not kry.extend()
        theta, y, resid = kry.ritz(min(k_want + 1, kry.m))
        top = float(theta[0])
        tolerance = _tolerance(top, size, feature_eps)
        ok = resid <= tol * top  # (c,)
        n_conv = len(ok) if bool(ok.all()) else int(ok.int().argmin())  # the leading converged prefix
        above = int((theta[:n_conv] > tolerance).sum())
        # a converged Ritz value at or below the tolerance after the others: every non-zero eigenvalue was found
        complete = above < n_conv
        hit = None
        if energy > 0 and above:  # Π̂ in Krylov coordinates: W u = (W Qᵀ) y, uᵀμ = (Q μ)ᵀ y, no (p, k) vectors
            learned, _ = _powers(theta[:above], y[:, :above], kry.project(w.T).T, b,
                                 None if mu is None else kry.project(mu), None, float("nan"), energy)
            hit = _crossing(learned, level)
        # Π̂ reached the level with λ_{n+1} known (ties at the cut), and the gap's λ_{T+1} known; or Π̂ undefined
        enough = above >= need_gap and (above > hit if hit is not None else energy <= 0)
        if complete or enough:
            return _result(theta[:above], kry.vectors(y[:, :above]), ctx, tol=tolerance, complete=complete,
                           fallback=False, reason="", basis=kry.m,
                           resid=float(resid[:above].max() / top) if above else 0.0)
        # the leading k_want + 1 are not converged yet: grow the basis by ~m/2 (each check costs an m x m eigh)
        if n_conv <= k_want:
            if full or kry.m >= m_max:
                why = f"the Krylov basis reached its cap m = {kry.m} with {n_conv} of {k_want + 1} pairs converged"
                return _direct(sig, feature_eps, size, why, ctx)
            target = min(m_max, kry.m + max(block, kry.m // 2))
            while kry.m < target and not full:
                full = not kry.extend()
            continue
        if k_want >= min(k_cap, q - 1):
            return _direct(sig, feature_eps, size, f"Π̂ did not reach {level} within k_cap = {k_want} pairs", ctx)
        k_want = min(2 * k_want, k_cap, q - 1)
        if _BASIS_PER_PAIR * k_want + 2 * block > m_max:  # the basis this k needs would not fit: go direct now
            why = f"k = {k_want} pairs would need a Krylov basis beyond its cap m = {m_max}: the full eigh is cheaper"
            return _direct(sig, feature_eps, size, why, ctx)


def _check_head(q: int, w: Tensor, b: Tensor | None, mu: Tensor | None, cr: Tensor | None) -> None:
    """Shapes of the head (C, q), bias (C,) with mean (q,) (both or neither) and cross (q, C); ValueError if not."""
    if w.ndim != 2 or w.shape[1] != q:
        raise ValueError(f"weight must be the (C, {q}) head on these features, got {tuple(w.shape)}.")
    c = w.shape[0]
    if b is None or mu is None:
        if (b is None) != (mu is None):
            raise ValueError("pass bias and mean together (uncentred operator) or neither (centred / augmented).")
    elif tuple(b.shape) != (c,) or tuple(mu.shape) != (q,):
        raise ValueError(f"bias must be ({c},) and mean ({q},), got {tuple(b.shape)} and {tuple(mu.shape)}.")
    if cr is not None and tuple(cr.shape) != (q, c):
        raise ValueError(f"cross must be ({q}, {c}), got {tuple(cr.shape)}.")


class _Context(NamedTuple):
    """What every result of one :func:`leading_spectrum` call is computed with (float64 head and traces)."""

    w: Tensor  # (C, q) the head
    b: Tensor | None  # (C,) the bias outside Σ (uncentred only)
    mu: Tensor | None  # (q,) E[Φ] (uncentred only)
    cr: Tensor | None  # (q, C) E[Φ yᵀ]
    target_sq: float
    energy: float  # E‖f‖²
    threshold: float  # ρ of n_features
    t_index: int  # T of the gap λ_T / λ_{T+1}
    r_threshold: int  # MF when n_features ≤ this
    min_gap: float | None
    trace: float  # tr Σ
    frob2: float  # ‖Σ‖_F²
    q: int


def _direct(sig: Tensor, feature_eps: float, size: int, reason: str, ctx: _Context) -> LeadingSpectrum:
    spec = diagonalise(sig, feature_eps, size=size)
    return _result(spec.nonzero, spec.eigenvectors, ctx, tol=spec.tolerance, complete=True, fallback=True,
                   reason=reason, basis=0, resid=0.0)


def _result(
    lam: Tensor, u: Tensor, ctx: _Context, *, tol: float, complete: bool, fallback: bool, reason: str, basis: int,
    resid: float,
) -> LeadingSpectrum:
    w, b, mu, cr, target_sq, energy, threshold, t_index, r_threshold, min_gap, trace, frob2, q = ctx
    learned, target = _powers(lam, u, w, b, mu, cr, target_sq, energy) if len(lam) else (lam, lam)
    n_f = features_needed(learned, threshold)
    n_99: int | None = features_needed(learned, 0.99)
    if not complete and len(lam) and not bool(torch.isnan(learned).any()) and _crossing(learned, 0.99) is None:
        n_99 = None  # cover < 0.99 and Π̂ stopped short of it: the count at 0.99 lies beyond the pairs found
    # the gap needs λ_{T+1}: known when found, or zero (below tolerance) when every non-zero eigenvalue was found
    known = torch.cat([lam, lam.new_zeros(max(0, min(q, t_index + 1) - len(lam)))]) if complete else lam
    gap_t = spectral_gap(known, t_index, tol)
    minimal = 0 < n_f <= r_threshold and (min_gap is None or gap_t >= min_gap)
    tie = 0 < n_f < len(lam) and float(lam[n_f - 1] - lam[n_f]) <= 1e-9 * float(lam[n_f - 1])
    return LeadingSpectrum(
        eigenvalues=lam, eigenvectors=u, target_power=target, learned_power=learned, n_features=n_f,
        n_features_99=n_99, participation_ratio=trace * trace / frob2 if frob2 > 0 else 0.0, gap=gap_t,
        regime=int(minimal), trace=trace, function_energy=energy, tolerance=tol, complete=complete,
        fallback=fallback, reason=reason, basis_size=basis, max_residual=resid, tie_at_cut=tie,
    )
