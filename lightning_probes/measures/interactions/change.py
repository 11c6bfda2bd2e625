"""Salient interactions and their comparison across layers and probe times: overlap, emergence, forgetting.

Cheng et al., ICML 2024 (SCIENCE.md §3): the salient set Ω keeps |I(S)| > τ·max|I|; two sets are compared per
order by their shared, forgotten and new strength.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from lightning_probes.measures.interactions.transforms import _F64, _num_players, subset_orders

__all__ = [
    "InteractionChange",
    "count_by_order",
    "interaction_change",
    "merge_first_order",
    "salient_iou",
    "salient_mask",
    "strongest_interactions",
]


def merge_first_order(i_and: Tensor, i_or: Tensor) -> tuple[Tensor, Tensor]:
    """Count first-order OR interactions with first-order AND (the papers' convention): I({i}) = I_and + I_or.

    Args:
        i_and: (B, 2^n) AND interactions.
        i_or: (B, 2^n) OR interactions.

    Returns:
        (I_and with singletons merged, I_or with singletons zeroed), each (B, 2^n).

    Raises:
        ValueError: the last dimension is not 2^n.

    Example:
        >>> a, o = merge_first_order(torch.tensor([[5.0, 1.0, 2.0, 3.0]]), torch.tensor([[0.0, 1.0, 1.0, 4.0]]))
        >>> a.tolist(), o.tolist()
        ([[5.0, 2.0, 3.0, 3.0]], [[0.0, 0.0, 0.0, 4.0]])
    """
    n = _num_players(i_and.shape[-1])
    single = subset_orders(n, i_and.device) == 1  # (m,)
    return torch.where(single, i_and + i_or, i_and), torch.where(single, torch.zeros_like(i_or), i_or)


def salient_mask(i_and: Tensor, i_or: Tensor, tau: float = 0.05) -> Tensor:
    """Salient interactions Ω: |I(S)| > τ·max_S |I(S)| per sample, over AND and OR of non-empty S.

    ∅ is excluded (I_and(∅) = v(x_∅) is the baseline's output, not an interaction). Pass interactions through
    :func:`merge_first_order` first to follow the papers' counting convention.

    Args:
        i_and: (B, 2^n) AND interactions.
        i_or: (B, 2^n) OR interactions.
        tau: threshold as a fraction of the per-sample maximum.

    Returns:
        Bool tensor of shape (B, 2, 2^n): [:, 0] AND, [:, 1] OR.

    Example:
        >>> salient_mask(torch.tensor([[9.0, 1.0, 0.01, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, -0.5]]), 0.1)[0].int()
        tensor([[0, 1, 0, 0],
                [0, 0, 0, 1]], dtype=torch.int32)
    """
    strength = torch.stack((i_and, i_or), 1).abs()  # (B, 2, m)
    strength[..., 0] = 0.0
    top = strength.flatten(1).amax(-1)  # (B,)
    return (strength > tau * top[:, None, None]) & (top[:, None, None] > 0)


def count_by_order(mask: Tensor) -> Tensor:
    """Number of salient interactions of each order m = 0..n per sample (AND and OR together).

    Args:
        mask: salient mask (B, 2, 2^n) from :func:`salient_mask`.

    Returns:
        Long tensor of shape (B, n + 1).

    Raises:
        ValueError: the last dimension is not 2^n.

    Example:
        >>> count_by_order(torch.tensor([[[False, True, True, False], [False, False, False, True]]])).tolist()
        [[0, 2, 1]]
    """
    n = _num_players(mask.shape[-1])
    orders = subset_orders(n, mask.device)  # (m,)
    onehot = torch.nn.functional.one_hot(orders, n + 1).to(torch.long)  # (m, n+1)
    return mask.to(torch.long).sum(1) @ onehot


class InteractionChange(NamedTuple):
    """Overlap / forget / new terms per order (SCIENCE.md §3), each (B, n + 1), and the derived ratios.

    Per order m, from the terms summed over samples (shape (n + 1,); NaN where an order has no salient
    interaction): ``completeness = overlap / (overlap + new)``, ``redundancy = forget / (overlap + forget)``.
    Pooled over orders (the paper's per-layer figure, Cheng et al. 2024): the same ratios of the terms summed
    over samples *and* orders, ``pooled_completeness = Σ_m overlap_m / Σ_m (overlap_m + new_m)``, a scalar
    that weights each order by its salient strength (the mean of the per-order ratios weights every order
    alike, however little strength it holds, and skips empty orders).
    """

    overlap: Tensor
    forget: Tensor
    new: Tensor

    @property
    def completeness(self) -> Tensor:
        o, n = self.overlap.sum(0), self.new.sum(0)
        return o / (o + n)

    @property
    def redundancy(self) -> Tensor:
        o, f = self.overlap.sum(0), self.forget.sum(0)
        return f / (o + f)

    @property
    def pooled_completeness(self) -> Tensor:
        """Σ overlap / Σ (overlap + new) over samples and orders, a 0-d tensor (NaN: nothing salient)."""
        o, n = self.overlap.sum(), self.new.sum()
        return o / (o + n)

    @property
    def pooled_redundancy(self) -> Tensor:
        """Σ forget / Σ (overlap + forget) over samples and orders, a 0-d tensor (NaN: nothing salient)."""
        o, f = self.overlap.sum(), self.forget.sum()
        return f / (o + f)


def interaction_change(
    i_layer: tuple[Tensor, Tensor], i_final: tuple[Tensor, Tensor], mask_layer: Tensor, mask_final: Tensor
) -> InteractionChange:
    """Overlap, forget and new per order between the interactions of layer l and of the final layer L.

    shared(S) = sign·min(|I^(l)(S)|, |I^(L)(S)|) on Ω^(l) ∩ Ω^(L) when the signs agree, else 0;
    overlap = Σ_{Ω^(l)∩Ω^(L)} |shared|, forget = Σ_{Ω^(l)} |I^(l) - shared|, new = Σ_{Ω^(L)} |I^(L) - shared|,
    each restricted to |S| = m. AND and OR are compared with their own kind. The same terms compare a probe
    time with the previous one (new = emergence, forget = forgetting).

    Args:
        i_layer: (I_and, I_or) of layer l, each (B, 2^n).
        i_final: (I_and, I_or) of the reference (final layer or previous probe), each (B, 2^n).
        mask_layer: salient mask of layer l, (B, 2, 2^n).
        mask_final: salient mask of the reference, (B, 2, 2^n).

    Returns:
        :class:`InteractionChange` with terms of shape (B, n + 1).

    Raises:
        ValueError: the last dimension is not 2^n.

    Example:
        >>> a = (torch.tensor([[0.0, 2.0, 1.0, 0.0]]), torch.zeros(1, 4))
        >>> b = (torch.tensor([[0.0, 3.0, 0.0, 1.0]]), torch.zeros(1, 4))
        >>> ch = interaction_change(a, b, salient_mask(*a), salient_mask(*b))
        >>> ch.overlap.tolist(), ch.forget.tolist(), ch.new.tolist()
        ([[0.0, 2.0, 0.0]], [[0.0, 1.0, 0.0]], [[0.0, 1.0, 1.0]])
    """
    il = torch.stack(i_layer, 1)  # (B, 2, m)
    ir = torch.stack(i_final, 1).to(il.dtype)  # (B, 2, m)
    both = mask_layer & mask_final
    agree = torch.sign(il) == torch.sign(ir)
    shared = torch.where(both & agree, torch.sign(il) * torch.minimum(il.abs(), ir.abs()), torch.zeros_like(il))
    zero = torch.zeros_like(il)
    overlap = torch.where(both, shared.abs(), zero)
    forget = torch.where(mask_layer, (il - shared).abs(), zero)
    new = torch.where(mask_final, (ir - shared).abs(), zero)
    n = _num_players(il.shape[-1])
    onehot = torch.nn.functional.one_hot(subset_orders(n, il.device), n + 1).to(il.dtype)  # (m, n+1)
    return InteractionChange(*(t.sum(1) @ onehot for t in (overlap, forget, new)))


def salient_iou(mask_a: Tensor, mask_b: Tensor) -> Tensor:
    """IoU |Ω_a ∩ Ω_b| / |Ω_a ∪ Ω_b| of two salient sets per sample (NaN when both are empty).

    Args:
        mask_a: (B, 2, 2^n) one salient set (as :func:`salient_mask` gives it).
        mask_b: (B, 2, 2^n) the other.

    Returns:
        (B,) float tensor.

    Example:
        >>> a = torch.tensor([[[0, 1, 1, 0], [0, 0, 0, 0]]]).bool()
        >>> b = torch.tensor([[[0, 1, 0, 1], [0, 0, 0, 0]]]).bool()
        >>> round(salient_iou(a, b).item(), 3)
        0.333
    """
    inter = (mask_a & mask_b).flatten(1).sum(-1).to(_F64)
    union = (mask_a | mask_b).flatten(1).sum(-1).to(_F64)
    return inter / union


def strongest_interactions(
    i_and: Tensor, i_or: Tensor, k: int = 5, names: Sequence[str] | None = None
) -> list[list[tuple[str, tuple[str, ...], float]]]:
    """The k strongest interactions of each sample as (kind, player names, value), strongest first (∅ excluded).

    Raises:
        ValueError: the last dimension is not 2^n.

    Example:
        >>> strongest_interactions(torch.tensor([[0.3, 0.0, 0.1, 2.0]]), torch.tensor([[0.0, -1.0, 0.0, 0.0]]), 2)
        [[('AND', ('0', '1'), 2.0), ('OR', ('0',), -1.0)]]
    """
    n = _num_players(i_and.shape[-1])
    names = [str(i) for i in range(n)] if names is None else list(names)
    values = torch.stack((i_and, i_or), 1).flatten(1).clone()  # (B, 2m)
    m = 1 << n
    values[:, 0] = 0.0
    values[:, m] = 0.0
    top = values.abs().topk(min(k, 2 * m - 2), dim=-1).indices  # (B, k)
    out = []
    for row, idx in zip(values.tolist(), top.tolist()):
        out.append(
            [
                ("AND" if j < m else "OR", tuple(names[i] for i in range(n) if (j % m) >> i & 1), round(row[j], 6))
                for j in idx
                if row[j] != 0.0
            ]
        )
    return out
