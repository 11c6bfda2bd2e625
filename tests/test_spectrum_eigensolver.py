"""The spectrum monitor's eigensolver choice (issue 17): ``summarise(eigensolver="topk")`` and the monitor's
``eigensolver="topk"`` give the full float64 eigh's n_features, n_features_99, powers at C, gap, participation
ratio and regime to 1e-9 on rank-k, random and digits features, for the three operators; "auto" takes the top-k
route from TOPK_FROM features on; what the top-k route cannot make sure of falls back to the full solve, said."""

import math

import pytest
import torch
from helpers import fit_digits
from test_spectrum_topk import _digits_features  # a 64-512-10 digits MLP's features and head

from lightning_probes.measures.spectrum import TOPK_FROM, FeatureStatisticsValue, check_eigensolver, summarise
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor

F64 = torch.float64
TOL = 1e-9
EXACT = ("n_features", "n_features_99", "regime", "function_rank")
CLOSE = ("target_power_at_C", "learned_power_at_C", "gap_at_C", "participation_ratio", "top_eigenvalue")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _assert_same(full, top) -> None:
    """The top-k summary's figures against the full solve's (rank only where top-k found the whole spectrum)."""
    a, b = full.scalars(), top.scalars()
    for key in EXACT:
        assert a.get(key) == b.get(key), key
    for key in CLOSE:
        assert (key in a) == (key in b), key
        if key in a and math.isfinite(a[key]):
            assert b[key] == pytest.approx(a[key], rel=TOL, abs=TOL), key
        elif key in a:
            assert a[key] == b[key], key  # inf gaps
    if top.spectrum.complete:
        assert a["rank"] == b["rank"]
    else:
        assert "rank" not in b and top.spectrum.rank >= (top.n_features_99 or 0)
    k = top.spectrum.rank
    lam_full = full.spectrum.eigenvalues[:k]
    assert (top.spectrum.nonzero - lam_full).abs().max() <= TOL * float(lam_full[0])
    assert (top.learned_power - full.learned_power[:k]).abs().max() <= TOL
    assert full.eigensolver == "full" and top.eigensolver == "topk"


def _both(stats, weight, bias, operator):
    full = summarise(stats, weight, bias, operator=operator, eigensolver="full")
    top = summarise(stats, weight, bias, operator=operator, eigensolver="topk")
    _assert_same(full, top)
    return full, top


@pytest.mark.parametrize("operator", ["centred", "uncentred", "augmented"])
def test_rank_k_features_equal_the_full_solve_and_know_their_rank(operator):
    g = _gen(1)
    basis = torch.randn(8, 300, generator=g, dtype=F64)  # rank 8 features in p = 300
    phi = torch.randn(900, 8, generator=g, dtype=F64) @ basis
    y = torch.randint(0, 5, (900,), generator=g)
    w, b = torch.randn(5, 300, generator=g, dtype=F64), torch.randn(5, generator=g, dtype=F64)
    full, top = _both(FeatureStatisticsValue.from_features(phi, y, 5), w, b, operator)
    assert top.spectrum.complete and top.scalars()["rank"] == full.scalars()["rank"] in (8.0, 9.0)


@pytest.mark.parametrize("operator", ["centred", "uncentred", "augmented"])
def test_random_decaying_features_equal_the_full_solve(operator):
    g = _gen(2)
    p = 400
    phi = torch.randn(1200, p, generator=g, dtype=F64) / torch.arange(1.0, p + 1, dtype=F64)
    y = torch.randint(0, 10, (1200,), generator=g)
    w = torch.zeros(10, p, dtype=F64)
    w[:, :6] = torch.randn(10, 6, generator=g, dtype=F64)  # a head on the widest directions
    full, top = _both(FeatureStatisticsValue.from_features(phi, y, 10), w, torch.zeros(10, dtype=F64), operator)
    if operator != "uncentred":
        assert not top.fallback_reason and not top.spectrum.complete and top.spectrum.rank < p


@pytest.mark.parametrize("steps", [0, 100])
@pytest.mark.parametrize("operator", ["centred", "uncentred", "augmented"])
def test_digits_mlp_features_equal_the_full_solve(steps, operator):
    phi, y, w, b = _digits_features(steps)
    _both(FeatureStatisticsValue.from_features(phi, y, 10), w, b, operator)


def test_auto_takes_the_top_k_route_from_topk_from_features():
    g = _gen(3)
    for p, route in ((TOPK_FROM - 1, "full"), (TOPK_FROM, "topk")):
        phi = torch.randn(p + 200, p, generator=g, dtype=F64) / torch.arange(1.0, p + 1, dtype=F64)
        y = torch.randint(0, 4, (p + 200,), generator=g)
        w = torch.zeros(4, p, dtype=F64)
        w[:, :3] = 1.0
        out = summarise(FeatureStatisticsValue.from_features(phi, y, 4), w, None, eigensolver="auto")
        assert out.eigensolver == route


def test_a_fallback_says_why_and_unknown_names_are_refused():
    g = _gen(4)
    phi = torch.randn(500, 300, generator=g, dtype=F64)  # a flat spectrum, a head spread over all of it
    y = torch.randint(0, 3, (500,), generator=g)
    w = torch.randn(3, 300, generator=g, dtype=F64)
    stats = FeatureStatisticsValue.from_features(phi, y, 3)
    top = summarise(stats, w, None, eigensolver="topk")
    assert top.fallback_reason and top.spectrum.complete
    _assert_same(summarise(stats, w, None), top)
    with pytest.raises(ValueError, match="eigensolver must be one of 'auto', 'full', 'topk'"):
        check_eigensolver("krylov")
    with pytest.raises(ValueError, match="eigensolver"):
        FeatureSpectrumMonitor(eigensolver="lanczos")


def test_the_monitor_logs_the_full_solves_figures_with_the_top_k_route(tmp_path, monkeypatch):
    """Digits MLP 64-128-10, 40 steps, a probe every 10: the same history from both routes (rank apart); the
    untrained net's first probe needs more pairs than the Krylov basis allows and falls back, the trained ones not."""
    import lightning_probes.monitors.spectrum as monitor_module

    routes = []

    def recording(*args, **kwargs):
        out = summarise(*args, **kwargs)
        routes.append((out.eigensolver, bool(out.fallback_reason)))
        return out

    monkeypatch.setattr(monitor_module, "summarise", recording)
    histories = {}
    for route in ("full", "topk"):
        monitor = FeatureSpectrumMonitor(head="classifier", schedule=10, eigensolver=route)
        torch.manual_seed(0)  # the same initial model for both routes
        fit_digits(tmp_path / route, monitor, MLPClassifier(hidden=(128,), lr=0.2), max_steps=40)
        histories[route] = list(monitor.history)
    assert ("topk", False) in routes  # at least one probe got its figures from the leading pairs alone
    assert len(histories["full"]) == len(histories["topk"]) >= 4
    for (s1, a), (s2, b) in zip(histories["full"], histories["topk"]):
        assert s1 == s2
        assert set(b) - {"rank"} == set(a) - {"rank"}
        for key, value in a.items():
            if key == "rank" and key not in b:
                continue
            if key in ("n_features", "n_features_99", "n_features_decisions", "regime", "function_rank"):
                assert b[key] == value, (s1, key)
            else:
                assert b[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (s1, key)
