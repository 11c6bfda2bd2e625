"""The faithful regime (SCIENCE.md §1, correction of turn 2): the centred operator against C - 1, the three states,
the decision-based count, the bias case and an undefined regime — each figure against a direct float64
computation on stored features."""

import math

import pytest
import torch
from helpers import fit_digits, read_events

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.measures.spectrum import (
    OPERATORS,
    DecisionAgreement,
    FeatureStatisticsValue,
    decision_features,
    summarise,
    truncated_decisions,
)
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every
from lightning_probes.triggers import StopOnRegime

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _operator_features(phi, weight, bias, operator):
    """(X, head on X, what f is compared with) as the operator sees them, computed literally from stored Φ."""
    phi, w, b = phi.to(F64), weight.to(F64), bias.to(F64)
    f = phi @ w.T + b  # (N, C) the head's output
    if operator == "centred":
        return phi - phi.mean(0), f - f.mean(0), f.mean(0)
    if operator == "augmented":
        return torch.cat([phi, torch.ones(len(phi), 1, dtype=F64)], 1), f, torch.zeros(len(w), dtype=F64)
    return phi, f, torch.zeros(len(w), dtype=F64)


def _direct(phi, y_onehot, weight, bias, operator, rho=0.95):
    """Every figure of the regime from its definition: eigenfunctions on the probe set, expectations as means."""
    x, f, offset = _operator_features(phi, weight, bias, operator)
    y = y_onehot.to(F64)
    if operator == "centred":
        y = y - y.mean(0)
    n = len(x)
    lam, u = torch.linalg.eigh(x.T @ x / n)
    lam, u = lam.flip(0), u.flip(1)
    keep = lam > lam[0] * max((max(x.shape) * torch.finfo(torch.float32).eps) ** 2, max(x.shape) * 2.3e-16)
    lam, u = lam[keep], u[:, keep]
    e = x @ u / lam.sqrt()  # (N, r) eigenfunctions, orthonormal on the probe set
    target = torch.cumsum(((e.T @ y / n) ** 2).sum(1), 0) / (y * y).sum(1).mean()
    coef = e.T @ f / n  # (r, C) E[f_c e_i]
    learned = torch.cumsum((coef**2).sum(1), 0) / (f * f).sum(1).mean()
    decisions = (phi.to(F64) @ weight.to(F64).T + bias.to(F64)).argmax(1)
    kept = []
    for k in range(1, len(lam) + 1):  # the k-eigenfunction truncation of f, one k at a time
        f_k = offset + e[:, :k] @ coef[:k]
        kept.append(float((f_k.argmax(1) == decisions).to(F64).mean()))
    n_dec = next((k for k, share in enumerate(kept, 1) if share >= 0.99), len(kept))  # r if never
    n_f = int((learned >= rho - 1e-12).nonzero()[0]) + 1
    logits = phi.to(F64) @ weight.to(F64).T
    cov = torch.cov(logits.T, correction=0)  # (C, C) Cov(f)
    ev = torch.linalg.eigvalsh(cov)
    return dict(lam=lam, target=target, learned=learned, n_features=n_f, kept=torch.tensor(kept, dtype=F64),
                n_features_decisions=n_dec, function_rank=int((ev > 1e-6 * ev.max()).sum()))


def _summary_with_decisions(phi, y, weight, bias, c, operator):
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=c)
    summary = summarise(stats, weight, bias, operator=operator)
    agree = DecisionAgreement(phi.shape[1] + 1)
    for chunk in phi.split(37):  # streamed in batches, as the monitor does
        agree.update(chunk, weight, bias, summary)
    share = agree.compute()
    return summary, share, decision_features(share, summary.spectrum.rank)


