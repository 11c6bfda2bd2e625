"""Local Interaction Basis measures: known answers first, then properties and fast == direct formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_probes.measures.interaction_basis import (
    Basis,
    ablation_curve,
    augment,
    check_sections,
    edge_matrix,
    edges_for_mass,
    interaction_basis,
    interaction_edges,
    interaction_graph,
    lib_jacobians,
    whitened_pca,
)

F64 = torch.float64


def _forward(sections, x):
    acts = [x]
    with torch.no_grad():
        for s in sections:
            acts.append(s(acts[-1]))
    return acts


def _isotropic(n: int, p: int, seed: int) -> torch.Tensor:
    """Samples with exactly zero mean and exactly identity (1/N) covariance."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=F64)
    x = x - x.mean(0)
    cov = x.T @ x / n
    evals, evecs = torch.linalg.eigh(cov)
    return x @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T


def _linear_chain(widths, seed: int, bias: bool = False) -> list[nn.Linear]:
    torch.manual_seed(seed)
    return [nn.Linear(a, b, bias=bias).double() for a, b in zip(widths[:-1], widths[1:])]


def _downstream(layers, depth):
    P = torch.eye(layers[depth].in_features, dtype=F64)
    for layer in layers[depth:]:
        P = layer.weight.detach() @ P
    return P  # (out, p_l)


def _constant_column(C: torch.Tensor) -> int:
    return int(C[0].abs().argmax())


# ---------------------------------------------------------------- known answers


@pytest.mark.parametrize("final_basis", ["pca", "identity"])
def test_deep_linear_isotropic_lib_is_svd_of_downstream_product(final_basis):
    """Isotropic input: the LIB directions of the input layer are P's right singular vectors v_i, scaled by s_i."""
    layers = _linear_chain([5, 6, 4, 3], seed=0)
    acts = _forward(layers, _isotropic(200, 5, seed=1))
    basis = interaction_basis(layers, acts, final_basis=final_basis).lib[0]
    _, S, Vh = torch.linalg.svd(_downstream(layers, 0), full_matrices=False)  # P = W2 W1 W0, (3, 5)
    assert basis.n_directions == len(S) + 1  # the rank of P, plus the constant direction
    const = _constant_column(basis.C)
    assert basis.C[:, const].tolist() == pytest.approx([1.0] + [0.0] * 5, abs=1e-9)
    assert float(basis.eigenvalues[const]) == pytest.approx(1.0)
    others = [j for j in range(basis.n_directions) if j != const]  # already in decreasing Λ order
    torch.testing.assert_close(basis.eigenvalues[others], S**2)
    block = basis.C[1:, others]  # (5, 3): columns ± v_i s_i
    signs = torch.sign((block * Vh.T).sum(0))
    torch.testing.assert_close(block * signs, Vh.T * S)
    assert basis.C[0, others].abs().max() < 1e-9


def test_deep_linear_every_layer_lib_features_follow_svd_of_product_times_data():
    """Any layer, any data: f̂ = P_uᵀ P a, Λ = s², with P_u s V_aᵀ the SVD of P Σ^{1/2} (Σ the layer's covariance).

    Hidden layer 1 is rank deficient (width 6, rank 4), so the first truncation is exercised too; and since
    P_l Σ_l^{1/2} has the same singular values at every layer of a linear net, so does the LIB spectrum.
    """
    layers = _linear_chain([4, 6, 5, 3], seed=2)
    g = torch.Generator().manual_seed(3)
    a0 = torch.randn(300, 4, generator=g, dtype=F64) @ torch.randn(4, 4, generator=g, dtype=F64)
    acts = _forward(layers, a0 - a0.mean(0))
    bases = interaction_basis(layers, acts, final_basis="pca")  # the output's constant keeps Λ₀ = 1 upstream
    for depth in range(len(layers)):
        a, basis, P = acts[depth], bases.lib[depth], _downstream(layers, depth)
        d, u = torch.linalg.eigh(a.T @ a / len(a))
        Pu, S, _ = torch.linalg.svd(P @ u @ torch.diag(d.clamp_min(0).sqrt()), full_matrices=False)
        const = _constant_column(basis.C)
        others = [j for j in range(basis.n_directions) if j != const]
        assert len(others) == 3
        torch.testing.assert_close(basis.eigenvalues[others], S**2)
        got = basis.features(a)[:, others]  # (N, 3)
        want = a @ P.T @ Pu  # (N, 3)
        signs = torch.sign((got * want).sum(0))
        torch.testing.assert_close(got * signs, want)
        torch.testing.assert_close(basis.eigenvalues, bases.lib[0].eigenvalues)


