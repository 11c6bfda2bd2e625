"""Top-k spectrum route (measures/spectrum/topk.py): equal to the full float64 eigh to 1e-9, and float32 moments.

Every Krylov-route test forces the route with ``direct_below=0`` (the default sends p < 512 to the full eigh) and
compares with the direct formulas of measures/spectrum/ on the full spectrum: eigenvalues (relative to λ_1), Π̂(k)
and Π*(k) for every k the route returns, n_features at 0.95 and 0.99, the gap, the participation ratio, the regime.
"""

import pytest
import torch
from torch.nn import functional as F

from lightning_probes.datasets import load_digits_tensors
from lightning_probes.measures.spectrum import (
    DIRECT_BELOW,
    MomentAccumulator,
    cumulative_learned_power,
    cumulative_target_power,
    diagonalise,
    features_needed,
    leading_eigenpairs,
    leading_spectrum,
    participation_ratio,
    spectral_gap,
)
from lightning_probes.models import MLPClassifier

F64 = torch.float64
TOL = 1e-9


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _operator(phi: torch.Tensor, y: torch.Tensor, num_classes: int, operator: str, weight, bias):
    """(sigma, cross, target_sq, head weight, bias, mean) of one operator from stored features, float64."""
    phi, w, b = phi.to(F64), weight.to(F64), bias.to(F64)
    onehot = F.one_hot(y, num_classes).to(F64)
    n = len(phi)
    mu, y_mean = phi.mean(0), onehot.mean(0)
    if operator == "centred":
        d, e = phi - mu, onehot - y_mean
        return d.T @ d / n, d.T @ e / n, float((e * e).sum() / n), w, None, None
    if operator == "augmented":
        a = torch.cat([phi, phi.new_ones(n, 1)], 1)
        head = torch.cat([w, b[:, None]], 1)
        return a.T @ a / n, a.T @ onehot / n, float((onehot * onehot).sum() / n), head, None, None
    return phi.T @ phi / n, phi.T @ onehot / n, float((onehot * onehot).sum() / n), w, b, mu


def _assert_equals_full(sigma, cross, target_sq, weight, bias, mean, threshold=0.95, **kw):
    """The top-k result against the full eigh and measures.spectrum's formulas; returns the top-k result."""
    kw.setdefault("max_basis", len(sigma) // 2)  # the default cap is q/3 below q = 2048: these tests use small q
    out = leading_spectrum(sigma, weight, bias, mean, cross, target_sq, threshold=threshold, **kw)
    spec = diagonalise(sigma, kw.get("feature_eps", torch.finfo(torch.float32).eps), size=kw.get("size"))
    learned = cumulative_learned_power(spec, weight, bias, mean, sigma)
    target = cumulative_target_power(spec, cross, target_sq)
    k = out.k
    assert 0 < k <= spec.rank
    lam1 = float(spec.eigenvalues[0])
    assert (out.eigenvalues - spec.eigenvalues[:k]).abs().max() <= TOL * lam1
    assert (out.learned_power - learned[:k]).abs().max() <= TOL
    assert (out.target_power - target[:k]).abs().max() <= TOL
    assert out.n_features == features_needed(learned, threshold)
    if kw.get("cover", 0.99) >= 0.99:
        assert out.n_features_99 == features_needed(learned, 0.99)
        assert out.n_features_99 < k or out.complete  # the cut is inside what was found: n_features is exact
    else:
        assert out.n_features_99 in (None, features_needed(learned, 0.99))
    assert out.n_features < k or out.complete
    c = weight.shape[0]
    assert out.gap == pytest.approx(spectral_gap(spec.eigenvalues, c, spec.tolerance), rel=1e-9, nan_ok=True)
    assert out.participation_ratio == pytest.approx(participation_ratio(spec.eigenvalues), rel=1e-9)
    assert out.regime == int(0 < out.n_features <= c)
    assert out.tolerance == pytest.approx(spec.tolerance, rel=1e-9)
    if out.complete:
        assert out.rank == spec.rank
    return out


def _decaying_features(n: int, p: int, seed: int, classes: int = 10, alpha: float = 1.0):
    """(N, p) features: a power-law bulk (λ_i ∝ i^-alpha, randomly rotated) plus class means, labels (N,)."""
    g = _gen(seed)
    rot, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=F64))
    bulk = torch.randn(n, p, generator=g, dtype=F64) * torch.arange(1, p + 1, dtype=F64) ** (-alpha / 2) @ rot.T
    y = torch.randint(0, classes, (n,), generator=g)
    means = torch.randn(classes, p, generator=g, dtype=F64) / p**0.5 * 2
    return bulk + means[y] + 0.3, y, means


