"""LIB as in the paper and its reference code: the constant direction kept apart, the raw-logits output basis and
integrated gradients — each with known answers (SCIENCE.md §4, issue 20)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lightning_probes.measures.interaction_basis import (
    _backward_pass,
    augment,
    constant_edge_share,
    data_edges,
    interaction_basis,
    interaction_graph,
    lib_jacobians,
    path_quadrature,
)

F64 = torch.float64
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def _forward(sections, x):
    acts = [x]
    with torch.no_grad():
        for s in sections:
            acts.append(s(acts[-1]))
    return acts


def _mlp(widths, activation, seed, bias=True):
    torch.manual_seed(seed)
    hidden = [nn.Sequential(nn.Linear(a, b, bias=bias), activation()).double()
              for a, b in zip(widths[:-2], widths[1:-1])]
    return hidden + [nn.Linear(widths[-2], widths[-1], bias=bias).double()]


def _shifted_gaussian(n, p, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, p, generator=g, dtype=F64) * 1.5 + torch.linspace(-1.0, 3.0, p, dtype=F64)


def _constant_features(features):
    """Columns of (N, k) features that are constant over the samples (relative spread below 1e-9)."""
    spread = features.std(0)
    scale = features.abs().max()
    return [j for j in range(features.shape[1]) if float(spread[j]) <= 1e-9 * float(scale)]


# ---------------------------------------------------------------- 1. the constant direction apart


@pytest.mark.parametrize("gradients", ["plain", "integrated"])
@pytest.mark.parametrize("final_basis", ["logits", "pca", "identity"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_exactly_one_constant_feature_per_layer_and_the_others_of_zero_mean(activation, final_basis, gradients):
    sections = _mlp([8, 32, 32, 4], ACTIVATIONS[activation], seed=0)
    acts = _forward(sections, _shifted_gaussian(400, 8, seed=1))
    bases = interaction_basis(sections, acts, final_basis=final_basis, gradients=gradients)
    for depth in range(len(sections)):  # every node layer before the output
        basis = bases.lib[depth]
        features = basis.features(acts[depth])  # (N, k)
        assert basis.constant and _constant_features(features) == [0], (depth, _constant_features(features))
        assert float(features[0, 0]) == pytest.approx(float(basis.constant_eigenvalue) ** 0.5, rel=1e-12)
        mean, spread = features[:, 1:].mean(0), features[:, 1:].std(0)
        assert float((mean.abs() / spread).max()) < 1e-9, "a data direction has a non-zero mean"
        assert basis.n_data_directions == basis.n_directions - 1 >= 1


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_diagonalising_all_of_M_mixes_the_bias_into_the_data_directions(activation):
    """The control for the test above: the first version (all of M diagonalised) has no constant feature and
    several features with a non-zero mean, as issue 20 found side by side with the reference."""
    sections = _mlp([8, 32, 32, 4], ACTIVATIONS[activation], seed=0)
    acts = _forward(sections, _shifted_gaussian(400, 8, seed=1))
    mixed, _ = _backward_pass(sections, acts, 1e-6, "identity", 2**24, True, False, mix_constant=True)
    for depth in (1, 2):  # the hidden layers
        features = mixed.lib[depth].features(acts[depth])
        assert _constant_features(features) == []
        mean, spread = features.mean(0), features.std(0)
        assert int((mean.abs() > 1e-6 * spread).sum()) >= 2


def _downstream(layers, depth):
    P = torch.eye(layers[depth].in_features, dtype=F64)
    for layer in layers[depth:]:
        P = layer.weight.detach() @ P
    return P  # (out, p_l)


def _aligned(got, want):
    """got's columns with the signs that match want's (eigenvectors are defined up to sign)."""
    return got * torch.sign((got * want).sum(0))


@pytest.mark.parametrize("gradients", ["plain", "integrated"])
def test_deep_linear_net_with_biases_has_the_closed_form_lib(gradients):
    """Linear net a^{depth+1} = W_l a^depth + b_l, raw logits at the output, P_l = W_{L-1}⋯W_l, Σ_l = Cov(a^depth),
    m = E[logits]. Derivation (induction from the output): the next layer's data features are centred, so the
    whitened constant direction (which moves f along (1, μ)) reaches only the next constant feature (or, at the
    last layer, the logits by b + Wμ = m): M is block diagonal with M[0, 0] = ‖m‖² at every layer. Hence
      - the constant feature is ‖m‖ at every layer (Λ₀ = ‖m‖²),
      - the data spectrum is the squared singular values s² of P_l Σ_l^{1/2}, the same at every layer,
      - the data features are Q_lᵀ P_l (a^depth − μ^depth), Q_l the left singular vectors of P_l Σ_l^{1/2},
      - edges: constant → data directions 0, constant → constant ‖m‖², constant → logit i m_i²,
        data → constant 0.
    Layer 1 (width 6, rank 5) exercises the first truncation."""
    layers = _mlp([5, 6, 4, 3], nn.Identity, seed=2)
    layers = [s[0] if isinstance(s, nn.Sequential) else s for s in layers]  # plain Linear sections
    g = torch.Generator().manual_seed(3)
    a0 = torch.randn(300, 5, generator=g, dtype=F64) @ torch.randn(5, 5, generator=g, dtype=F64) + 2.0
    acts = _forward(layers, a0)
    graph = interaction_graph(layers, acts, gradients=gradients)
    m = acts[-1].mean(0)
    for depth in range(len(layers)):
        a, basis, P = acts[depth], graph.bases.lib[depth], _downstream(layers, depth)
        centred = a - a.mean(0)
        d, u = torch.linalg.eigh(centred.T @ centred / len(a))
        Q, S, _ = torch.linalg.svd(P @ u @ torch.diag(d.clamp_min(0).sqrt()), full_matrices=False)
        assert basis.constant and basis.n_data_directions == 3
        torch.testing.assert_close(basis.constant_eigenvalue, m.square().sum())
        torch.testing.assert_close(basis.C[:, 0], torch.cat([m.norm().reshape(1), torch.zeros(a.shape[1])]))
        torch.testing.assert_close(basis.eigenvalues[1:], S**2)
        torch.testing.assert_close(_aligned(basis.features(a)[:, 1:], centred @ P.T @ Q), centred @ P.T @ Q)
        E = graph.lib_edges[depth]
        scale = float(E.max())
        if depth < len(layers) - 1:
            assert float(E[1:, 0].abs().max()) < 1e-12 * scale and float(E[0, 1:].abs().max()) < 1e-12 * scale
            torch.testing.assert_close(E[0, 0], m.square().sum())
        else:
            torch.testing.assert_close(E[:, 0], m.square())
    torch.testing.assert_close(graph.bases.lib[1].spectrum[:3], graph.bases.lib[0].spectrum[:3])


def test_zero_biases_give_the_constant_feature_no_edges():
    """Nothing reads the constant coordinate when every bias is zero; centring couples the constant direction to
    the data only through the means, which are exactly zero for an odd activation on a symmetric sample set."""
    g = torch.Generator().manual_seed(4)
    z = torch.randn(150, 6, generator=g, dtype=F64) + 1.0
    x = torch.cat([z, -z])  # symmetric: every layer of an odd, bias-free net has mean zero
    for final_basis in ("logits", "pca"):
        sections = _mlp([6, 12, 10, 3], nn.Tanh, seed=5, bias=False)
        acts = _forward(sections, x)
        graph = interaction_graph(sections, acts, final_basis=final_basis)
        for depth, E in enumerate(graph.lib_edges):
            basis, after = graph.bases.lib[depth], graph.bases.lib[depth + 1]
            if final_basis == "logits":  # nothing downstream reads the constant: Λ₀ = 0, it is truncated away
                assert not basis.constant and float(basis.constant_eigenvalue) < 1e-20
                assert constant_edge_share(E, basis, after) == 0.0
            else:  # the output's constant passes through unchanged: only the constant→constant edge
                assert basis.constant and after.constant
                torch.testing.assert_close(E[0, 0], torch.tensor(1.0, dtype=F64))
                assert float(E[1:, 0].max()) < 1e-20 and float(E[0, 1:].max()) < 1e-20
        # control: the same net with biases does route the constant into the data directions
        with_bias = _mlp([6, 12, 10, 3], nn.Tanh, seed=5, bias=True)
        acts_b = _forward(with_bias, x)
        graph_b = interaction_graph(with_bias, acts_b, final_basis=final_basis)
        assert float(graph_b.lib_edges[0][1:, 0].max()) > 1e-6 * float(graph_b.lib_edges[0].max())


def test_zero_bias_linear_net_constant_reaches_only_the_mean_logits():
    """Bias-free linear net, shifted inputs: the constant direction carries the mean (centring), which a linear
    map sends to the next mean exactly, so its only edges are to the constant and, last, the mean logits m_i²."""
    layers = [nn.Linear(4, 5, bias=False).double(), nn.Linear(5, 3, bias=False).double()]
    torch.manual_seed(6)
    acts = _forward(layers, _shifted_gaussian(200, 4, seed=7))
    graph = interaction_graph(layers, acts)
    E0, E1 = graph.lib_edges
    assert float(E0[1:, 0].max()) < 1e-12 * float(E0.max())
    torch.testing.assert_close(E1[:, 0], acts[-1].mean(0).square())


def test_data_edges_and_constant_share_known_answers():
    layers = _mlp([4, 6, 3], nn.ReLU, seed=8)
    acts = _forward(layers, _shifted_gaussian(100, 4, seed=9))
    graph = interaction_graph(layers, acts)
    lib = graph.bases.lib
    E0, E1 = graph.lib_edges
    torch.testing.assert_close(data_edges(E0, lib[0], lib[1]), E0[1:, 1:])
    torch.testing.assert_close(data_edges(E1, lib[1], lib[2]), E1[:, 1:])  # the logits have no constant row
    share = (E0.sum() - E0[1:, 1:].sum()) / E0.sum()
    assert constant_edge_share(E0, lib[0], lib[1]) == pytest.approx(float(share))


# ---------------------------------------------------------------- 2. the output basis


def test_final_basis_options_are_what_they_say():
    sections = _mlp([5, 7, 3], nn.Tanh, seed=10)
    acts = _forward(sections, _shifted_gaussian(120, 5, seed=11))
    logits = interaction_basis(sections, acts, final_basis="logits").lib[-1]
    assert not logits.constant and logits.n_directions == 3
    torch.testing.assert_close(logits.features(acts[-1]), acts[-1])  # raw: not rotated, not centred
    identity = interaction_basis(sections, acts, final_basis="identity").lib[-1]
    torch.testing.assert_close(identity.features(acts[-1]), augment(acts[-1]))  # raw plus the constant
    bases = interaction_basis(sections, acts, final_basis="pca")
    pca = bases.lib[-1]
    assert pca is bases.pca[-1] and pca.constant
    torch.testing.assert_close(pca.features(acts[-1])[:, 1:].mean(0), torch.zeros(3, dtype=F64))  # centred
    # with the constant apart, the hidden data directions do not depend on the output basis: rotating the output
    # leaves JᵀJ unchanged and centring touches only the constant's column. Λ₀ does: ‖m‖², 1 and 1 + ‖m‖² (the
    # mean logits m reach the raw logits; the constant coordinate passes through unchanged)
    m2 = acts[-1].mean(0).square().sum()
    hidden = {b: interaction_basis(sections, acts, final_basis=b).lib for b in ("logits", "pca", "identity")}
    for depth in (0, 1):
        for b in ("pca", "identity"):
            torch.testing.assert_close(hidden[b][depth].spectrum, hidden["logits"][depth].spectrum)
            got, want = hidden[b][depth].C[:, 1:], hidden["logits"][depth].C[:, 1:]
            torch.testing.assert_close(_aligned(got, want), want)
    torch.testing.assert_close(hidden["logits"][1].constant_eigenvalue, m2)
    torch.testing.assert_close(hidden["pca"][1].constant_eigenvalue, torch.tensor(1.0, dtype=F64))
    torch.testing.assert_close(hidden["identity"][1].constant_eigenvalue, 1 + m2)
    with pytest.raises(ValueError, match="'logits'"):
        interaction_basis(sections, acts, final_basis="raw")


# ---------------------------------------------------------------- 3. integrated gradients


def test_path_quadrature_is_exact_for_polynomials_of_degree_2n_minus_1():
    for n in (1, 2, 5):
        alphas, weights = path_quadrature(n)
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-15)
        assert float(alphas.min()) > 0 and float(alphas.max()) < 1
        for degree in range(2 * n):
            assert float((weights * alphas**degree).sum()) == pytest.approx(1 / (degree + 1), rel=1e-13)
        assert float((weights * alphas ** (2 * n)).sum()) != pytest.approx(1 / (2 * n + 1), rel=1e-10)
    with pytest.raises(ValueError, match="integration_points"):
        path_quadrature(0)


def _relu_deep(seed):
    torch.manual_seed(seed)
    return [
        nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 7), nn.ReLU()).double(),  # autograd route
        nn.Sequential(nn.Linear(7, 6), nn.LeakyReLU(0.1)).double(),  # the closed form
        nn.Linear(6, 3).double(),
    ]


@pytest.mark.parametrize("net", ["relu", "linear"])
def test_integrated_gradients_equal_plain_ones_on_relu_and_linear_nets(net):
    """With the biases folded onto the constant coordinate, which the path α·f scales too, a ReLU / LeakyReLU /
    linear section is positively homogeneous along the path, F(αf) = αF(f): its Jacobian is the same at every
    α > 0, so the integrated gradients equal the plain ones to round-off — the bases, Λ and the edges."""
    sections = _relu_deep(12) if net == "relu" else _mlp([5, 7, 6, 3], nn.Identity, seed=12)
    acts = _forward(sections, _shifted_gaussian(150, 5, seed=13))
    for mode in ("auto", "rev"):
        for depth, s in enumerate(sections):
            C = torch.randn(acts[depth + 1].shape[1] + 1, 4, dtype=F64)
            plain = torch.cat(list(lib_jacobians(s, acts[depth], C, mode=mode)))
            integrated = torch.cat(list(lib_jacobians(s, acts[depth], C, mode=mode, gradients="integrated",
                                                      integration_points=7)))
            torch.testing.assert_close(integrated, plain, rtol=1e-12, atol=1e-13)
    plain = interaction_graph(sections, acts)
    integrated = interaction_graph(sections, acts, gradients="integrated", integration_points=5)
    for a, b in zip(plain.bases.lib, integrated.bases.lib):
        torch.testing.assert_close(b.eigenvalues, a.eigenvalues, rtol=1e-10, atol=1e-14)
    for a, b in zip(plain.lib_edges + plain.pca_edges, integrated.lib_edges + integrated.pca_edges):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-14)


def test_holding_the_constant_at_one_would_break_that_equality():
    """Why the path scales the constant coordinate (as the reference code scales its whole folded input): with c
    held at 1, a ReLU layer with biases is not linear along α·a, and the path average differs from the plain
    gradient — on exactly the units whose pre-activation changes sign along that path."""
    torch.manual_seed(14)
    lin = nn.Linear(4, 6).double()
    a = _shifted_gaussian(50, 4, seed=15)
    W, b = lin.weight.detach(), lin.bias.detach()
    alphas, weights = path_quadrature(16)
    held = sum(w * (torch.relu(al * a @ W.T + b) > 0).to(F64) for al, w in zip(alphas.tolist(), weights.tolist()))
    plain = (a @ W.T + b > 0).to(F64)
    assert float((held - plain).abs().max()) > 0.05
    section = nn.Sequential(lin, nn.ReLU())
    C = torch.eye(7, dtype=F64)
    ours = torch.cat(list(lib_jacobians(section, a, C, gradients="integrated")))[:, 1:, 1:]  # (N, 6, 4)
    torch.testing.assert_close(ours, plain[:, :, None] * W)


class _Tanh3(nn.Module):
    """tanh behind an identity: a section the closed form does not take (three modules), so autograd runs."""

    def __init__(self, linear):
        super().__init__()
        self.net = nn.Sequential(linear, nn.Tanh(), nn.Identity())

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("route", ["dense", "autograd"])
def test_integrated_gradients_of_tanh_have_the_closed_form_path_integral(route):
    """For an elementwise σ with σ(0) = 0 after a bias-folded linear map, z(αf) = α z, and
    ∫₀¹ σ'(αz) dα = σ(z)/z: J̄ = C_nextᵀ diag(tanh(z)/z) [b W] (plus the constant's row, which passes through).
    The quadrature converges to it as the number of points grows."""
    torch.manual_seed(16)
    lin = nn.Linear(4, 5).double()
    section = nn.Sequential(lin, nn.Tanh()) if route == "dense" else _Tanh3(lin)
    a = torch.randn(30, 4, dtype=F64)
    f = augment(a)
    Wb = torch.cat([lin.bias.detach()[:, None], lin.weight.detach()], dim=1)  # (5, 5)
    z = f @ Wb.T  # (N, 5)
    C = torch.randn(6, 3, dtype=F64)
    exact = (C[1:].T[None] * (torch.tanh(z) / z)[:, None, :]) @ Wb + torch.outer(C[0], torch.eye(5, dtype=F64)[0])
    errors = []
    for n in (1, 2, 4, 8, 16, 32):
        got = torch.cat(list(lib_jacobians(section, a, C, gradients="integrated", integration_points=n,
                                           mode="auto" if route == "dense" else "rev")))
        errors.append(float((got - exact).abs().max()))
    assert all(later <= earlier * 1.01 + 1e-14 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[0] > 1e-3 and errors[-1] < 1e-11, errors
    plain = torch.cat(list(lib_jacobians(section, a, C)))
    assert float((plain - exact).abs().max()) > 1e-2  # tanh is not homogeneous: plain ≠ integrated here


def test_integrated_gradients_differ_from_plain_on_gelu_and_converge():
    sections = _mlp([8, 32, 32, 4], nn.GELU, seed=17)
    acts = _forward(sections, _shifted_gaussian(200, 8, seed=18))
    plain = interaction_basis(sections, acts)
    lam = [interaction_basis(sections, acts, gradients="integrated", integration_points=n).lib[1].eigenvalues[1:6]
           for n in (4, 16, 64)]
    assert not torch.allclose(plain.lib[1].eigenvalues[1:6], lam[-1], rtol=1e-3)
    assert float((lam[1] - lam[2]).abs().max()) < float((lam[0] - lam[2]).abs().max())
    torch.testing.assert_close(lam[1], lam[2], rtol=1e-3, atol=0)


def test_bad_gradient_options_are_refused():
    sections = _mlp([3, 4, 2], nn.ReLU, seed=19)
    acts = _forward(sections, torch.randn(20, 3, dtype=F64))
    with pytest.raises(ValueError, match="gradients must be"):
        interaction_basis(sections, acts, gradients="smooth")
    with pytest.raises(ValueError, match="integration_points"):
        interaction_graph(sections, acts, gradients="integrated", integration_points=0)


# ---------------------------------------------------------------- 4. fewer samples than the layer is wide


def test_probe_set_smaller_than_a_layer_warns_once_and_caps_both_bases():
    sections = _mlp([6, 40, 3], nn.ReLU, seed=20)
    acts = _forward(sections, _shifted_gaussian(25, 6, seed=21))
    with pytest.warns(UserWarning, match=r"node layer 1 \(width 40\).*at most 24 data directions") as caught:
        bases = interaction_basis(sections, acts)
    assert len([w for w in caught if "probe samples" in str(w.message)]) == 1
    assert bases.pca[1].n_data_directions <= 24 and bases.lib[1].n_data_directions <= 24
    acts = _forward(sections, _shifted_gaussian(60, 6, seed=21))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        interaction_basis(sections, acts)