def test_direction_ignored_by_next_layer_is_kept_by_pca_and_dropped_by_lib():
    torch.manual_seed(4)
    sections = [
        nn.Sequential(nn.Linear(5, 6), nn.Tanh()).double(),
        nn.Sequential(nn.Linear(6, 8), nn.Tanh()).double(),
        nn.Linear(8, 3).double(),
    ]
    ignored = 2
    with torch.no_grad():
        sections[1][0].weight[:, ignored] = 0.0  # layer 2 never reads hidden unit 2 of layer 1
    acts = _forward(sections, torch.randn(400, 5, dtype=F64))
    bases = interaction_basis(sections, acts)
    assert bases.pca[1].n_directions == 7  # constant + 6 units, all present
    assert bases.lib[1].n_directions == 6  # the ignored unit is gone
    assert bases.lib[1].C[1 + ignored].abs().max() < 1e-8  # no LIB feature reads it
    # control: without the zeroed column nothing is dropped
    with torch.no_grad():
        sections[1][0].weight[:, ignored] = 0.5
    acts = _forward(sections, acts[0])
    assert interaction_basis(sections, acts).lib[1].n_directions == 7


def _block_diagonal(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.block_diag(a, b)


def test_independent_subnetworks_have_no_cross_edges_in_lib_basis():
    """Two sub-networks side by side: every LIB direction belongs to one of them and no edge crosses over.

    The constant coordinate is the one node the sub-networks could share (centring through it couples every
    centred feature to it), so here it carries nothing: no biases and activations of exactly zero mean (odd
    tanh layers on a symmetric sample set).
    """
    torch.manual_seed(5)
    first = nn.Linear(4, 6, bias=False).double()
    second = nn.Linear(6, 4, bias=False).double()
    with torch.no_grad():  # sub-network A reads inputs 0-1 into hidden 0-2 into outputs 0-1; B the rest
        first.weight.copy_(_block_diagonal(torch.randn(3, 2), torch.randn(3, 2)))
        second.weight.copy_(_block_diagonal(torch.randn(2, 3), torch.randn(2, 3)))
    sections = [nn.Sequential(first, nn.Tanh()), second]
    # full factorial design: the empirical distribution of (x_A, x_B) is exactly the product of its marginals
    za, zb = torch.randn(7, 2, dtype=F64), torch.randn(8, 2, dtype=F64)
    xa, xb = torch.cat([za, -za]), torch.cat([zb, -zb])
    x = torch.cat([xa.repeat_interleave(len(xb), 0), xb.repeat(len(xa), 1)], dim=1)  # (224, 4)
    acts = _forward(sections, x)
    bases = interaction_basis(sections, acts)
    groups = [
        {"A": range(1, 3), "B": range(3, 5)},  # augmented coordinates of node 0 (0 = constant)
        {"A": range(1, 4), "B": range(4, 7)},
        {"A": range(1, 3), "B": range(3, 5)},
    ]
    owners = []
    for basis, group in zip(bases.lib, groups):
        C = basis.C.abs()
        mass = {name: C[list(rows)].sum(0) for name, rows in group.items()} | {"const": C[0]}
        owner = []
        for j in range(basis.n_directions):
            name = max(mass, key=lambda n: float(mass[n][j]))
            leak = sum(float(mass[n][j]) for n in mass if n != name)
            assert leak < 1e-9 * float(mass[name][j]), f"LIB direction {j} mixes the sub-networks"
            owner.append(name)
        assert {"A", "B"} <= set(owner)
        owners.append(owner)
    for depth, E in enumerate(interaction_edges(sections, acts, bases.lib)):
        for i, out in enumerate(owners[depth + 1]):
            for j, inp in enumerate(owners[depth]):
                if {out, inp} == {"A", "B"}:
                    assert float(E[i, j]) < 1e-12 * float(E.max())
        assert float(E.max()) > 0


def test_whitened_pca_known_answer_and_rank_deficiency_truncates_without_nan():
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    pca = whitened_pca(a)
    assert pca.D.tolist() == [1.0, 2.0, 0.5]
    # duplicated column and a dead unit: rank 2 of 4 — truncated, never NaN
    g = torch.Generator().manual_seed(6)
    b = torch.randn(50, 2, generator=g)
    deficient = torch.cat([b, b[:, :1], torch.zeros(50, 1)], dim=1)
    pca = whitened_pca(deficient)
    assert len(pca.D) == 3 and torch.isfinite(pca.R).all() and torch.isfinite(pca.R_left_inverse).all()
    sections = [nn.Linear(4, 3).double()]
    acts = _forward(sections, deficient.double())
    bases = interaction_basis(sections, acts)
    assert bases.pca[0].n_directions == 3 and bases.lib[0].n_directions <= 3
    for basis in bases.lib + bases.pca:
        assert torch.isfinite(basis.C).all() and torch.isfinite(basis.C_inv).all()


def test_edges_for_mass_known_answers():
    E = torch.tensor([[5.0, 3.0], [1.0, 1.0]])  # total 10
    assert edges_for_mass(E, 0.5) == 1
    assert edges_for_mass(E, 0.8) == 2
    assert edges_for_mass(E, 0.85) == 3
    assert edges_for_mass(E, 1.0) == 4
    assert edges_for_mass(torch.zeros(3, 3), 0.9) == 0
    with pytest.raises(ValueError, match="fraction"):
        edges_for_mass(E, 0.0)


# ---------------------------------------------------------------- fast == direct


def _folded_by_hand(W, b):
    """The bias-folded layer written out: f = (c, a) -> (c, tanh(W a + b c))."""

    def fn(f):
        c, a = f[:1], f[1:]
        return torch.cat([c, torch.tanh(W @ a + b * c)])

    return fn


@pytest.mark.parametrize("mode", ["rev", "fwd", "auto"])
def test_batched_jacobian_equals_loop_over_outputs(mode):
    torch.manual_seed(7)
    section = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).double()
    x = torch.randn(9, 4, dtype=F64)
    C_next = torch.randn(4, 2, dtype=F64)  # a next-layer basis (q+1 = 4, k = 2)
    J = torch.cat(list(lib_jacobians(section, x, C_next, max_jacobian_elements=25, mode=mode)))  # 2 samples/chunk
    by_hand = _folded_by_hand(section[0].weight.detach(), section[0].bias.detach())
    loop = torch.zeros(9, 2, 5, dtype=F64)
    for n, f in enumerate(augment(x)):  # the slow reference: one backward pass per sample and output
        f = f.clone().requires_grad_(True)
        out = by_hand(f) @ C_next
        for i in range(2):
            (grad,) = torch.autograd.grad(out[i], f, retain_graph=True)
            loop[n, i] = grad
    torch.testing.assert_close(J, loop)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.GELU, nn.Tanh, nn.LeakyReLU, None])
