"""FeatureStatistics with each batch's product in float32 (what accelerators get by default, ``product="auto"``):
the sums stay float64 and the shift by the first batch's mean is undone exactly, so the statistics, the spectrum
and the decisions match the float64 product on data with a large common mean, on one rank and summed over two."""

import pytest
import torch

from lightning_probes.measures.spectrum import FeatureStatistics, summarise

F64 = torch.float64


def _data(n: int = 20_000, p: int = 96, classes: int = 10, mean: float = 100.0, seed: int = 3):
    """Float32 features with a large common mean and unit-scale class structure of decaying variance."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    centres = torch.randn(classes, p, generator=g) * 2.0
    scale = torch.arange(1, p + 1, dtype=torch.float32) ** -0.5
    x = mean + centres[y] + torch.randn(n, p, generator=g) * scale  # (N, p) float32
    head = torch.randn(classes, p, generator=g, dtype=F64) / p**0.5
    return x, y, head


def _stats(x, y, product, batch=1000, centre=None):
    stats = FeatureStatistics(x.shape[1], 10, product=product)
    if centre is not None:
        stats._centre = centre
    for xb, yb in zip(x.split(batch), y.split(batch)):
        stats.update(xb, yb)
    return stats


def _covariance(value):
    mu = value.feature_sum / value.n
    return value.gram / value.n - torch.outer(mu, mu)


def test_the_float32_product_matches_float64_in_the_moments_the_covariance_and_the_spectrum():
    x, y, head = _data()
    exact, fast = _stats(x, y, "float64").compute(), _stats(x, y, "float32").compute()
    assert float(fast.n) == float(exact.n) == len(x)
    assert torch.equal(fast.class_counts, exact.class_counts)  # one-hot products are exact in float32
    gram_err = float((fast.gram - exact.gram).abs().max() / exact.gram.abs().max())
    assert gram_err <= 1e-9  # observed 3e-11: the float32 part carries only the spread around the shift
    cov_ref = _covariance(exact)
    cov_err = float((_covariance(fast) - cov_ref).abs().max() / cov_ref.abs().max())
    assert cov_err <= 1e-6  # observed 9e-8, relative to the spread: no m²/σ² amplification
    a, b = summarise(exact, head, None), summarise(fast, head, None)
    lam_a, lam_b = a.spectrum.eigenvalues[:10], b.spectrum.eigenvalues[:10]
    assert float(((lam_b - lam_a) / lam_a).abs().max()) <= 2e-6  # observed 3e-7
    assert (b.n_features, b.n_features_99, b.regime) == (a.n_features, a.n_features_99, a.regime)
    assert abs(b.participation_ratio - a.participation_ratio) <= 1e-5 * a.participation_ratio


def test_without_the_shift_the_float32_covariance_is_far_worse():
    """The reason for the shift: with c = 0 the float32 rounding of ~mean² entries lands on the covariance."""
    x, y, _ = _data()
    exact = _stats(x, y, "float64").compute()
    shifted = _stats(x, y, "float32").compute()
    unshifted = _stats(x, y, "float32", centre=torch.zeros(x.shape[1] + 11, dtype=F64)).compute()
    cov_ref = _covariance(exact)
    err = [float((_covariance(v) - cov_ref).abs().max() / cov_ref.abs().max()) for v in (shifted, unshifted)]
    assert err[1] >= 100 * err[0], err  # observed 1.2e-4 vs 9e-8


def test_ranks_with_different_shifts_sum_to_the_same_statistics():
    """Under DDP each rank shifts by its own first batch; the shift is undone per batch, so the summed moments
    (what torchmetrics' sum reduction computes) equal the float64 statistics of all samples."""
    x, y, _ = _data(n=8000)
    exact = _stats(x, y, "float64").moments
    rank0, rank1 = _stats(x[::2], y[::2], "float32"), _stats(x[1::2] + 0.0, y[1::2], "float32")
    assert not torch.equal(rank0._centre, rank1._centre)
    total = rank0.moments + rank1.moments
    assert float((total - exact).abs().max() / exact.abs().max()) <= 1e-7


def test_auto_is_the_float64_product_on_the_cpu_and_reset_forgets_the_shift():
    x, y, _ = _data(n=3000)
    auto, exact = _stats(x, y, "auto"), _stats(x, y, "float64")
    assert torch.equal(auto.moments, exact.moments) and auto._centre is None  # bit for bit: the same product
    fast = _stats(x, y, "float32")
    assert fast._centre is not None
    fast.reset()
    assert fast._centre is None and float(fast.moments.abs().sum()) == 0.0
    fast.update(x[:500] - 100.0, y[:500])  # the next probe centres on its own mean
    assert float(fast._centre[:96].abs().max()) < 10.0


def test_an_unknown_product_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="'auto', 'float64' or 'float32'"):
        FeatureStatistics(3, 2, product="float16")
