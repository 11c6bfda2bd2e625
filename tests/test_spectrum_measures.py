"""Feature-map spectrum (SCIENCE.md §1): known answers, then streaming == direct formulas."""

import math

import pytest
import torch

from lightning_probes.measures.spectrum import (
    FeatureStatistics,
    FeatureStatisticsValue,
    NearestMeanAgreement,
    diagonalise,
    features_needed,
    kernel_diagonalise,
    neural_collapse,
    participation_ratio,
    spectral_gap,
    summarise,
)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _simplex_etf(num_classes: int, dim: int, seed: int = 0) -> torch.Tensor:
    """(C, dim) centred, equinorm, equiangular class means (cosine -1/(C-1)), randomly rotated into R^dim."""
    etf = torch.eye(num_classes, dtype=F64) - 1.0 / num_classes  # (C, C)
    basis, _ = torch.linalg.qr(torch.randn(dim, num_classes, generator=_gen(seed), dtype=F64))  # (dim, C)
    return etf @ basis.T  # (C, dim)


# ---------------------------------------------------------------- known answers
@pytest.mark.parametrize("k", [1, 3, 7])
def test_rank_k_features_give_exactly_k_nonzero_eigenvalues(k):
    g = _gen(k)
    phi = (torch.randn(300, k, generator=g) @ torch.randn(k, 40, generator=g)).float()  # (N, p) of rank k
    y = torch.randint(0, 5, (300,), generator=g)
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=5)
    spec = diagonalise(stats.gram / stats.n, stats.feature_eps, size=300)
    assert spec.rank == k
    assert (spec.eigenvalues[:k] > 1e-3).all()
    assert spec.eigenvalues[k:].max() < 1e-6 * spec.eigenvalues[0]


def test_simplex_etf_is_collapsed_minimal_feature():
    c, p, per_class = 10, 64, 30
    means = _simplex_etf(c, p)  # (C, p)
    offset = 3.0 * torch.randn(p, generator=_gen(1), dtype=F64)  # a global mean
    y = torch.arange(c).repeat_interleave(per_class)  # (N,)
    phi = (offset + means[y]).float()  # (N, p): every sample sits at its class mean
    weight = means.float() * 2.0  # the head aligned with the class means (self-duality)
    bias = -(weight @ offset.float())
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=c)
    summary = summarise(stats, weight, bias)
    nc = neural_collapse(stats, weight)
    # the centred default: C - 1 centred class directions, threshold C - 1; the first (uncentred) operator: C
    assert summary.regime == 1 and summary.regime_threshold == c - 1 and summary.n_features <= c - 1
    uncentred = summarise(stats, weight, bias, operator="uncentred")
    assert uncentred.regime == 1 and uncentred.regime_threshold == c and uncentred.n_features <= c
    assert nc["nc1"] == pytest.approx(0.0, abs=1e-8)
    assert nc["nc2_equinorm"] == pytest.approx(0.0, abs=1e-6)
    assert nc["nc2_equiangular"] == pytest.approx(0.0, abs=1e-6)
    assert nc["nc2_angle_deviation"] == pytest.approx(0.0, abs=1e-6)
    assert nc["nc3"] == pytest.approx(0.0, abs=1e-10)
    agree = NearestMeanAgreement()
    agree.update(phi, phi.double() @ weight.double().T + bias.double(), nc["class_means"])
    assert float(agree.compute()) == 1.0
    # the C - 1 centred class directions carry all of the centred target (uncentred: C, with the mean)
    assert float(summary.target_power[c - 2]) == pytest.approx(1.0, abs=1e-6)
    assert float(uncentred.target_power[c - 1]) == pytest.approx(1.0, abs=1e-6)


def test_wide_random_features_are_extended_feature():
    g = _gen(3)
    n, p, c = 2000, 200, 10
    phi = torch.randn(n, p, generator=g)
    y = torch.randint(0, c, (n,), generator=g)
    weight = torch.randn(c, p, generator=g)
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=c)
    summary = summarise(stats, weight, torch.zeros(c))
    assert summary.regime == 0
    assert summary.n_features > 5 * c  # power spread over most of the ~flat spectrum
    assert summary.participation_ratio > 0.8 * p


