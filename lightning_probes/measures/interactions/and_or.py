"""AND and OR interactions of a game for given γ and δ (the definition), and universal matching (SCIENCE.md §3)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_probes.measures.interactions.transforms import _num_players, mobius_transform, zeta_transform

__all__ = ["and_or_interactions", "reconstruct"]


def and_or_interactions(
    v: Tensor, gamma: Tensor | None = None, delta: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    r"""AND and OR interactions of a game for given γ and noise δ (SCIENCE.md §3, Cheng et al. 2024 eq. 1-2).

    v_and(x_T) = ½(v(x_T) - δ_T) + γ_T,  v_or(x_T) = ½(v(x_T) - δ_T) - γ_T,
    I_and(S) = Σ_{T⊆S} (-1)^{|S|-|T|} v_and(x_T),  I_or(S) = -Σ_{T⊆S} (-1)^{|S|-|T|} v_or(x_{N\T}).

    γ_∅ is pinned to ½(v(x_∅) - δ_∅) (the value passed is ignored) so that v_or(x_∅) = 0 and universal matching
    holds for any γ; I_or(∅) is defined as 0 (the formula's value there is never used).

    Args:
        v: game values v(x_T), shape (B, 2^n).
        gamma: the AND/OR split γ_T, shape (B, 2^n); zeros when omitted.
        delta: noise δ_T, shape (B, 2^n); zeros when omitted.

    Returns:
        (I_and, I_or), each of shape (B, 2^n).

    Raises:
        ValueError: the last dimension of v is not 2^n; gamma or delta does not have v's shape, or holds NaN or Inf.

    Example:
        >>> v = torch.tensor([[0.0, 1.0, 1.0, 3.0]])  # two players
        >>> i_and, i_or = and_or_interactions(v)
        >>> i_and.tolist(), i_or.tolist()
        ([[0.0, 0.5, 0.5, 0.5]], [[0.0, 1.0, 1.0, -0.5]])
        >>> reconstruct(i_and, i_or).tolist()
        [[0.0, 1.0, 1.0, 3.0]]
    """
    _num_players(v.shape[-1])
    for label, t in (("v", v), ("gamma", gamma), ("delta", delta)):
        if t is not None and t.shape != v.shape:
            raise ValueError(f"{label} must have the shape of v {tuple(v.shape)}, got {tuple(t.shape)}.")
        if t is not None and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{label} holds NaN or Inf; the interactions would be NaN.")
    gamma = torch.zeros_like(v) if gamma is None else gamma.to(v.dtype).clone()
    delta = torch.zeros_like(v) if delta is None else delta.to(v.dtype)
    half = 0.5 * (v - delta)  # (B, m)
    gamma[..., 0] = half[..., 0]  # pin: v_or(x_∅) = 0
    i_and = mobius_transform(half + gamma)  # (B, m)
    i_or = -mobius_transform((half - gamma).flip(-1))  # flip(-1) maps T to N \ T
    i_or[..., 0] = 0.0
    return i_and, i_or


def reconstruct(i_and: Tensor, i_or: Tensor) -> Tensor:
    r"""Universal matching: Σ_{S⊆T} I_and(S) + Σ_{S∩T≠∅} I_or(S) for every T (fast form).

    Uses Σ_{S∩T≠∅} I_or(S) = Σ_S I_or(S) - Σ_{S⊆N\T} I_or(S); proven equal to the direct double sum in tests.

    Args:
        i_and: AND interactions, shape (B, 2^n).
        i_or: OR interactions, shape (B, 2^n) (the ∅ entry is ignored).

    Returns:
        The reconstructed game, shape (B, 2^n).

    Raises:
        ValueError: i_and and i_or differ in shape, or their last dimension is not 2^n.
    """
    if i_and.shape != i_or.shape:
        raise ValueError(f"i_and {tuple(i_and.shape)} and i_or {tuple(i_or.shape)} must have the same shape.")
    i_or = i_or.clone()
    i_or[..., 0] = 0.0
    total_or = i_or.sum(-1, keepdim=True)  # (B, 1)
    return zeta_transform(i_and) + total_or - zeta_transform(i_or).flip(-1)
