"""The game v: a model's outputs on all 2^n masked versions of a sample, and the log-odds of the true class."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple, cast

import torch
from torch import Tensor

from lightning_probes.measures.interactions.players import Players
from lightning_probes.measures.interactions.transforms import MAX_PLAYERS_HARD, subset_masks

__all__ = ["LogOdds", "log_odds", "masked_outputs", "masked_rows"]


def masked_rows(
    num_samples: int, n: int, batch_size: int = 4096, device: torch.device | str | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """(sample index (R,), player mask keep (R, n)) of all ``num_samples · 2^n`` (sample, subset) rows, in the row
    order b·2^n + T of :func:`masked_outputs`, ``batch_size`` rows at a time (for inputs :func:`masked_outputs`
    cannot mask itself: structured batches, masking at an embedding layer).

    Example:
        >>> [(s.tolist(), k.long().tolist()) for s, k in masked_rows(1, 1, batch_size=2)]
        [([0, 0], [[0], [1]])]
    """
    m = 1 << n
    subsets = subset_masks(n, device)  # (m, n)
    total = num_samples * m
    for start in range(0, total, batch_size):
        rows = torch.arange(start, min(start + batch_size, total), device=device)
        yield rows // m, subsets[rows % m]


def masked_outputs(
    fn: Callable[[Tensor], Tensor | Mapping[str, Tensor]],
    x: Tensor,
    players: Players,
    baseline: Tensor | float | None = None,
    batch_size: int = 4096,
) -> Tensor | dict[str, Tensor]:
    """Outputs of ``fn`` on all 2^n masked versions of every sample, in memory-bounded batches.

    Only ``batch_size`` masked inputs exist at any time. Call under ``torch.no_grad()`` for a network.

    Args:
        fn: maps a batch of inputs (R, *shape) to a tensor (R, *out) or a dict of such tensors.
        x: samples (B, *shape).
        players: the partition into n players.
        baseline: one sample's baseline (*shape) or a scalar; default: the mean of ``x`` over samples (pass the
            probe-set mean explicitly when x is only a few samples of it).
        batch_size: masked inputs per call of ``fn``.

    Returns:
        Tensor (B, 2^n, *out) — or a dict of them — where [b, T] is fn(x_T) for sample b.

    Raises:
        ValueError: batch_size not positive; more than MAX_PLAYERS_HARD players; no samples; the default baseline on
            integer inputs; or as :meth:`Players.mask`.

    Example:
        >>> players = Players.features([0, 1], num_features=2)
        >>> out = masked_outputs(lambda z: z.sum(-1), torch.tensor([[1.0, 2.0]]), players, baseline=0.0)
        >>> out.tolist()
        [[0.0, 1.0, 2.0, 3.0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    if players.n > MAX_PLAYERS_HARD:
        raise ValueError(f"{players.n} players means 2^{players.n} masked inputs per sample; use fewer players.")
    if x.shape[0] == 0:
        raise ValueError(f"x has no samples (shape {tuple(x.shape)}).")
    if baseline is None:
        if not x.is_floating_point():
            raise ValueError(f"x is {x.dtype}: the default baseline (the mean sample) needs float inputs; for token "
                             "ids give the mask token id, e.g. baseline=0.")
        baseline = x.mean(0)
    bsz, m = x.shape[0], 1 << players.n
    pieces: list[Tensor | Mapping[str, Tensor]] = []
    for sample, keep in masked_rows(bsz, players.n, batch_size, x.device):  # bounded memory
        pieces.append(fn(players.mask(x[sample], keep, baseline)))
    # fn gives the same kind of output on every batch: dicts of tensors throughout, or tensors throughout
    if isinstance(pieces[0], Mapping):
        maps = cast(list[Mapping[str, Tensor]], pieces)
        return {k: torch.cat([p[k] for p in maps]).unflatten(0, (bsz, m)) for k in maps[0]}
    return torch.cat(cast(list[Tensor], pieces)).unflatten(0, (bsz, m))


class LogOdds(NamedTuple):
    """Game values v and where they were clamped (saturated softmax: p(y*) within ε of 0 or 1)."""

    values: Tensor
    clamped: Tensor


def log_odds(logits: Tensor, target: Tensor, max_abs: float = 16.0) -> LogOdds:
    """Log-odds v = log p(y*|x) / (1 - p(y*|x)) of the true class, computed stably, clamped to ±max_abs (SCIENCE.md §3).

    Multi-class (C ≥ 2): v = z_y - logsumexp_{c≠y} z_c, which equals the softmax log-odds exactly without ever
    forming p. Binary heads with one logit (C = 1): v = z for y = 1 and -z for y = 0. |v| > max_abs (p within
    ~1e-7 of 0 or 1 for the default) is clamped and flagged: there the game is dominated by saturation.

    Args:
        logits: (..., C) class scores; the leading dims of ``target`` broadcast against (...).
        target: integer true classes with shape (B,) matching logits' first dim.
        max_abs: clamp bound for |v|.

    Returns:
        :class:`LogOdds` with values (...,) float and clamped (...,) bool.

    Raises:
        ValueError: float targets (not class indices); logits or target of the wrong shape; NaN logits; targets outside
            the head's classes.

    Example:
        >>> out = log_odds(torch.tensor([[2.0, 0.0, 0.0], [0.0, 40.0, 0.0]]), torch.tensor([0, 0]))
        >>> [round(x, 4) for x in out.values.tolist()], out.clamped.tolist()
        ([1.3069, -16.0], [False, True])
    """
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(
            "Interactions need a classification head: targets must be integer class indices "
            f"(got dtype {target.dtype}); v is the log-odds of the true class."
        )
    if logits.ndim < 2:
        raise ValueError(f"logits must have shape (B, ..., C), got {tuple(logits.shape)}.")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(f"target must have shape ({logits.shape[0]},) (one class per row of logits), got "
                         f"{tuple(target.shape)}.")
    if logits.is_floating_point() and bool(torch.isnan(logits).any()):
        raise ValueError(f"logits hold NaN in {int(torch.isnan(logits).any(-1).sum())} rows; the log-odds are "
                         "undefined there (NaN inputs, baseline or weights?).")
    num_classes = logits.shape[-1]
    tgt = target.view(target.shape[0], *([1] * (logits.ndim - 2))).expand(logits.shape[:-1])
    if num_classes == 1:
        if bool(((target < 0) | (target > 1)).any()):
            raise ValueError("A single-logit (binary) head needs targets in {0, 1}.")
        z = logits[..., 0]
        v = torch.where(tgt == 1, z, -z)
    else:
        if bool(((target < 0) | (target >= num_classes)).any()):
            raise ValueError(f"targets must lie in 0..{num_classes - 1} for a head with {num_classes} outputs.")
        true = logits.gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
        others = logits.scatter(-1, tgt.unsqueeze(-1), -math.inf)
        v = true - torch.logsumexp(others, -1)
    clamped = v.abs() > max_abs
    return LogOdds(v.clamp(-max_abs, max_abs), clamped)