# ---------------------------------------------------------------------------------------- equality with the full eigh
@pytest.mark.parametrize("rank", [1, 5, 40])
def test_rank_k_matrix_finds_exactly_the_k_nonzero_pairs(rank):
    g = _gen(rank)
    p, c = 300, 6
    phi = torch.randn(2 * p, rank, generator=g, dtype=F64) @ torch.randn(rank, p, generator=g, dtype=F64)
    y = torch.randint(0, c, (2 * p,), generator=g)
    w = torch.randn(c, p, generator=g, dtype=F64)
    sigma, cross, tsq, w, b, mu = _operator(phi, y, c, "uncentred", w, torch.zeros(c))
    out = _assert_equals_full(sigma, cross, tsq, w, b, mu, direct_below=0, max_basis=p)
    assert not out.fallback and out.complete and out.rank == rank == out.k
    assert out.learned_power[-1] == pytest.approx(1.0, abs=1e-9)  # no bias: f lies in the span


@pytest.mark.parametrize("operator", ["centred", "uncentred", "augmented"])
def test_decaying_random_features_equal_full_eigh(operator):
    p = 400
    phi, y, means = _decaying_features(2 * p, p, seed=1)
    w = means + 0.05 * torch.randn(10, p, generator=_gen(2), dtype=F64)  # a head along the class structure
    bias = 0.1 * torch.randn(10, generator=_gen(3), dtype=F64)
    sigma, cross, tsq, w, b, mu = _operator(phi, y, 10, operator, w, bias)
    out = _assert_equals_full(sigma, cross, tsq, w, b, mu, direct_below=0)
    assert not out.fallback and out.k < len(sigma) // 2
    assert out.max_residual <= 1e-10


def test_wide_head_grows_k_by_doubling_and_stays_exact():
    """A head spread over ~100 eigen-directions: k must double past the start value (16) several times."""
    p = 600
    phi, y, _ = _decaying_features(2 * p, p, seed=4, alpha=0.5)
    sigma, cross, tsq, *_ = _operator(phi, y, 10, "centred", torch.zeros(10, p), torch.zeros(10))
    lam, u = torch.linalg.eigh(sigma)
    lam, u = lam.flip(0), u.flip(1)
    w = torch.randn(10, 100, generator=_gen(5), dtype=F64) / lam[:100].sqrt() @ u[:, :100].T  # equal power each
    w = w + 1e-3 * torch.randn(10, p, generator=_gen(6), dtype=F64)
    out = _assert_equals_full(sigma, cross, tsq, w, None, None, direct_below=0, max_basis=p)
    assert not out.fallback and out.n_features_99 > 64 and out.k > out.n_features_99