@pytest.mark.parametrize("bias", [True, False])
def test_closed_form_dense_jacobians_equal_autograd(activation, bias):
    torch.manual_seed(3)
    linear = nn.Linear(6, 5, bias=bias).double()
    section = linear if activation is None else nn.Sequential(linear, activation()).double()
    x = torch.randn(13, 6, dtype=F64)
    x[0] = 0.0  # without bias, z = 0 exactly: ReLU's kink, where both routes must agree on the slope
    C_next = torch.randn(6, 4, dtype=F64)
    dense = torch.cat(list(lib_jacobians(section, x, C_next, max_jacobian_elements=60, mode="dense")))  # 2/chunk
    autograd = torch.cat(list(lib_jacobians(section, x, C_next, mode="rev")))
    assert dense.shape == (13, 4, 7)
    torch.testing.assert_close(dense, autograd, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(torch.cat(list(lib_jacobians(section, x, C_next))), autograd)  # auto takes it


def test_closed_form_refuses_sections_it_cannot_differentiate_in_closed_form():
    section = nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=-1)).double()  # not elementwise
    with pytest.raises(ValueError, match="mode='dense' needs"):
        next(lib_jacobians(section, torch.randn(3, 4, dtype=F64), torch.eye(5, dtype=F64), mode="dense"))
    # auto falls back to autograd, which handles the coupling softmax introduces
    J = next(lib_jacobians(section, torch.randn(3, 4, dtype=F64), torch.eye(5, dtype=F64)))
    assert J.shape == (3, 5, 5) and torch.isfinite(J).all()


