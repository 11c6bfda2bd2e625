"""The bases of each node layer (SCIENCE.md §4 steps 1-5): whitened PCA, the output layer's basis, and the Local
Interaction Basis from the output backwards.

Symbols: N samples; p_l the width of node layer l (flattened); k_l the number of directions kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lightning_probes.measures.interaction_basis.jacobians import (
    Gradients,
    Section,
    _check_finite,
    _check_gradients,
    augment,
    check_sections,
    lib_jacobians,
)

_F64 = torch.float64
FinalBasis = Literal["logits", "pca", "identity"]
_FINAL_BASES: tuple[FinalBasis, ...] = ("logits", "pca", "identity")


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

    Raises:
        ValueError: fewer than 2 samples, NaN or Inf in the activations, or a truncation that is not positive and
            finite.

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


def _output_basis(final_basis: FinalBasis, pca: Basis, last: Tensor) -> Basis:
    if final_basis == "pca":
        return pca
    width = last[0].numel()
    return _identity_basis(width, last.device) if final_basis == "identity" else _logits_basis(width, last.device)




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
    fits = len(activations) * next_basis.n_directions * width <= max_jacobian_elements
    store = kept if fits else None  # where the Jacobians are kept for the edges (None: not kept)
    M_dash = torch.zeros(width, width, dtype=_F64, device=pca.Y.device)  # (p+1, p+1)
    for J in lib_jacobians(section, activations, next_basis.C, max_jacobian_elements, gradients=gradients,
                           integration_points=integration_points):
        if store is not None:
            store.append(J)
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

    Raises:
        ValueError: no sections; activations that do not match the sections (count, samples, shapes, or check=True finds
            a section that does not map one node layer to the next); NaN or Inf; an unknown final_basis or gradients; a
            truncation or integration_points that is not positive.

    Warns:
        UserWarning: a node layer is at least as wide as the number of samples, so its centred activations span
            at most N − 1 directions and both LIB and PCA are capped there.

    Example:
        >>> from torch import nn
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
    capped = [(layer, a[0].numel()) for layer, a in enumerate(activations[:-1]) if a[0].numel() >= n]
    if capped:
        where = ", ".join(f"node layer {layer} (width {width})" for layer, width in capped)
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
    final_basis: FinalBasis,
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
    for layer in range(len(sections) - 1, -1, -1):  # output backwards: a layer needs the next one's scaled basis
        kept = jacobians[layer] if keep_jacobians else None
        basis = _lib_layer(sections[layer], activations[layer], lib[0], pcas[layer], truncation, max_jacobian_elements,
                           kept, gradients, integration_points, mix_constant)
        lib.insert(0, basis)
    return InteractionBasis(lib=lib, pca=pca), jacobians