def _digits_features(steps: int, hidden: int = 512):
    """Penultimate features of a digits MLP (untrained, or after ``steps`` SGD steps), with its head."""
    torch.manual_seed(0)
    model = MLPClassifier(hidden=(hidden,), num_classes=10)
    x, y = load_digits_tensors()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = _gen(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    captured = []
    handle = model.classifier.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return captured[0], y, model.classifier.weight.detach(), model.classifier.bias.detach()


@pytest.mark.parametrize("steps", [0, 100])
@pytest.mark.parametrize("operator", ["centred", "uncentred"])
def test_digits_mlp_features_equal_full_eigh(steps, operator):
    """A 64-512-10 MLP on all 1797 digits. Measured: untrained n_f (0.95 / 0.99) = 46 / 161 centred, 12 / 49
    uncentred; after 100 SGD steps 5 / 9 and 6 / 9. At init the centred count at 0.99 is a third of p, so that case
    asks for ρ = 0.8, cover 0.9 (the Krylov route then answers; at 0.99 it falls back, tested below)."""
    phi, y, w, b = _digits_features(steps)
    sigma, cross, tsq, w, b, mu = _operator(phi, y, 10, operator, w, b)
    levels = dict(threshold=0.8, cover=0.9) if steps == 0 and operator == "centred" else {}
    out = _assert_equals_full(sigma, cross, tsq, w, b, mu, direct_below=0, feature_eps=torch.finfo(torch.float32).eps,
                              size=len(phi), **levels)
    assert not out.fallback, out.reason
    if steps == 0 and operator == "centred":
        full = _assert_equals_full(sigma, cross, tsq, w, b, mu, direct_below=0, size=len(phi))
        assert full.fallback and full.n_features_99 == 161


# ---------------------------------------------------------------------------------------- fallback and small p
def test_small_p_goes_direct_and_says_why():
    phi, y, means = _decaying_features(300, 100, seed=7)
    sigma, cross, tsq, w, b, mu = _operator(phi, y, 10, "centred", means, torch.zeros(10))
    out = _assert_equals_full(sigma, cross, tsq, w, b, mu)
    assert 100 < DIRECT_BELOW and out.fallback and "cheaper" in out.reason and out.complete


def test_k_cap_reached_falls_back_to_the_full_solve():
    p = 400
    phi, y, _ = _decaying_features(2 * p, p, seed=8, alpha=0.3)
    sigma, cross, tsq, *_ = _operator(phi, y, 10, "centred", torch.zeros(10, p), torch.zeros(10))
    w = torch.randn(10, p, generator=_gen(9), dtype=F64)  # power spread over the whole flat spectrum
    out = _assert_equals_full(sigma, cross, tsq, w, None, None, direct_below=0, k_cap=16)
    assert out.fallback and ("k_cap" in out.reason or "cap" in out.reason)
    assert out.k == diagonalise(sigma).rank  # the fallback returns every non-zero pair


def test_no_convergence_falls_back():
    phi, y, means = _decaying_features(800, 400, seed=10)
    sigma, cross, tsq, w, b, mu = _operator(phi, y, 10, "centred", means, torch.zeros(10))
    out = _assert_equals_full(sigma, cross, tsq, w, b, mu, direct_below=0, tol=0.0)  # tol 0: nothing converges
    assert out.fallback and "converged" in out.reason


# ---------------------------------------------------------------------------------------- degenerate cases
def test_p_smaller_than_the_k_cap():
    g = _gen(11)
    p = 24
    phi = torch.randn(100, p, generator=g, dtype=F64) * torch.linspace(1, 0.1, p, dtype=F64)
    y = torch.randint(0, 3, (100,), generator=g)
    w = torch.randn(3, p, generator=g, dtype=F64)
    sigma, cross, tsq, w, b, mu = _operator(phi, y, 3, "centred", w, torch.zeros(3))
    out = _assert_equals_full(sigma, cross, tsq, w, b, mu, direct_below=0, k_start=16, k_cap=512)
    assert out.k <= p


def test_zero_matrix_gives_no_features():
    out = leading_spectrum(torch.zeros(50, 50, dtype=F64), torch.ones(3, 50, dtype=F64), direct_below=0)
    assert out.k == 0 and out.complete and out.rank == 0 and out.n_features == 0 and out.regime == 0
    assert out.participation_ratio == 0.0 and not out.fallback


def test_zero_function_is_undefined_not_a_crash():
    phi, y, _ = _decaying_features(600, 300, seed=12)
    sigma, cross, tsq, *_ = _operator(phi, y, 10, "centred", torch.zeros(10, 300), torch.zeros(10))
    out = leading_spectrum(sigma, torch.zeros(10, 300, dtype=F64), cross=cross, target_sq=tsq, direct_below=0)
    assert out.n_features == -1 and out.regime == 0 and torch.isnan(out.learned_power).all()  # as features_needed
    spec = diagonalise(sigma)
    assert (out.eigenvalues - spec.eigenvalues[: out.k]).abs().max() <= TOL * float(spec.eigenvalues[0])
    assert out.k >= 11  # the gap λ_C / λ_(C+1) is still reported
    assert out.gap == pytest.approx(spectral_gap(spec.eigenvalues, 10, spec.tolerance), rel=1e-9)


def test_exact_ties_at_the_cut():
    """Eigenvalue 1.0 with multiplicity 4 at positions 3..6 and the cut inside it.

    Guarantee: eigenvalues and Π̂(k) at every k that closes a tied cluster (λ_k > λ_{k+1}) equal the full eigh's;
    inside a cluster Π̂(k) depends on the basis either solver picks, so n_features is one valid answer and
    ``tie_at_cut`` says so. Multiplicities up to the block size (32) are resolved.
    """
    g = _gen(13)
    p = 300
    lam = torch.cat([torch.tensor([4.0, 2.0, 1.0, 1.0, 1.0, 1.0]), 0.2 * 0.97 ** torch.arange(p - 6.0)]).to(F64)
    rot, _ = torch.linalg.qr(torch.randn(p, p, generator=g, dtype=F64))
    sigma = (rot * lam) @ rot.T
    sigma = (sigma + sigma.T) / 2
    # the head puts power 0.3, 0.3 on the first two and 0.4 spread over the tied four
    coef = torch.tensor([0.3, 0.3, 0.1, 0.1, 0.1, 0.1], dtype=F64).sqrt() / lam[:6].sqrt()
    w = (coef * rot[:, :6]).sum(1, keepdim=True).T  # (1, p): E[f e_i]^2 as above
    out = leading_spectrum(sigma, w, threshold=0.95, direct_below=0)
    spec = diagonalise(sigma)
    full = cumulative_learned_power(spec, w, None, None, sigma)
    assert (out.eigenvalues - spec.eigenvalues[: out.k]).abs().max() <= TOL * 4
    for k in (1, 2, 6):  # cluster ends
        assert float(out.learned_power[k - 1]) == pytest.approx(float(full[k - 1]), abs=TOL)
    assert float(out.learned_power[5]) == pytest.approx(1.0, abs=1e-9)
    assert 3 <= out.n_features <= 6 and out.tie_at_cut == (out.n_features < 6)


def test_leading_eigenpairs_known_answer_and_bad_input():
    sigma = torch.diag(torch.linspace(10, 1, 200, dtype=F64))
    lam, u, res, ok = leading_eigenpairs(sigma, 5)
    assert ok and torch.allclose(lam, torch.linspace(10, 1, 200, dtype=F64)[:5], rtol=1e-12, atol=0)
    assert torch.allclose(u.abs(), torch.eye(200, 5, dtype=F64), atol=1e-8)
    with pytest.raises(ValueError, match="k must be"):
        leading_eigenpairs(sigma, 0)
    with pytest.raises(ValueError, match="NaN"):
        leading_spectrum(torch.full((3, 3), float("nan")), torch.ones(1, 3))
    with pytest.raises(ValueError, match="square"):
        leading_spectrum(torch.ones(3, 4), torch.ones(1, 3))
    with pytest.raises(ValueError, match="weight must be"):
        leading_spectrum(torch.eye(3), torch.ones(1, 4))
    with pytest.raises(ValueError, match="bias and mean together"):
        leading_spectrum(torch.eye(3), torch.ones(1, 3), bias=torch.ones(1))
    with pytest.raises(ValueError, match="threshold"):
        leading_spectrum(torch.eye(3), torch.ones(1, 3), threshold=0.0)


# ---------------------------------------------------------------------------------------- float32 moments
def _hard_case(n: int = 100_000, p: int = 256, mean: float = 100.0):
    """N samples with a large common mean (100) and unit-scale fluctuations of decaying variance."""
    g = _gen(14)
    scale = torch.arange(1, p + 1, dtype=torch.float32) ** -0.5
    return mean + torch.randn(n, p, generator=g) * scale + torch.randn(p, generator=g)  # (N, p) float32


def _reference(x: torch.Tensor):
    x64 = x.to(F64)
    s2, s1 = x64.T @ x64, x64.sum(0)
    mu = s1 / len(x)
    return s2, s1, s2 / len(x) - torch.outer(mu, mu)


def test_float32_moments_with_float64_reduction_match_float64():
    """N = 1e5, p = 256, common mean 100: per-batch float32 products, float64 sums.

    Observed (this test's data): with the shift, relative error of Σ x xᵀ ≤ 1e-7 (max-entry, i.e. float32's eps) and
    of the centred covariance ≤ 1e-6 of its largest entry; without the shift the covariance error is ~1e-2 to
    1 (the m²/σ² = 1e4 amplification) — asserted to be at least 100x worse, which is why the shift is the default.
    """
    x = _hard_case()
    s2, s1, cov = _reference(x)
    shifted, plain = MomentAccumulator(256), MomentAccumulator(256, shift=False)
    for batch in x.split(1000):
        shifted.update(batch)
        plain.update(batch)
    m2, m1 = shifted.compute()
    assert shifted.count == plain.count == len(x)
    assert float((m2 - s2).abs().max() / s2.abs().max()) <= 1e-7
    assert float((m1 - s1).abs().max() / s1.abs().max()) <= 1e-7
    err_shift = float((shifted.covariance() - cov).abs().max() / cov.abs().max())
    p2, p1 = plain.compute()
    mu = p1 / len(x)
    err_plain = float((p2 / len(x) - torch.outer(mu, mu) - cov).abs().max() / cov.abs().max())
    assert err_shift <= 1e-6
    assert err_plain >= 100 * err_shift
    # the spectrum of the centred covariance follows: leading eigenvalues to 1e-6 relative
    lam_ref = torch.linalg.eigvalsh(cov).flip(0)[:10]
    lam = torch.linalg.eigvalsh(shifted.covariance()).flip(0)[:10]
    assert float(((lam - lam_ref) / lam_ref).abs().max()) <= 1e-6


def test_kahan32_accumulator_matches_float64_reduction():
    """No float64 on the device at all (``kahan32``): compensated float32 sums stay at float32's eps."""
    x = _hard_case(n=40_000)
    s2, _, cov = _reference(x)
    acc = MomentAccumulator(256, accumulator="kahan32")
    naive = torch.zeros(256, 256)  # uncompensated float32 running sum, for contrast
    c = x[:500].mean(0)
    for batch in x.split(500):
        acc.update(batch)
        d = batch - c
        naive += d.T @ d
    assert acc._sq.dtype == torch.float32
    err = float((acc.covariance() - cov).abs().max() / cov.abs().max())
    assert err <= 1e-6
    m2, _ = acc.compute()
    assert float((m2 - s2).abs().max() / s2.abs().max()) <= 1e-7


def test_moment_accumulator_bad_input():
    with pytest.raises(ValueError, match="accumulator"):
        MomentAccumulator(3, accumulator="float16")
    acc = MomentAccumulator(3)
    with pytest.raises(ValueError, match="shape"):
        acc.update(torch.ones(2, 4))
    with pytest.raises(ValueError, match="no samples"):
        acc.covariance()