def test_jacobian_chunks_rows_when_one_sample_is_too_big_and_says_so():
    section = nn.Linear(6, 5).double()
    x = torch.randn(3, 6, dtype=F64)
    C_next = torch.eye(6, dtype=F64)
    with pytest.warns(UserWarning, match="max_jacobian_elements"):  # the autograd route (dense takes closed form)
        chunked = torch.cat(list(lib_jacobians(section, x, C_next, max_jacobian_elements=10, mode="rev")))
    torch.testing.assert_close(chunked, torch.cat(list(lib_jacobians(section, x, C_next, mode="rev"))))


def _net(widths, seed):
    torch.manual_seed(seed)
    sections = [nn.Sequential(nn.Linear(a, b), nn.Tanh()).double() for a, b in zip(widths[:-2], widths[1:-1])]
    return sections + [nn.Linear(widths[-2], widths[-1]).double()]


def test_M_in_whitened_coordinates_equals_direct_autograd_and_centred_gram_block_form():
    sections = _net([3, 4, 3], seed=8)
    acts = _forward(sections, torch.randn(60, 3, dtype=F64) * 2 + 1)
    bases = interaction_basis(sections, acts)
    a = acts[0]
    pca = whitened_pca(a)
    f = augment(a)
    # centred Gram: Yᵀ E[f fᵀ] Y equals diag(1, Cov) = U diag(D) Uᵀ (full rank here)
    G = pca.Y.T @ (f.T @ f / len(f)) @ pca.Y
    torch.testing.assert_close(G, pca.U @ torch.diag(pca.D) @ pca.U.T)
    torch.testing.assert_close(pca.R_left_inverse @ pca.R, torch.eye(4, dtype=F64))
    # M directly: Jacobian of the next LIB features w.r.t. the whitened features w, f = R⁺ᵀ w
    by_hand = _folded_by_hand(sections[0][0].weight.detach(), sections[0][0].bias.detach())
    C1 = bases.lib[1].C
    M = torch.zeros(4, 4, dtype=F64)
    for w in f @ pca.R:
        Jw = torch.autograd.functional.jacobian(lambda w: by_hand(pca.R_left_inverse.T @ w) @ C1, w)
        M += Jw.T @ Jw / len(f)
    # the constant direction (whitened coordinate 0) is kept apart: Λ₀ = M[0, 0], the rest from M[1:, 1:]
    assert bases.lib[0].constant
    torch.testing.assert_close(bases.lib[0].constant_eigenvalue, M[0, 0])
    torch.testing.assert_close(bases.lib[0].spectrum, torch.linalg.eigvalsh(M[1:, 1:]).flip(0))
    # C = R V Λ^{1/2}: the LIB features reproduce M's eigenbasis: E[f̂ f̂ᵀ] = Λ (whitened w has E[w wᵀ] = I)
    fh = bases.lib[0].features(a)
    torch.testing.assert_close(fh.T @ fh / len(fh), torch.diag(bases.lib[0].eigenvalues))
    torch.testing.assert_close(bases.lib[0].C_inv @ bases.lib[0].C, torch.eye(bases.lib[0].n_directions, dtype=F64))


def test_edges_equal_direct_differentiation_in_the_new_basis():
    sections = _net([3, 4, 3], seed=9)
    acts = _forward(sections, torch.randn(40, 3, dtype=F64))
    bases = interaction_basis(sections, acts)
    b0, b1 = bases.lib[0], bases.lib[1]
    assert b0.n_directions == 4  # square C: f = C_invᵀ f̂ exactly, so the direct form is defined
    E = edge_matrix(sections[0], acts[0], b0, b1)
    by_hand = _folded_by_hand(sections[0][0].weight.detach(), sections[0][0].bias.detach())
    direct = torch.zeros_like(E)
    for fh in b0.features(acts[0]):
        Jh = torch.autograd.functional.jacobian(lambda fh: by_hand(b0.C_inv.T @ fh) @ b1.C, fh)
        direct += (Jh * fh) ** 2 / len(acts[0])
    torch.testing.assert_close(E, direct)
    # the same call through the list API, PCA basis too
    assert len(interaction_edges(sections, acts, bases.pca)) == 2


# ---------------------------------------------------------------- properties and ablation


