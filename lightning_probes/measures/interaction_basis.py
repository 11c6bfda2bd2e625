"""Local Interaction Basis (Bushnaq et al. 2024, "The Local Interaction Basis", arXiv 2405.10928).

A network is cut at node points l = 0..L; ``sections[l]`` maps the node-l activations f^l to f^{l+1}. Each
node layer gets a basis in which its activations are (a) decorrelated, (b) stripped of directions the rest of
the network does not read, and (c) scaled by how strongly they matter downstream. SCIENCE.md §4, in order:

1. Bias folding: f^l carries a constant coordinate, placed FIRST here: f = (1, a) ∈ R^{p+1}. Centring goes
   through it: Yᵀ f = (1, a - μ). The centred Gram G = E[Yᵀf fᵀY] = diag(1, Cov(a)) = U D Uᵀ (the constant
   direction first, then the covariance eigenvectors by decreasing eigenvalue); eigenvalues ≤ the threshold
   are dropped (first truncation).
2. R = Y U D^{-1/2} (whitened PCA); the PCA basis is Y U.
3. M' = E_x[Jᵀ J], J = ∂f̂^{l+1}/∂f^l the Jacobian of the next layer's (already scaled) LIB features.
4. M = R⁺ M' R⁺ᵀ, R⁺ = D^{1/2} Uᵀ Y^{-1} the left inverse of R that maps whitened coordinates back onto the
   data (R⁺R = I): the Jacobian with respect to the whitened features w = Rᵀf is J R⁺ᵀ. The constant direction
   (the first whitened coordinate, w_0 = c) stays its own LIB direction, as in the authors' reference code: only
   the block M[1:, 1:] is diagonalised, V = diag(1, V₁) with M[1:, 1:] = V₁ Λ₁ V₁ᵀ, and Λ₀ = M[0, 0].
   Diagonalising the whole of M would mix the bias into the data directions (features with a non-zero mean).
   Eigenvalues ≤ the threshold are dropped (second truncation; the constant direction when Λ₀ is).
5. C^l = R V Λ^{1/2}; LIB features f̂^l = C^lᵀ f = Λ^{1/2} Vᵀ D^{-1/2} Uᵀ Yᵀ f: the constant feature
   f̂_0 = Λ₀^{1/2} c first, then the data features (zero mean over the probe set) by decreasing Λ.
   Layers are processed from the output backwards. The output layer's basis (``final_basis``): ``"logits"``
   (the paper's configs: the raw logits, no rotation, no constant coordinate, no centring; the default),
   ``"pca"`` (the output's PCA basis, which centres the logits and carries the constant) or ``"identity"``
   (the raw outputs plus the constant coordinate).

Edges E^l_ij = E_x[(∂f̂^{l+1}_i/∂f̂^l_j · f̂^l_j)²] (gradient × activation), in the LIB and the PCA basis (the
output node has the ``final_basis`` in both graphs). Sparsity figures are meant to be counted over the data
directions (:func:`data_edges`); the edges to or from a constant direction are reported apart
(:func:`constant_edge_share`).

Gradients (``gradients``): ``"plain"`` takes J at the data point; ``"integrated"`` takes the path average
J̄(f) = ∫₀¹ J(αf) dα along the straight path α·f from 0 to f in the bias-folded coordinates (the constant
coordinate is scaled too, as the reference code scales its whole folded input), by Gauss–Legendre quadrature
with ``integration_points`` nodes, for M' and for the edges alike: M' = E[J̄ᵀJ̄], E_ij = E[(J̄ C_invᵀ)_ij² f̂_j²]
(the integral inside the square, as the reference's squared edges). Because the biases ride on the scaled
constant coordinate, a bias-folded ReLU (or linear) section is positively homogeneous along that path,
F(αf) = αF(f), so its Jacobian is constant on it and the two options agree to round-off; with the constant held
at 1 they would not. On smooth activations (GELU, tanh) they differ.

How the constant coordinate enters a section: the section is evaluated with every parameter whose name ends
in ``bias`` multiplied by the constant coordinate c, and c is passed through to the next layer — exactly the
network with its biases folded into the weights, as in the paper. A plain function (not an ``nn.Module``) has
no visible biases: its internal constants are held fixed (so it is not homogeneous along the path).

Jacobians use ``torch.func`` (vmap over samples of jacrev / jacfwd) or a closed form for dense sections, in
sample chunks of at most 2^20 entries (and ``max_jacobian_elements``) so memory does not grow with N; M' is
accumulated in float64 and every eigen-problem runs in float64.

Symbols: N samples; p_l the width of node layer l (flattened); k_l the number of directions kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap

__all__ = [
    "Basis",
    "InteractionBasis",
    "InteractionGraph",
    "ablation_curve",
    "augment",
    "check_sections",
    "constant_edge_share",
    "data_edges",
    "edge_matrix",
    "edges_for_mass",
    "interaction_basis",
    "interaction_edges",
    "interaction_graph",
    "lib_jacobians",
    "path_quadrature",
    "pca_basis",
    "whitened_pca",
]

_F64 = torch.float64
Section = Callable[[Tensor], Tensor]
FinalBasis = Literal["logits", "pca", "identity"]
Gradients = Literal["plain", "integrated"]
_FINAL_BASES = ("logits", "pca", "identity")
_GRADIENTS = ("plain", "integrated")


@dataclass(frozen=True)
class Basis:
    """A basis of one node layer in bias-augmented coordinates f = (1, a).

    Attributes:
        C: (p+1, k) — features f̂ = Cᵀ f. When ``constant``, column 0 is the constant direction (f̂_0 constant over
            the data) and the other columns are the data directions by decreasing ``eigenvalues``.
        C_inv: (k, p+1) — left inverse (C_inv C = I): f = C_invᵀ f̂ on the data's span.
        eigenvalues: (k,) — the kept eigenvalues (Λ for LIB, D for PCA) in column order.
        spectrum: (m,) — every eigenvalue of the data directions before truncation, decreasing (for plots).
        constant: whether column 0 is the constant direction.
        constant_eigenvalue: () — the constant direction's eigenvalue before truncation (Λ₀ = M[0, 0] for LIB,
            1 for PCA), or None where the basis has no constant direction to speak of.
    """

    C: Tensor  # (p+1, k)
    C_inv: Tensor  # (k, p+1)
    eigenvalues: Tensor  # (k,)
    spectrum: Tensor  # (m,)
    constant: bool = False
    constant_eigenvalue: Tensor | None = None

    @property
    def n_directions(self) -> int:
        """k, the number of directions kept (the constant direction counts when kept)."""
        return self.C.shape[1]

    @property
    def n_data_directions(self) -> int:
        """The directions kept other than the constant one."""
        return self.C.shape[1] - int(self.constant)

    def features(self, activations: Tensor) -> Tensor:
        """f̂ = Cᵀ (1, a) for activations (N, *shape) -> (N, k), float64."""
        return augment(activations).to(_F64) @ self.C.to(activations.device, _F64)


@dataclass(frozen=True)
class WhitenedPCA:
    """Step 1-2 of §4 for one layer: centring Y, eigenvectors U and eigenvalues D of the centred Gram.

    Attributes:
        Y: (p+1, p+1) — Yᵀ f = (1, a - μ).
        Y_inv: (p+1, p+1) — its inverse (Yᵀ maps back with Y_inv).
        U: (p+1, m) — kept eigenvectors of the centred Gram, the constant direction e_0 first if kept.
        D: (m,) — their eigenvalues (1 for the constant direction).
        spectrum: (p+1,) — all eigenvalues before truncation, constant first then decreasing.
        constant: whether the constant direction was kept (it is U's first column then).
    """

    Y: Tensor
    Y_inv: Tensor
    U: Tensor
    D: Tensor
    spectrum: Tensor
    constant: bool = True

    @property
    def R(self) -> Tensor:
        """R = Y U D^{-1/2}, (p+1, m): whitened features w = Rᵀ f."""
        return self.Y @ self.U * self.D.rsqrt()

    @property
    def R_left_inverse(self) -> Tensor:
        """R⁺ = D^{1/2} Uᵀ Y^{-1}, (m, p+1): R⁺ R = I and f = R⁺ᵀ w on the data's span."""
        return self.D.sqrt()[:, None] * (self.U.T @ self.Y_inv)


@dataclass(frozen=True)
class InteractionBasis:
    """LIB and PCA bases of every node layer 0..L (index L is the output layer)."""

    lib: list[Basis]
    pca: list[Basis]


def augment(activations: Tensor) -> Tensor:
    """Flatten node activations (N, *shape) to (N, p) and prepend the constant coordinate: (N, p+1).

    Example:
        >>> augment(torch.tensor([[2.0, 3.0]])).tolist()
        [[1.0, 2.0, 3.0]]
    """
    if activations.ndim < 2:
        raise ValueError(f"activations must have shape (N, ...) with a feature axis, got {tuple(activations.shape)}.")
    flat = activations.reshape(len(activations), -1)  # (N, p)
    return torch.cat([flat.new_ones(len(flat), 1), flat], dim=1)  # (N, p+1)


def _check_finite(activations: Tensor, what: str) -> None:
    if not torch.isfinite(activations).all():
        raise ValueError(f"{what} contain NaN or Inf; the interaction basis needs finite activations.")


def _eigh_decreasing(matrix: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric eigendecomposition, eigenvalues decreasing: (m,), (m, m).

    Matrices this small are solved on one thread: multithreaded LAPACK gains nothing at this size and, on a
    busy CPU, its spin-waiting threads made a 100x100 ``eigh`` ~300x slower (measured, 0.5 s vs 1.4 ms).
    """
    threads = torch.get_num_threads()
    small = matrix.shape[0] <= 1024 and threads > 1
    if small:
        torch.set_num_threads(1)
    try:
        evals, evecs = torch.linalg.eigh(matrix)  # ascending
    finally:
        if small:
            torch.set_num_threads(threads)
    return evals.flip(0), evecs.flip(1)


def _keep(eigenvalues: Tensor, truncation: float) -> Tensor:
    """Mask of eigenvalues above the threshold AND above float64 round-off (so D^{-1/2} is never inf/NaN)."""
    top = eigenvalues.abs().max() if eigenvalues.numel() else eigenvalues.new_zeros(())
    floor = top * len(eigenvalues) * torch.finfo(_F64).eps
    return (eigenvalues > truncation) & (eigenvalues > floor)


def whitened_pca(activations: Tensor, truncation: float = 1e-6) -> WhitenedPCA:
    """Centred Gram eigendecomposition with the bias folded in (SCIENCE.md §4 steps 1-2).

    The centred Gram of f = (1, a) is diag(1, Cov(a)) exactly, so the constant direction is its own eigenvector
    (eigenvalue 1) and only Cov(a) (biased, 1/N) is diagonalised — equal to diagonalising Yᵀ E[f fᵀ] Y (tested).

    Args:
        activations: (N, *shape) node activations (without the constant coordinate).
        truncation: eigenvalues ≤ this are dropped (absolute threshold, as in the reference implementation).

    Returns:
        :class:`WhitenedPCA` in float64.

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
        >>> pca = whitened_pca(a)
        >>> pca.D.tolist(), pca.U.shape
        ([1.0, 2.0, 0.5], torch.Size([3, 3]))
    """
    _check_finite(activations, "activations")
    if activations.ndim == 0 or len(activations) < 2:
        raise ValueError(f"need at least 2 samples to centre the activations, got shape {tuple(activations.shape)}.")
    if not truncation > 0 or not math.isfinite(truncation):  # `not >`: NaN is refused too
        raise ValueError(f"truncation must be a positive finite threshold, got {truncation}.")
    a = activations.reshape(len(activations), -1).to(_F64)  # (N, p)
    n, p = a.shape
    mu = a.mean(0)  # (p,)
    centred = a - mu
    cov = centred.T @ centred / n  # (p, p)
    evals, evecs = _eigh_decreasing(cov)
    spectrum = torch.cat([evals.new_ones(1), evals])  # (p+1,) constant first
    full = torch.zeros(p + 1, p + 1, dtype=_F64, device=a.device)  # (p+1, p+1) eigenvectors of diag(1, Cov)
    full[0, 0] = 1.0
    full[1:, 1:] = evecs
    keep = _keep(spectrum, truncation)
    Y = torch.eye(p + 1, dtype=_F64, device=a.device)
    Y[0, 1:] = -mu  # Yᵀ f = (1, a - μ)
    Y_inv = torch.eye(p + 1, dtype=_F64, device=a.device)
    Y_inv[0, 1:] = mu
    return WhitenedPCA(Y=Y, Y_inv=Y_inv, U=full[:, keep], D=spectrum[keep], spectrum=spectrum,
                       constant=bool(keep[0]))


def pca_basis(pca: WhitenedPCA) -> Basis:
    """The PCA baseline basis Y U (unscaled), with left inverse Uᵀ Y^{-1}; the constant direction first."""
    return Basis(C=pca.Y @ pca.U, C_inv=pca.U.T @ pca.Y_inv, eigenvalues=pca.D, spectrum=pca.spectrum[1:],
                 constant=pca.constant, constant_eigenvalue=pca.spectrum[0])


def _identity_basis(width: int, device: torch.device) -> Basis:
    """The raw outputs plus the constant coordinate: f̂ = (1, a)."""
    eye = torch.eye(width + 1, dtype=_F64, device=device)
    ones = torch.ones(width + 1, dtype=_F64, device=device)
    return Basis(C=eye, C_inv=eye, eigenvalues=ones, spectrum=ones[1:], constant=True, constant_eigenvalue=ones[0])


def _logits_basis(width: int, device: torch.device) -> Basis:
    """The raw logits as in the paper's configs: f̂ = a (no rotation, no constant coordinate, no centring)."""
    C = torch.zeros(width + 1, width, dtype=_F64, device=device)  # (q+1, q): drops the constant coordinate
    C[1:] = torch.eye(width, dtype=_F64, device=device)
    ones = torch.ones(width, dtype=_F64, device=device)
    return Basis(C=C, C_inv=C.T.clone(), eigenvalues=ones, spectrum=ones)


def _output_basis(final_basis: str, pca: Basis, last: Tensor) -> Basis:
    if final_basis == "pca":
        return pca
    width = last[0].numel()
    return _identity_basis(width, last.device) if final_basis == "identity" else _logits_basis(width, last.device)


def path_quadrature(points: int) -> tuple[Tensor, Tensor]:
    """Gauss–Legendre nodes α_k ∈ (0, 1) and weights w_k (Σ w_k = 1) for ∫₀¹ g(α) dα ≈ Σ_k w_k g(α_k).

    Exact for polynomials of degree ≤ 2·points − 1.

    Example:
        >>> alphas, weights = path_quadrature(2)
        >>> [round(a, 6) for a in alphas.tolist()], weights.tolist()
        ([0.211325, 0.788675], [0.5, 0.5])
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 1:
        raise ValueError(f"integration_points must be a positive integer, got {points!r}.")
    nodes, weights = np.polynomial.legendre.leggauss(points)  # on [-1, 1]
    return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)


def _check_gradients(gradients: str, points: int) -> None:
    if gradients not in _GRADIENTS:
        raise ValueError(f"gradients must be 'plain' (at the data point) or 'integrated' (Gauss–Legendre over the "
                         f"path α·f), got {gradients!r}.")
    path_quadrature(points)  # validates the number of points


def _folded(section: Section, in_shape: torch.Size) -> Callable[[Tensor], Tensor]:
    """One-sample function f = (c, a) (p+1,) -> (c, section(a) flattened) (q+1,), biases scaled by c."""
    if isinstance(section, nn.Module):
        params = {name: t.detach() for name, t in section.named_parameters()}
        buffers = {name: t.detach() for name, t in section.named_buffers()}
        bias_names = [name for name in params if name.rsplit(".", 1)[-1] == "bias"]

        def run(a: Tensor, c: Tensor) -> Tensor:
            scaled = dict(params)
            for name in bias_names:  # bias folded into the weights: it multiplies the constant coordinate
                scaled[name] = params[name] * c
            return functional_call(section, {**scaled, **buffers}, (a,))
    else:

        def run(a: Tensor, c: Tensor) -> Tensor:
            return section(a)

    def folded(f: Tensor) -> Tensor:  # (p+1,) -> (q+1,)
        c = f[0]
        out = run(f[1:].reshape(1, *in_shape), c).reshape(-1)  # (q,)
        return torch.cat([c.reshape(1), out])

    return folded


# Entries of the Jacobian chunks a pass works on at once. Smaller chunks cost no time (each sample's product is
# still a large matrix product) but bound the float64 temporaries of M' and the edges: on the digits MLP
# 64-256-256-10 (N = 256) chunks of 2^24 entries added 465 MiB of peak memory to a probe.
_WORK_ELEMENTS = 2**20


def _sample_chunk(out_dim: int, in_dim: int, max_elements: int, what: str) -> tuple[int, int | None]:
    """Samples per chunk, and an output-row chunk for jacrev/jacfwd when one sample's Jacobian is too big."""
    per_sample = out_dim * in_dim
    if per_sample <= max_elements:
        return max(1, min(max_elements, _WORK_ELEMENTS) // per_sample), None
    warnings.warn(
        f"{what}: one sample's Jacobian has {out_dim}x{in_dim} entries (> max_jacobian_elements={max_elements}); "
        "computing it one sample at a time (autograd routes also split its rows/columns). Raise "
        "max_jacobian_elements if memory allows, for speed.",
        stacklevel=3,
    )
    return 1, max(1, max_elements // max(out_dim, in_dim))


def lib_jacobians(
    section: Section,
    activations: Tensor,
    next_basis: Tensor,
    max_jacobian_elements: int = 2**24,
    mode: Literal["auto", "rev", "fwd", "dense"] = "auto",
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> Iterator[Tensor]:
    """Per-sample J = ∂f̂^{l+1}/∂f^l = C^{l+1 ᵀ} ∂F(f)/∂f with F the bias-folded section, in sample chunks.

    With ``gradients="integrated"`` each J is the path average J̄(f) = ∫₀¹ J(αf) dα ≈ Σ_k w_k J(α_k f) over
    the Gauss–Legendre nodes of :func:`path_quadrature` (the constant coordinate scaled along the path too);
    dense sections average the slopes instead: J̄ = C^{l+1 ᵀ} diag(Σ_k w_k σ'(α_k z)) [b W], since z(αf) = α z.

    Batched with ``vmap`` over samples of ``jacrev`` (few outputs) or ``jacfwd`` (few inputs); no Python loop
    over output dimensions. A dense section — ``nn.Linear``, or ``nn.Sequential(nn.Linear, elementwise
    activation)`` on flat activations — takes the closed form instead: ∂F/∂(c, a) = diag(σ'(z)) [b W] with
    z = W a + b c, so J = C^{l+1 ᵀ} of it is one batched matrix product (equal to the autograd Jacobians, tested;
    σ' comes from autograd on z, so kinks such as ReLU at 0 get the same value).

    Args:
        section: maps node-l activations (B, *shape) to node-(l+1) activations (B, *shape').
        activations: (N, *shape) node-l activations.
        next_basis: (q+1, k) — C^{l+1}, the next layer's basis in its augmented coordinates.
        max_jacobian_elements: bound on the entries of the Jacobians held at once (sets the sample chunk).
        mode: ``"rev"`` (vjp per output), ``"fwd"`` (jvp per input), ``"dense"`` (the closed form; dense
            sections only) or ``"auto"`` (the closed form when the section is dense, else the cheaper of the two).
        gradients: ``"plain"`` (J at the data point) or ``"integrated"`` (J averaged over the path α·f).
        integration_points: Gauss–Legendre nodes of the integrated gradients.

    Yields:
        (B, k, p+1) Jacobian chunks in the activations' dtype, in sample order.

    Example:
        >>> lin = nn.Linear(2, 1).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[2.0, 3.0]])); _ = lin.bias.fill_(5.0)
        >>> J = next(lib_jacobians(lin, torch.zeros(1, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)))
        >>> J[0].tolist()  # rows: constant, output; columns: constant, a_1, a_2
        [[1.0, 0.0, 0.0], [5.0, 2.0, 3.0]]
    """
    if mode not in ("auto", "rev", "fwd", "dense"):
        raise ValueError(f"mode must be 'auto', 'rev', 'fwd' or 'dense', got {mode!r}.")
    if max_jacobian_elements < 1:
        raise ValueError(f"max_jacobian_elements must be positive, got {max_jacobian_elements}.")
    _check_gradients(gradients, integration_points)
    _check_finite(activations, "activations")
    path = path_quadrature(integration_points) if gradients == "integrated" else None
    dense = _dense_parts(section) if activations.dim() == 2 else None
    if next_basis.ndim != 2 or (dense is not None and next_basis.shape[0] != dense[0].out_features + 1):
        expect = "(q+1, k)" if dense is None else f"({dense[0].out_features + 1}, k)"
        raise ValueError(f"next_basis must be the next layer's basis C {expect} in augmented coordinates, got "
                         f"shape {tuple(next_basis.shape)}.")
    if mode == "dense" and dense is None:
        raise ValueError("mode='dense' needs an nn.Linear or nn.Sequential(nn.Linear, elementwise activation) "
                         f"section on flat (N, p) activations; got {type(section).__name__} on "
                         f"{tuple(activations.shape)}.")
    if dense is not None and mode in ("auto", "dense"):
        yield from _dense_jacobians(*dense, activations, next_basis, max_jacobian_elements, path)
        return
    f = augment(activations)  # (N, p+1)
    folded = _folded(section, activations.shape[1:])
    C_next = next_basis.to(device=f.device, dtype=f.dtype)  # (q+1, k)

    def lib_features(x: Tensor) -> Tensor:  # (p+1,) -> (k,)
        return folded(x) @ C_next

    k, width = C_next.shape[1], f.shape[1]
    rows, inner = _sample_chunk(k, width, max_jacobian_elements, "lib_jacobians")
    use_rev = mode == "rev" or (mode == "auto" and k <= width)
    jac = jacrev(lib_features, chunk_size=inner) if use_rev else _jacobian_forward(lib_features, width, inner)
    batched = vmap(jac)
    with torch.enable_grad():  # monitors call this under no_grad; torch.func needs the autograd machinery on
        for start in range(0, len(f), rows):
            chunk = f[start : start + rows]  # (B, p+1)
            if path is None:
                yield batched(chunk)  # (B, k, p+1)
                continue
            alphas, weights = path
            J = batched(chunk * float(alphas[0])) * float(weights[0])
            for alpha, weight in zip(alphas[1:].tolist(), weights[1:].tolist()):
                J += batched(chunk * alpha) * weight  # the whole folded input scaled: c too
            yield J  # (B, k, p+1)


# activations applied elementwise: the Jacobian of such a section is diagonal after its Linear layer
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.Softplus, nn.Identity)


def _dense_parts(section: Section) -> tuple[nn.Linear, nn.Module | None] | None:
    """(linear, activation or None) if the section is Linear or Sequential(Linear, elementwise activation)."""
    if isinstance(section, nn.Linear):
        return section, None
    if (isinstance(section, nn.Sequential) and len(section) == 2 and isinstance(section[0], nn.Linear)
            and type(section[1]) in _ELEMENTWISE):
        return section[0], section[1]
    return None


def _dense_jacobians(
    linear: nn.Linear,
    activation: nn.Module | None,
    activations: Tensor,
    next_basis: Tensor,
    max_elements: int,
    path: tuple[Tensor, Tensor] | None = None,
) -> Iterator[Tensor]:
    """Closed-form :func:`lib_jacobians` of a dense section, in the same sample chunks (``path``: the
    quadrature of the integrated gradients, or None for plain ones)."""
    f = augment(activations)  # (N, p+1)
    W = linear.weight.detach().to(f.dtype)  # (q, p)
    b = linear.bias.detach().to(f.dtype) if linear.bias is not None else W.new_zeros(len(W))
    Wb = torch.cat([b[:, None], W], dim=1)  # (q, p+1): ∂z/∂(c, a)
    C_next = next_basis.to(device=f.device, dtype=f.dtype)  # (q+1, k)
    const_row = torch.zeros_like(f[0])
    const_row[0] = 1.0  # the constant coordinate passes through: ∂c/∂(c, a) = e_0
    const_part = torch.outer(C_next[0], const_row)  # (k, p+1)
    k = C_next.shape[1]
    rows, _ = _sample_chunk(k, max(f.shape[1], len(W)), max_elements, "lib_jacobians")  # (B, k, q|p+1) blocks
    for start in range(0, len(f), rows):
        z = f[start : start + rows] @ Wb.T  # (B, q)
        if activation is None:  # linear: the slope is 1 everywhere on the path too
            slope = torch.ones_like(z)
        elif path is None:
            slope = _elementwise_slope(activation, z)
        else:  # z(αf) = α z(f): the path average of the slope, Σ_k w_k σ'(α_k z)
            alphas, weights = path
            slope = _elementwise_slope(activation, z * float(alphas[0])) * float(weights[0])
            for alpha, weight in zip(alphas[1:].tolist(), weights[1:].tolist()):
                slope += _elementwise_slope(activation, z * alpha) * weight
        scaled = C_next[1:].T[None] * slope[:, None, :]  # (B, k, q) = C_nextᵀ diag(σ'(z))
        J = scaled @ Wb  # (B, k, p+1)
        del scaled
        yield J.add_(const_part)


def _elementwise_slope(activation: nn.Module, z: Tensor) -> Tensor:
    """σ'(z) of an elementwise activation, by autograd (one backward pass; same values at kinks as jacrev)."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        (slope,) = torch.autograd.grad(activation(z).sum(), z)
    return slope


def _jacobian_forward(fn: Callable[[Tensor], Tensor], width: int, chunk: int | None) -> Callable[[Tensor], Tensor]:
    """Forward-mode Jacobian (k, width) of a one-sample function: one jvp per input basis vector, vmapped in
    chunks (``torch.func.jacfwd`` has no chunking)."""

    def jac(x: Tensor) -> Tensor:
        eye = torch.eye(width, dtype=x.dtype, device=x.device)  # (width, width) tangents
        column = lambda v: jvp(fn, (x,), (v,))[1]  # noqa: E731  (k,) = J v
        return vmap(column, chunk_size=chunk, out_dims=1)(eye)  # (k, width)

    return jac


def check_sections(sections: Sequence[Section], activations: Sequence[Tensor], rtol: float = 1e-4) -> None:
    """Raise if some section does not map node l's activations to node l+1's (hidden state, wrong order...).

    Example:
        >>> check_sections([nn.ReLU()], [torch.tensor([[-1.0, 2.0]]), torch.tensor([[0.0, 2.0]])])
    """
    if len(activations) != len(sections) + 1:
        raise ValueError(
            f"need one more node activation than sections (f^0..f^L around L sections); got {len(sections)} "
            f"sections and {len(activations)} activations."
        )
    n = len(activations[0])
    for i, act in enumerate(activations):
        if len(act) != n:
            raise ValueError(f"activations[{i}] has {len(act)} samples but activations[0] has {n}.")
        _check_finite(act, f"activations[{i}]")
    with torch.no_grad():
        for i, section in enumerate(sections):
            try:
                got = section(activations[i])
            except Exception as err:
                raise ValueError(
                    f"sections[{i}] cannot run on activations[{i}] (shape {tuple(activations[i].shape)}, dtype "
                    f"{activations[i].dtype}): {type(err).__name__}: {err}"
                ) from err
            want = activations[i + 1]
            if got.shape != want.shape:
                raise ValueError(
                    f"sections[{i}] maps activations[{i}] to shape {tuple(got.shape)} but activations[{i + 1}] "
                    f"has shape {tuple(want.shape)}: sections must run from each node point to the next."
                )
            scale = want.abs().max().clamp_min(1.0)
            err = (got - want).abs().max()
            if err > rtol * scale:
                raise ValueError(
                    f"sections[{i}](activations[{i}]) differs from activations[{i + 1}] by {float(err):.3g}: a "
                    "section must be a pure function of its node activations (no hidden state, dropout or "
                    "batch statistics in train mode), running from one node point to the next."
                )


def _lib_layer(
    section: Section,
    activations: Tensor,
    next_basis: Basis,
    pca: WhitenedPCA,
    truncation: float,
    max_jacobian_elements: int,
    kept: list[Tensor] | None = None,
    gradients: Gradients = "plain",
    integration_points: int = 16,
    mix_constant: bool = False,
) -> Basis:
    """Steps 3-5 of §4 for one layer, given the next layer's (scaled) basis.

    When ``kept`` is a list and all N Jacobians fit in ``max_jacobian_elements``, they are appended to it so
    the LIB edges can reuse them instead of differentiating again. ``mix_constant`` diagonalises the whole of M
    (the constant direction mixed into the data directions): the first version of this module, kept only so the
    benchmark can show what keeping the constant apart changes.
    """
    width = pca.Y.shape[0]
    keep_all = kept is not None and len(activations) * next_basis.n_directions * width <= max_jacobian_elements
    M_dash = torch.zeros(width, width, dtype=_F64, device=pca.Y.device)  # (p+1, p+1)
    for J in lib_jacobians(section, activations, next_basis.C, max_jacobian_elements, gradients=gradients,
                           integration_points=integration_points):
        if keep_all:
            kept.append(J)
        J = J.to(_F64).reshape(-1, width)  # (B k', p+1): Σ_b J_bᵀ J_b as one product
        M_dash.addmm_(J.T, J)
    M_dash /= len(activations)
    R, R_plus = pca.R, pca.R_left_inverse  # (p+1, m), (m, p+1)
    M = R_plus @ M_dash @ R_plus.T  # (m, m)
    M = (M + M.T) / 2  # symmetric up to round-off; eigh reads one triangle
    if not pca.constant or mix_constant:
        Lam, V = _eigh_decreasing(M)
        keep = _keep(Lam, truncation)
        Lam_k, V_k = Lam[keep], V[:, keep]  # (k,), (m, k)
        return _scaled_basis(R, R_plus, Lam_k, V_k, spectrum=Lam, constant=False, constant_eigenvalue=None)
    # the constant direction (whitened coordinate 0) stays its own: V = diag(1, V₁), Λ₀ = M[0, 0]
    Lam1, V1 = _eigh_decreasing(M[1:, 1:])  # (m-1,), (m-1, m-1)
    Lam = torch.cat([M[0, 0].reshape(1), Lam1])  # (m,) constant first
    V = torch.zeros_like(M)
    V[0, 0] = 1.0
    V[1:, 1:] = V1
    keep = _keep(Lam, truncation)  # the same floor for both: relative to the largest eigenvalue of either
    Lam_k, V_k = Lam[keep], V[:, keep]
    return _scaled_basis(R, R_plus, Lam_k, V_k, spectrum=Lam1, constant=bool(keep[0]), constant_eigenvalue=M[0, 0])


def _scaled_basis(
    R: Tensor, R_plus: Tensor, Lam_k: Tensor, V_k: Tensor, spectrum: Tensor, constant: bool,
    constant_eigenvalue: Tensor | None,
) -> Basis:
    C = R @ V_k * Lam_k.sqrt()  # (p+1, k) = R V Λ^{1/2}
    C_inv = (V_k * Lam_k.rsqrt()).T @ R_plus  # (k, p+1) = Λ^{-1/2} Vᵀ R⁺
    return Basis(C=C, C_inv=C_inv, eigenvalues=Lam_k, spectrum=spectrum, constant=constant,
                 constant_eigenvalue=constant_eigenvalue)


def interaction_basis(
    sections: Sequence[Section],
    activations: Sequence[Tensor],
    truncation: float = 1e-6,
    final_basis: FinalBasis = "logits",
    max_jacobian_elements: int = 2**24,
    check: bool = True,
    *,
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> InteractionBasis:
    """LIB and PCA bases of node layers 0..L, from the output layer backwards (SCIENCE.md §4).

    Every LIB basis with a constant direction has it in column 0 (f̂_0 = Λ₀^{1/2}, constant over the data) and
    its data directions (features of zero mean over the probe set) after it, by decreasing Λ.

    Args:
        sections: L callables; ``sections[l]`` maps node-l activations (N, *shape_l) to node l+1's.
            ``nn.Module`` sections have their ``bias`` parameters folded onto the constant coordinate.
        activations: L+1 tensors f^0..f^L (N, *shape_l), the same N samples at every node point.
        truncation: eigenvalue threshold of both truncations (absolute).
        final_basis: the output layer's basis: ``"logits"`` (raw logits, no constant coordinate — the paper's),
            ``"pca"`` (its PCA basis Y U: centred, with the constant) or ``"identity"`` (raw, plus the constant).
        max_jacobian_elements: memory bound for the batched Jacobians (see :func:`lib_jacobians`).
        check: verify ``sections[l](f^l) == f^{l+1}`` first (see :func:`check_sections`).
        gradients: ``"plain"`` or ``"integrated"`` Jacobians for M' (see :func:`lib_jacobians`).
        integration_points: Gauss–Legendre nodes of the integrated gradients.

    Returns:
        :class:`InteractionBasis` with ``lib[l]`` and ``pca[l]`` for every node layer (float64).

    Warns:
        UserWarning: a node layer is at least as wide as the number of samples, so its centred activations span
            at most N − 1 directions and both LIB and PCA are capped there.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> a0 = torch.randn(64, 3, dtype=torch.float64)
        >>> lin = nn.Linear(3, 2, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]))  # ignores a_3
        ...     a1 = lin(a0)
        >>> bases = interaction_basis([lin], [a0, a1])
        >>> bases.pca[0].n_data_directions, bases.lib[0].n_data_directions  # 3 present, 2 used
        (3, 2)
        >>> bases.lib[0].constant  # the constant carries the mean logits downstream
        True
    """
    bases, _ = _backward_pass(sections, activations, truncation, final_basis, max_jacobian_elements, check, False,
                              gradients, integration_points)
    return bases


def _warn_capped(activations: Sequence[Tensor]) -> None:
    n = len(activations[0])
    capped = [(l, a[0].numel()) for l, a in enumerate(activations[:-1]) if a[0].numel() >= n]
    if capped:
        where = ", ".join(f"node layer {l} (width {p})" for l, p in capped)
        warnings.warn(
            f"only {n} probe samples for {where}: centred activations of N samples span at most N - 1 = {n - 1} "
            f"directions, so LIB and PCA both keep at most {n - 1} data directions there. Use more probe samples "
            "than the layer is wide for uncapped counts.",
            stacklevel=3,
        )


def _backward_pass(
    sections: Sequence[Section],
    activations: Sequence[Tensor],
    truncation: float,
    final_basis: str,
    max_jacobian_elements: int,
    check: bool,
    keep_jacobians: bool,
    gradients: Gradients = "plain",
    integration_points: int = 16,
    mix_constant: bool = False,
) -> tuple[InteractionBasis, list[list[Tensor]]]:
    if truncation <= 0 or not math.isfinite(truncation):
        raise ValueError(f"truncation must be a positive finite threshold, got {truncation}.")
    if final_basis not in _FINAL_BASES:
        raise ValueError(f"final_basis must be 'logits' (raw logits, the paper's), 'pca' or 'identity', got "
                         f"{final_basis!r}.")
    _check_gradients(gradients, integration_points)
    if not sections:
        raise ValueError("need at least one section (two node layers).")
    if check:
        check_sections(sections, activations)
    elif len(activations) != len(sections) + 1:
        raise ValueError(f"need len(activations) == len(sections) + 1, got {len(activations)} and {len(sections)}.")
    _warn_capped(activations)
    pcas = [whitened_pca(a, truncation) for a in activations]
    pca = [pca_basis(w) for w in pcas]
    lib: list[Basis] = [_output_basis(final_basis, pca[-1], activations[-1])]
    jacobians: list[list[Tensor]] = [[] for _ in sections]  # per layer: kept LIB Jacobian chunks (or empty)
    for l in range(len(sections) - 1, -1, -1):  # output backwards: layer l needs layer l+1's scaled basis
        kept = jacobians[l] if keep_jacobians else None
        basis = _lib_layer(sections[l], activations[l], lib[0], pcas[l], truncation, max_jacobian_elements, kept,
                           gradients, integration_points, mix_constant)
        lib.insert(0, basis)
    return InteractionBasis(lib=lib, pca=pca), jacobians


@dataclass(frozen=True)
class InteractionGraph:
    """Bases of node layers 0..L and the edge matrices between consecutive layers.

    Attributes:
        bases: the LIB and PCA bases.
        lib_edges: L tensors (k_{l+1}, k_l), edges in the LIB basis.
        pca_edges: L tensors, edges in the PCA basis; the output node has the same basis as in the LIB graph
            (the ``final_basis``), so both graphs end at the same output coordinates.
    """

    bases: InteractionBasis
    lib_edges: list[Tensor]
    pca_edges: list[Tensor]

    @property
    def pca_graph_bases(self) -> list[Basis]:
        """The bases of the PCA graph's nodes: PCA at layers 0..L-1, the final basis at the output."""
        return [*self.bases.pca[:-1], self.bases.lib[-1]]


def interaction_graph(
    sections: Sequence[Section],
    activations: Sequence[Tensor],
    truncation: float = 1e-6,
    final_basis: FinalBasis = "logits",
    max_jacobian_elements: int = 2**24,
    check: bool = True,
    *,
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> InteractionGraph:
    """LIB and PCA bases plus both edge graphs in one call (arguments as :func:`interaction_basis`).

    Equal to :func:`interaction_basis` followed by :func:`interaction_edges` on ``.lib`` and on
    :attr:`InteractionGraph.pca_graph_bases` (tested), but the LIB edges reuse the Jacobians of the M' pass when
    they fit in ``max_jacobian_elements``. ``gradients`` applies to M' and to both graphs' edges.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = [nn.Sequential(nn.Linear(3, 4), nn.Tanh()).double(), nn.Linear(4, 2).double()]
        >>> acts = [torch.randn(50, 3, dtype=torch.float64)]
        >>> with torch.no_grad():
        ...     acts += [net[0](acts[0])]; acts += [net[1](acts[1])]
        >>> graph = interaction_graph(net, acts)
        >>> [tuple(e.shape) for e in graph.lib_edges], [tuple(e.shape) for e in graph.pca_edges]
        ([(3, 4), (2, 3)], [(5, 4), (2, 5)])
    """
    bases, jacobians = _backward_pass(sections, activations, truncation, final_basis, max_jacobian_elements, check,
                                      True, gradients, integration_points)
    options = dict(gradients=gradients, integration_points=integration_points)
    lib_edges = []
    for l, section in enumerate(sections):
        chunks = jacobians[l] or lib_jacobians(section, activations[l], bases.lib[l + 1].C, max_jacobian_elements,
                                               **options)
        lib_edges.append(_edges_from_jacobians(chunks, activations[l], bases.lib[l], bases.lib[l + 1].n_directions))
        jacobians[l] = []  # this layer's Jacobians are no longer needed
    graph = InteractionGraph(bases=bases, lib_edges=lib_edges, pca_edges=[])
    graph.pca_edges.extend(interaction_edges(sections, activations, graph.pca_graph_bases, max_jacobian_elements,
                                             **options))
    return graph


def edge_matrix(
    section: Section,
    activations: Tensor,
    basis: Basis,
    next_basis: Basis,
    max_jacobian_elements: int = 2**24,
    *,
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> Tensor:
    """E_ij = E_x[(∂f̂^{l+1}_i/∂f̂^l_j · f̂^l_j)²] between one node layer and the next, (k_{l+1}, k_l) float64.

    ∂f̂^{l+1}/∂f̂^l = J C_invᵀ with J from :func:`lib_jacobians` (the chain rule through f = C_invᵀ f̂; equal to
    differentiating f̂^{l+1} as a function of f̂^l directly — tested). With ``gradients="integrated"`` J is the
    path average J̄, so E_ij = E_x[((J̄ C_invᵀ)_ij f̂_j)²]: the integral inside the square.

    Example:
        >>> lin = nn.Linear(1, 1, bias=False).double()
        >>> with torch.no_grad():
        ...     _ = lin.weight.fill_(3.0)
        >>> I = torch.eye(2, dtype=torch.float64)
        >>> b = Basis(C=I, C_inv=I, eigenvalues=torch.ones(2, dtype=torch.float64), spectrum=torch.ones(1))
        >>> edge_matrix(lin, torch.tensor([[1.0], [2.0]], dtype=torch.float64), b, b).tolist()  # (3·a)² averaged
        [[1.0, 0.0], [0.0, 22.5]]
    """
    chunks = lib_jacobians(section, activations, next_basis.C, max_jacobian_elements, gradients=gradients,
                           integration_points=integration_points)
    return _edges_from_jacobians(chunks, activations, basis, next_basis.n_directions)


def _edges_from_jacobians(chunks: Iterable[Tensor], activations: Tensor, basis: Basis, n_next: int) -> Tensor:
    """E (n_next, k) from Jacobian chunks (B, n_next, p+1) of the next layer's features, in sample order."""
    C = basis.C.to(device=activations.device, dtype=_F64)  # (p+1, k)
    C_inv = basis.C_inv.to(device=activations.device, dtype=_F64)  # (k, p+1)
    f_hat = augment(activations).to(_F64) @ C  # (N, k)
    E = torch.zeros(n_next, basis.n_directions, dtype=_F64, device=activations.device)
    start = 0
    for J in chunks:
        J_hat = J.to(_F64) @ C_inv.T  # (B, k', k) = ∂f̂^{l+1}/∂f̂^l
        J_hat.mul_(f_hat[start : start + len(J), None, :]).square_()  # in place: one float64 chunk alive
        E += J_hat.sum(0)
        start += len(J)
        del J_hat
    return E / len(activations)


def interaction_edges(
    sections: Sequence[Section],
    activations: Sequence[Tensor],
    bases: Sequence[Basis],
    max_jacobian_elements: int = 2**24,
    *,
    gradients: Gradients = "plain",
    integration_points: int = 16,
) -> list[Tensor]:
    """Edge matrices between consecutive node layers: L tensors (k_{l+1}, k_l), in the given bases.

    Pass ``InteractionBasis.lib`` for LIB edges, or :attr:`InteractionGraph.pca_graph_bases` (PCA, ending at the
    same output basis) for the PCA baseline.
    """
    if len(bases) != len(activations) or len(sections) + 1 != len(activations):
        raise ValueError(
            f"need L sections, L+1 activations and L+1 bases; got {len(sections)}, {len(activations)}, {len(bases)}."
        )
    return [
        edge_matrix(sections[l], activations[l], bases[l], bases[l + 1], max_jacobian_elements, gradients=gradients,
                    integration_points=integration_points)
        for l in range(len(sections))
    ]


def data_edges(edges: Tensor, basis: Basis, next_basis: Basis) -> Tensor:
    """The edges between data directions only: (k_{l+1} − c', k_l − c), the constant directions' row/column removed.

    Sparsity figures (:func:`edges_for_mass`) are counted on this block: the constant→constant edge alone can
    hold almost all of the edge mass (the biases at initialisation), which says nothing about the data directions.

    Example:
        >>> I = torch.eye(2, dtype=torch.float64)
        >>> b = Basis(C=I, C_inv=I, eigenvalues=torch.ones(2), spectrum=torch.ones(1), constant=True)
        >>> data_edges(torch.tensor([[9.0, 1.0], [2.0, 3.0]]), b, b).tolist()
        [[3.0]]
    """
    return edges[int(next_basis.constant):, int(basis.constant):]


def constant_edge_share(edges: Tensor, basis: Basis, next_basis: Basis) -> float:
    """Share of the edge mass on edges to or from a constant direction, in [0, 1] (0 if there is no mass).

    Example:
        >>> I = torch.eye(2, dtype=torch.float64)
        >>> b = Basis(C=I, C_inv=I, eigenvalues=torch.ones(2), spectrum=torch.ones(1), constant=True)
        >>> constant_edge_share(torch.tensor([[9.0, 1.0], [2.0, 3.0]]), b, b)
        0.8
    """
    total = float(edges.to(_F64).sum())
    if total <= 0:
        return 0.0
    return (total - float(data_edges(edges, basis, next_basis).to(_F64).sum())) / total


def edges_for_mass(edges: Tensor, fraction: float) -> int:
    """Fewest edges whose summed weight reaches ``fraction`` of the total edge mass (0 if there is no mass).

    Example:
        >>> edges_for_mass(torch.tensor([[5.0, 3.0], [1.0, 1.0]]), 0.9)
        3
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}.")
    if not bool(torch.isfinite(edges).all()) or bool((edges < 0).any()):
        raise ValueError("edges must be finite and non-negative (squared attributions); got NaN, Inf or negative "
                         "values.")
    values = edges.reshape(-1).to(_F64).sort(descending=True).values  # (E,)
    total = values.sum()
    if total <= 0:
        return 0
    cumulative = values.cumsum(0)
    index = int(torch.searchsorted(cumulative, fraction * total))  # first position with cumsum ≥ target
    return min(index + 1, len(values))


def ablation_curve(
    sections: Sequence[Section],
    activations: Tensor,
    basis: Basis,
    targets: Tensor,
    ks: Sequence[int] | None = None,
    max_elements: int = 2**24,
) -> Tensor:
    """Accuracy when node layer l keeps only its top-k basis directions (node ablation), for each k.

    The activations are projected to f_k = C_inv[:k]ᵀ C[:, :k]ᵀ f and run through the remaining bias-folded
    sections (the constant coordinate of f_k scales the downstream biases, as in the folded network); accuracy
    is argmax of the output against ``targets``.

    Args:
        sections: the sections from node l to the output (``sections[l:]`` of the full list).
        activations: (N, *shape) node-l activations.
        basis: node l's basis (LIB or PCA), directions in order of importance.
        targets: (N,) class indices.
        ks: numbers of directions to keep (default 1..k).
        max_elements: bound on the projected activations run through the chain at once (several k per pass).

    Returns:
        (len(ks),) accuracies in [0, 1], float64.
    """
    if len(targets) != len(activations):
        raise ValueError(f"got {len(activations)} activations but {len(targets)} targets.")
    if targets.ndim != 1 or targets.is_floating_point():
        raise ValueError(f"targets must be 1-D class indices, got dtype {targets.dtype} and shape "
                         f"{tuple(targets.shape)}.")
    _check_finite(activations, "activations")
    ks = list(range(1, basis.n_directions + 1)) if ks is None else list(ks)
    if any(k < 0 or k > basis.n_directions for k in ks):
        raise ValueError(f"ks must lie in [0, {basis.n_directions}], got {ks}.")
    f = augment(activations)  # (N, p+1)
    C = basis.C.to(device=f.device, dtype=f.dtype)
    C_inv = basis.C_inv.to(device=f.device, dtype=f.dtype)
    f_hat = f @ C  # (N, k)
    shapes = [activations.shape[1:]]
    with torch.no_grad():
        x = activations
        for section in sections:  # output shapes of each section, for the folded functions
            x = section(x)
            shapes.append(x.shape[1:])
    classes = shapes[-1].numel()
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise ValueError(f"targets must lie in 0..{classes - 1} (the output has {classes} classes), got "
                         f"{int(targets.min())}..{int(targets.max())}.")
    chain = [vmap(_folded(s, shape)) for s, shape in zip(sections, shapes)]
    n, width = f.shape
    per_pass = max(1, max_elements // (n * width))  # how many k share one batched run of the chain
    y = targets.to(f.device)
    accuracies = []
    with torch.no_grad():
        for start in range(0, len(ks), per_pass):
            batch = ks[start : start + per_pass]
            h = torch.stack([f_hat[:, :k] @ C_inv[:k] for k in batch]).reshape(-1, width)  # (K' N, p+1)
            for run in chain:
                h = run(h)
            predicted = h[:, 1:].argmax(-1).reshape(len(batch), n)  # (K', N)
            accuracies.append((predicted == y).to(_F64).mean(1))
    return torch.cat(accuracies) if accuracies else torch.zeros(0, dtype=_F64)