def test_scalar_helpers_known_answers():
    assert participation_ratio(torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert participation_ratio(torch.ones(8)) == pytest.approx(8.0)
    lam = torch.tensor([9.0, 4.0, 2.0, 0.0])
    assert spectral_gap(lam, 1) == pytest.approx(2.25)
    assert spectral_gap(lam, 2) == pytest.approx(2.0)
    assert math.isinf(spectral_gap(lam, 3, tolerance=1e-12))
    assert features_needed(torch.tensor([0.1, 0.5, 0.99, 1.0]), 0.95) == 3
    assert features_needed(torch.tensor([0.1, 0.5, 0.99, 1.0]), 0.999) == 4


# ---------------------------------------------------------------- streaming == direct formulas on stored features
def _direct(phi, y_onehot, weight, bias, center):
    """SCIENCE.md §1 computed literally from stored features: eigenfunctions e_i(x) and expectations over samples."""
    phi, y = phi.to(F64), y_onehot.to(F64)
    f = phi @ weight.to(F64).T + bias.to(F64)  # (N, C)
    if center:
        phi, y, f = phi - phi.mean(0), y - y.mean(0), f - f.mean(0)
    n = len(phi)
    lam, u = torch.linalg.eigh(phi.T @ phi / n)
    lam, u = lam.flip(0), u.flip(1)
    keep = lam > lam[0] * (max(phi.shape) * torch.finfo(torch.float32).eps) ** 2  # the float32 rank tolerance
    lam, u = lam[keep], u[:, keep]
    e = phi @ u / lam.sqrt()  # (N, r) eigenfunctions on the probe set
    assert torch.allclose(e.T @ e / n, torch.eye(len(lam), dtype=F64), atol=1e-8)  # orthonormal
    target = torch.cumsum(((e.T @ y / n) ** 2).sum(1), 0) / (y * y).sum(1).mean()
    learned = torch.cumsum(((e.T @ f / n) ** 2).sum(1), 0) / (f * f).sum(1).mean()
    return lam, target, learned


@pytest.mark.parametrize("center", [False, True])
def test_target_and_learned_power_equal_direct_computation(center):
    g = _gen(5)
    n, p, c = 400, 24, 4
    phi = torch.relu(torch.randn(n, p, generator=g) + 0.5).double()
    y = torch.randint(0, c, (n,), generator=g)
    weight, bias = torch.randn(c, p, generator=g).double(), torch.randn(c, generator=g).double()
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=c)
    summary = summarise(stats, weight, bias, center=center)
    lam, target, learned = _direct(phi, torch.nn.functional.one_hot(y, c), weight, bias, center)
    assert summary.spectrum.rank == len(lam)
    torch.testing.assert_close(summary.spectrum.nonzero, lam, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(summary.target_power, target, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(summary.learned_power, learned, rtol=1e-8, atol=1e-10)
    if center:  # f - E f = W (Φ - μ) lies in the span of the eigenfunctions; the uncentred bias need not
        assert float(summary.learned_power[-1]) == pytest.approx(1.0, abs=1e-9)
    else:
        no_bias = summarise(stats, weight, torch.zeros(c, dtype=F64))
        assert float(no_bias.learned_power[-1]) == pytest.approx(1.0, abs=1e-9)


def test_regression_targets_match_direct_computation():
    g = _gen(6)
    n, p, c = 300, 12, 2
    phi = torch.randn(n, p, generator=g).double()
    y = torch.randn(n, c, generator=g).double()
    weight, bias = torch.randn(c, p, generator=g).double(), torch.randn(c, generator=g).double()
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=c, classification=False)
    assert stats.class_counts is None
    for center in (False, True):  # the default is centred since turn 2; the first definition is an option
        summary = summarise(stats, weight, bias, operator="centred" if center else "uncentred")
        _, target, learned = _direct(phi, y, weight, bias, center=center)
        torch.testing.assert_close(summary.target_power, target, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(summary.learned_power, learned, rtol=1e-8, atol=1e-10)
        assert summary.regime_threshold == c  # regression: C output directions, centred or not


def test_streaming_in_batches_equals_one_batch():
    g = _gen(7)
    phi, y = torch.randn(250, 16, generator=g), torch.randint(0, 3, (250,), generator=g)
    whole = FeatureStatistics(16, 3)
    whole.update(phi, y)
    streamed = FeatureStatistics(16, 3)
    for start in range(0, 250, 37):
        streamed.update(phi[start : start + 37], y[start : start + 37])
    a, b = whole.compute(), streamed.compute()
    for name in ("n", "feature_sum", "gram", "cross", "target_sum", "target_sq", "class_counts", "class_sums"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-9)


def test_kernel_route_equals_feature_route_when_n_is_smaller_than_p():
    g = _gen(8)
    phi = torch.randn(20, 60, generator=g).double()  # N < p
    for center in (False, True):
        small = kernel_diagonalise(phi, center=center)  # N x N
        x = phi - phi.mean(0) if center else phi
        big = diagonalise(x.T @ x / len(x), torch.finfo(F64).eps, size=60)  # p x p
        assert small.rank == big.rank == (19 if center else 20)
        torch.testing.assert_close(small.eigenvalues, big.eigenvalues, rtol=1e-9, atol=1e-10)
        # the same eigenvectors up to sign: |u_i . u'_i| = 1
        overlap = (small.eigenvectors * big.eigenvectors).sum(0).abs()
        torch.testing.assert_close(overlap, torch.ones_like(overlap), rtol=0, atol=1e-8)


def test_neural_collapse_equals_direct_formulas():
    g = _gen(9)
    c, p, n = 4, 6, 200
    y = torch.arange(c).repeat(n // c)
    phi = (torch.randn(c, p, generator=g)[y] + 0.3 * torch.randn(n, p, generator=g)).double()
    weight = torch.randn(c, p, generator=g).double()
    nc = neural_collapse(FeatureStatisticsValue.from_features(phi, y, num_outputs=c), weight)
    mu_g = phi.mean(0)
    mu = torch.stack([phi[y == k].mean(0) for k in range(c)])  # (C, p)
    sw = sum((phi[y == k] - mu[k]).T @ (phi[y == k] - mu[k]) for k in range(c)) / n
    m = mu - mu_g
    sb = m.T @ m / c
    assert nc["nc1"] == pytest.approx(float(torch.trace(sw @ torch.linalg.pinv(sb)) / c), rel=1e-8)
    norms = m.norm(dim=1)
    assert nc["nc2_equinorm"] == pytest.approx(float(norms.std(unbiased=False) / norms.mean()), rel=1e-10)
    cos = [float(m[i] @ m[j] / (norms[i] * norms[j])) for i in range(c) for j in range(c) if i != j]
    cos = torch.tensor(cos, dtype=F64)
    assert nc["nc2_equiangular"] == pytest.approx(float(cos.std(unbiased=False)), rel=1e-8)
    assert nc["nc2_angle_deviation"] == pytest.approx(float((cos + 1 / (c - 1)).abs().mean()), rel=1e-8)
    nc3 = ((weight.T / weight.norm() - m.T / m.norm()) ** 2).sum()
    assert nc["nc3"] == pytest.approx(float(nc3), rel=1e-10)
    # NC4 against a literal nearest-class-mean classifier
    logits = phi @ weight.T
    agree = NearestMeanAgreement()
    agree.update(phi, logits, nc["class_means"])
    nearest = torch.cdist(phi, mu).argmin(1)
    assert float(agree.compute()) == pytest.approx(float((nearest == logits.argmax(1)).double().mean()))


# ---------------------------------------------------------------- bad input
def test_nonfinite_features_are_reported_not_diagonalised():
    phi = torch.randn(10, 4)
    phi[3, 1] = float("nan")
    stats = FeatureStatisticsValue.from_features(phi, torch.arange(10) % 2, num_outputs=2)
    with pytest.raises(FloatingPointError, match="NaN or Inf in 1 of 10"):
        summarise(stats, torch.randn(2, 4), None)


def test_bad_shapes_and_labels_are_explained():
    stats = FeatureStatistics(4, 3)
    with pytest.raises(ValueError, match=r"shape \(B, 4\)"):
        stats.update(torch.randn(5, 5), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        stats.update(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="2 feature rows but 3 targets"):
        stats.update(torch.randn(2, 4), torch.tensor([0, 1, 2]))
    one_class = FeatureStatisticsValue.from_features(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="at least 2 classes"):
        neural_collapse(one_class)