def test_lib_and_pca_features_are_decorrelated_with_their_eigenvalues():
    sections = _net([5, 7, 4], seed=10)
    acts = _forward(sections, torch.randn(300, 5, dtype=F64))
    bases = interaction_basis(sections, acts)
    for depth in range(2):
        for basis in (bases.lib[depth], bases.pca[depth]):
            fh = basis.features(acts[depth])
            second = fh.T @ fh / len(fh)
            if basis is bases.pca[depth]:  # PCA: constant first, the rest centred with variances D
                second = torch.cov(fh.T, correction=0)
                second[0, 0] = 1.0
            torch.testing.assert_close(second, torch.diag(basis.eigenvalues), atol=1e-9, rtol=1e-7)


def test_ablation_curve_all_directions_reproduce_accuracy_and_order_matters():
    torch.manual_seed(11)
    sections = _net([4, 8, 3], seed=11)
    x = torch.randn(200, 4, dtype=F64)
    acts = _forward(sections, x)
    targets = acts[-1].argmax(-1)  # the network is 100 % accurate on its own predictions
    bases = interaction_basis(sections, acts)
    for basis in (bases.lib[1], bases.pca[1]):
        curve = ablation_curve(sections[1:], acts[1], basis, targets)
        assert len(curve) == basis.n_directions
        assert float(curve[-1]) == pytest.approx(1.0)
        assert float(curve[0]) < 1.0
        small_passes = ablation_curve(sections[1:], acts[1], basis, targets, max_elements=3000)  # 3 k per pass
        torch.testing.assert_close(small_passes, curve)
    with pytest.raises(ValueError, match="ks"):
        ablation_curve(sections[1:], acts[1], bases.lib[1], targets, ks=[99])


# ---------------------------------------------------------------- bad input


def test_bad_input_errors_say_what_is_wrong():
    sections = _net([3, 4, 2], seed=12)
    acts = _forward(sections, torch.randn(20, 3, dtype=F64))
    with pytest.raises(ValueError, match="pure function"):
        check_sections(sections, [acts[0], acts[1] + 1.0, acts[2]])
    with pytest.raises(ValueError, match="one more node activation"):
        interaction_basis(sections, acts[:2])
    with pytest.raises(ValueError, match="shape"):
        check_sections(sections[:1], [acts[0], acts[2]])
    with pytest.raises(ValueError, match="truncation"):
        interaction_basis(sections, acts, truncation=0.0)
    with pytest.raises(ValueError, match="final_basis"):
        interaction_basis(sections, acts, final_basis="svd")
    bad = acts[0].clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        whitened_pca(bad)
    with pytest.raises(ValueError, match="mode"):
        next(lib_jacobians(sections[0], acts[0], torch.eye(5, dtype=F64), mode="sideways"))


def test_plain_function_sections_and_multi_dimensional_nodes():
    """Callables work; node activations of any shape are flattened; float32 activations give float64 bases."""
    torch.manual_seed(13)
    conv = nn.Conv2d(1, 2, 2).float()
    sections = [nn.Sequential(conv, nn.ReLU()), lambda h: h.flatten(1).tanh()]
    acts = _forward(sections, torch.randn(80, 1, 3, 3))
    bases = interaction_basis(sections, acts)
    assert bases.lib[0].C.dtype == F64 and bases.lib[0].C.shape[0] == 10
    E = interaction_edges(sections, acts, bases.lib)
    assert all(torch.isfinite(e).all() for e in E)
    assert isinstance(bases.lib[0], Basis)


def test_interaction_graph_equals_bases_then_edges_with_and_without_jacobian_reuse():
    sections = _net([4, 6, 5, 3], seed=14)
    acts = _forward(sections, torch.randn(50, 4, dtype=F64))
    bases = interaction_basis(sections, acts)
    lib = interaction_edges(sections, acts, bases.lib)
    pca = interaction_edges(sections, acts, [*bases.pca[:-1], bases.lib[-1]])  # both graphs end at the logits
    for budget in (2**24, 40):  # everything kept for reuse / recomputed in small chunks
        with pytest.warns(UserWarning) if budget == 40 else _no_warning():
            graph = interaction_graph(sections, acts, max_jacobian_elements=budget)
        for got, want in zip(graph.lib_edges + graph.pca_edges, lib + pca):
            torch.testing.assert_close(got, want)
        for got, want in zip(graph.bases.lib, bases.lib):  # eigenvectors are defined up to sign
            signs = torch.sign((got.C * want.C).sum(0))
            torch.testing.assert_close(got.C * signs, want.C)


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield

    return ctx()
