"""Jacobians of the bias-folded sections in the next layer's LIB coordinates (SCIENCE.md §4 step 3), plain or
integrated along the path α·f, by torch.func or a closed form for dense sections, in bounded sample chunks.

Symbols: N samples; p_l the width of node layer l (flattened); k_l the number of directions kept.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, jvp, vmap

_F64 = torch.float64
Section = Callable[[Tensor], Tensor]
Gradients = Literal["plain", "integrated"]
_GRADIENTS = ("plain", "integrated")


def augment(activations: Tensor) -> Tensor:
    """Flatten node activations (N, *shape) to (N, p) and prepend the constant coordinate: (N, p+1).

    Raises:
        ValueError: activations without a feature axis (fewer than 2 dimensions).

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


def path_quadrature(points: int) -> tuple[Tensor, Tensor]:
    """Gauss–Legendre nodes α_k ∈ (0, 1) and weights w_k (Σ w_k = 1) for ∫₀¹ g(α) dα ≈ Σ_k w_k g(α_k).

    Exact for polynomials of degree ≤ 2·points − 1.

    Raises:
        ValueError: points is not a positive integer.

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

    Raises:
        ValueError: an unknown mode or gradients; max_jacobian_elements or integration_points not positive; activations
            with NaN or Inf; a next_basis of the wrong shape; mode='dense' on a section that is not dense.

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

    Raises:
        ValueError: the number of activations is not len(sections) + 1, their sample counts differ, they hold NaN or
            Inf, or a section fails on, or does not reproduce, the next node's activations.

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
            deviation = (got - want).abs().max()
            if deviation > rtol * scale:
                raise ValueError(
                    f"sections[{i}](activations[{i}]) differs from activations[{i + 1}] by {float(deviation):.3g}: a "
                    "section must be a pure function of its node activations (no hidden state, dropout or "
                    "batch statistics in train mode), running from one node point to the next."
                )