@pytest.mark.parametrize("operator", OPERATORS)
def test_every_new_figure_equals_the_direct_computation_on_stored_features(operator):
    g = _gen(11)
    n, p, c = 240, 16, 5
    phi = torch.relu(torch.randn(n, p, generator=g) + 0.3)  # float32, a non-zero mean as ReLU features have
    y = torch.randint(0, c, (n,), generator=g)
    weight, bias = torch.randn(c, p, generator=g), 2.0 * torch.randn(c, generator=g)
    summary, share, n_dec = _summary_with_decisions(phi, y, weight, bias, c, operator)
    direct = _direct(phi, torch.nn.functional.one_hot(y, c), weight, bias, operator)
    r = summary.spectrum.rank
    assert r == len(direct["lam"])
    torch.testing.assert_close(summary.spectrum.nonzero, direct["lam"], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(summary.target_power, direct["target"], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(summary.learned_power, direct["learned"], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(share[:r], direct["kept"], rtol=0, atol=1e-12)
    assert n_dec == direct["n_features_decisions"]
    # stopping at the first block of eigenfunctions that reaches 99% gives the same count (the monitor's path)
    early = truncated_decisions(phi, weight, bias, summary, stop_at=0.99)
    assert decision_features(early / n, len(early), 0.99) == n_dec
    torch.testing.assert_close(early / n, direct["kept"][: len(early)], rtol=0, atol=1e-12)
    assert summary.n_features == direct["n_features"]
    assert summary.function_rank == direct["function_rank"] == c
    assert summary.regime_threshold == (c - 1 if operator == "centred" else c)


def test_decisions_of_a_two_direction_function_need_two_eigenfunctions():
    # Φ spans 6 directions; the head reads only the first two, whose variances are the largest: truncating after
    # the second eigenfunction keeps every decision, after the first it cannot (classes differ along both)
    g = _gen(2)
    scales = torch.tensor([5.0, 4.0, 1.0, 0.9, 0.8, 0.7], dtype=F64)
    phi = torch.randn(600, 6, generator=g, dtype=F64) * scales
    weight = torch.zeros(4, 6, dtype=F64)
    weight[:, :2] = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    y = (phi[:, :2] @ weight[:, :2].T).argmax(1)
    summary, share, n_dec = _summary_with_decisions(phi, y, weight, torch.zeros(4, dtype=F64), 4, "centred")
    assert n_dec == 2 and float(share[1]) >= 0.99 and float(share[0]) < 0.9
    assert summary.function_rank == 2 and summary.regime_name == "below"  # 2 < C - 1 = 3 directions


def _digits_features(model, x):
    seen = {}
    handle = model.classifier.register_forward_pre_hook(lambda m, a: seen.__setitem__("phi", a[0]))
    with torch.no_grad():
        model(x)
    handle.remove()
    return seen["phi"]


@pytest.fixture(scope="module")
def digits():
    data = DigitsDataModule()
    data.setup()
    return data.train_set.tensors, data.val_set.tensors


def test_a_fresh_digits_mlp_reads_ef_on_ten_seeds_and_the_uncentred_operator_mf(digits):
    _, (x, y) = digits
    first = []
    for seed in range(10):
        torch.manual_seed(seed)
        model = MLPClassifier(hidden=(256, 256))
        phi = _digits_features(model, x)
        stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=10)
        w, b = model.classifier.weight.detach(), model.classifier.bias.detach()
        centred = summarise(stats, w, b)
        assert centred.regime_name == "EF" and centred.n_features > 30, (seed, centred.n_features)
        first.append(summarise(stats, w, b, operator="uncentred").regime_name)
    # the first definition: the near-constant top eigenfunction carries the ReLU offset, so init reads MF
    # (measured: 8 of these 10 seeds)
    assert first.count("MF") >= 7, first


def _train(model, xs, ys, steps, seed=0):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = _gen(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xs), (64,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def trained(digits):
    (xt, yt), (x, y) = digits
    torch.manual_seed(0)
    model = _train(MLPClassifier(hidden=(256, 256)), xt, yt, steps=300)
    return model, _digits_features(model, x), y


def test_a_trained_digits_mlp_reads_mf_and_its_rank_two_head_does_not(trained):
    model, phi, y = trained
    w, b = model.classifier.weight.detach(), model.classifier.bias.detach()
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=10)
    summary = summarise(stats, w, b)
    accuracy = float(((phi @ w.T + b).argmax(1) == y).float().mean())
    assert accuracy > 0.85 and summary.regime_name == "MF" and summary.n_features <= 9
    assert summary.function_rank >= 9
    # the best rank-2 approximation of the same head: few features, but only 2 output directions — "below"
    u, s, vh = torch.linalg.svd(w)
    w2 = (u[:, :2] * s[:2]) @ vh[:2]
    rank2 = float(((phi @ w2.T + b).argmax(1) == y).float().mean())
    for operator in OPERATORS:
        low = summarise(stats, w2, b, operator=operator)
        assert low.n_features <= low.regime_threshold and low.function_rank == 2
        assert low.regime_name == "below", operator
    assert rank2 < 0.6  # the under-using head is a worse classifier, which MF must not hide


def test_a_large_bias_on_zero_mean_features_does_not_stall_the_centred_or_augmented_power():
    g = _gen(4)
    n, p, c = 500, 12, 3
    phi = torch.randn(n, p, generator=g, dtype=F64)
    phi = phi - phi.mean(0)  # zero-mean features
    y = torch.randint(0, c, (n,), generator=g)
    weight, bias = 0.1 * torch.randn(c, p, generator=g, dtype=F64), torch.tensor([5.0, -4.0, 3.0], dtype=F64)
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=c)
    stalled = summarise(stats, weight, bias, operator="uncentred")
    assert float(stalled.learned_power[-1]) < 0.1  # b lies outside the span of Φ's eigenfunctions
    for operator in ("centred", "augmented"):
        s = summarise(stats, weight, bias, operator=operator)
        assert float(s.learned_power[-1]) == pytest.approx(1.0, abs=1e-9), operator
        direct = _direct(phi, torch.nn.functional.one_hot(y, c), weight, bias, operator)
        torch.testing.assert_close(s.learned_power, direct["learned"], rtol=1e-8, atol=1e-10)


def test_constant_features_leave_the_regime_undefined_with_no_nan_figure():
    phi = torch.full((40, 6), 0.7)  # a dead network: the same features for every input
    y = torch.arange(4).repeat(10)
    stats = FeatureStatisticsValue.from_features(phi, y, num_outputs=4)
    for operator in OPERATORS:
        s = summarise(stats, torch.randn(4, 6, generator=_gen(0)), torch.randn(4, generator=_gen(1)),
                      operator=operator)
        assert s.regime is None and s.regime_name == "undefined" and "constant" in s.undefined_reason
        scalars = s.scalars()
        assert "regime" not in scalars and "n_features" not in scalars
        assert all(math.isfinite(v) for v in scalars.values()), scalars
    zero_head = summarise(FeatureStatisticsValue.from_features(torch.randn(40, 6, generator=_gen(2)), y, 4),
                          torch.zeros(4, 6), torch.zeros(4))
    assert zero_head.regime is None and "zero" in zero_head.undefined_reason


def test_stop_on_regime_fires_on_its_own_state_only_and_never_on_an_undefined_one():
    mf = StopOnRegime("MF", patience=2)
    seq = [{"regime": 1.0}, {"rank": 0.0}, {"regime": 1.0}, {"regime": -1.0}, {"regime": 1.0}, {"regime": 1.0}]
    fired = [mf.check(s, v, "probes/spectrum/") for s, v in enumerate(seq)]
    assert fired[:5] == [None] * 5 and fired[5] is not None  # undefined and "below" break the streak
    below = StopOnRegime("below")
    assert below.check(0, {"regime": -1.0}, "probes/spectrum/") is not None
    assert StopOnRegime("EF").check(0, {"regime": -1.0}, "probes/spectrum/") is None
    with pytest.raises(ValueError, match="'below'"):
        StopOnRegime("minimal")


def test_a_dead_network_warns_logs_no_regime_and_no_nan_and_does_not_stop(tmp_path):
    model = MLPClassifier(hidden=(16, 16), lr=0.0)  # lr 0: it stays dead
    with torch.no_grad():  # every ReLU of the last hidden layer off: Φ = 0 for every input
        last = [m for m in model.features.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.weight.zero_()
        last.bias.fill_(-1.0)
    monitor = FeatureSpectrumMonitor(schedule=every(2), max_samples=64, images_every=0,
                                     triggers=[StopOnRegime("MF", patience=1)])
    with pytest.warns(UserWarning, match="regime is undefined"):
        trainer = fit_digits(tmp_path, monitor, model, 6)
    assert trainer.global_step == 6 and monitor.stop_reason is None
    events = read_events(str(tmp_path))
    assert "probes/spectrum/regime" not in events.scalars
    assert all(math.isfinite(v) for tag, points in events.scalars.items() for _, v in points), "a NaN was logged"
    assert monitor.regime_changes() == [(0, "undefined")]
    assert events.texts["probes/spectrum/regime_history"] == [monitor._regime_table()]  # written once


def test_the_regime_table_survives_a_checkpoint_and_is_rebuilt_from_an_old_one():
    monitor = FeatureSpectrumMonitor()
    monitor.history = [(0, {"regime": 0.0, "n_features": 40.0, "gap_at_C": 1.1}),
                       (5, {"regime": 0.0, "n_features": 30.0, "gap_at_C": 1.2}),
                       (9, {"n_features_99": 3.0}),
                       (12, {"regime": 1.0, "n_features": 6.0, "gap_at_C": 2.0})]
    rebuilt = monitor._rows_from_history()
    assert [(s, r) for s, r, _, _ in rebuilt] == [(0, "EF"), (9, "undefined"), (12, "MF")]
    monitor.regime_rows = rebuilt
    state = monitor.state_dict()
    restored = FeatureSpectrumMonitor()
    restored.load_state_dict(state)
    assert repr(restored.regime_rows) == repr(rebuilt) and restored._stable_since() == 12
    del state["regime_rows"]  # a checkpoint written before the table was kept
    old = FeatureSpectrumMonitor()
    old.load_state_dict(state)
    assert repr(old.regime_rows) == repr(rebuilt)


def test_operator_arguments_are_checked():
    with pytest.raises(ValueError, match="Did you mean 'centred'"):
        FeatureSpectrumMonitor(operator="centered")
    with pytest.raises(ValueError, match="center=False means operator='uncentred'"):
        FeatureSpectrumMonitor(operator="augmented", center=False)
    assert FeatureSpectrumMonitor(center=False).operator == "uncentred"
    assert FeatureSpectrumMonitor(center=True).operator == "centred"
    with pytest.raises(ValueError, match="decision_threshold"):
        FeatureSpectrumMonitor(decision_threshold=0.0)
