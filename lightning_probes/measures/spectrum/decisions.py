"""How many eigenfunctions the head's argmax decisions need: truncations f_k of the learned function, counted for
every k (n_features_decisions).

Symbols: B samples, p features, C outputs, r the numerical rank.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_probes.measures.spectrum.power import features_needed
from lightning_probes.measures.spectrum.summary import SpectrumSummary

_F64 = torch.float64


def truncated_decisions(
    features: Tensor, weight: Tensor, bias: Tensor | None, summary: SpectrumSummary, stop_at: float | None = None,
    chunk: int = 1 << 22,
) -> Tensor:
    """For every k, how many samples' argmax the k-eigenfunction truncation of f keeps.  Returns (r,) counts.

    The truncation f_k(x) = offset + Σ_{i≤k} E[f e_i] e_i(x) (offset = E f for the centred operator, 0 otherwise)
    is built for all k at once: with X the operator's features ([Φ, 1], Φ - μ or Φ), E[f e_i] e_i(x) =
    (E[f e_i] / √λ_i) · (X u_i), and a cumulative sum over i gives every f_k. Compared with argmax_c of the
    head's own output WΦ + b. The eigenfunctions are taken in blocks of 16, 16, 32, 64, ... so that with
    ``stop_at`` the work ends with the first block in which some k keeps that share of the decisions (the counts
    then stop there: every k up to the fewest one that qualifies is still counted, so the count is exact).

    Args:
        features: (B, p) features Φ.
        weight: (C, p) head weight.
        bias: (C,) head bias, or None.
        summary: from :func:`summarise` (its spectrum, alignment, offset and centre).
        stop_at: a share of decisions; stop after the first block reaching it (None: all r eigenfunctions).
        chunk: the largest B·k·C block built at once.

    Raises:
        ValueError: ``summary`` lacks its alignment, offset or centre (it was not built by :func:`summarise`).

    Example:
        >>> from lightning_probes.measures.spectrum import FeatureStatisticsValue, summarise
        >>> phi = torch.eye(3).repeat(4, 1); y = torch.arange(3).repeat(4)
        >>> s = summarise(FeatureStatisticsValue.from_features(phi, y, 3), torch.eye(3), torch.zeros(3))
        >>> kept = truncated_decisions(phi, torch.eye(3), torch.zeros(3), s)
        >>> len(kept), float(kept[-1])  # 2 centred eigenfunctions; all of them give f back, so all 12 decisions
        (2, 12.0)
    """
    spec, alignment, offset, centre = summary.spectrum, summary.alignment, summary.offset, summary.centre
    if alignment is None or offset is None or (summary.operator == "centred" and centre is None):
        raise ValueError("summary must come from summarise (its alignment, offset and centre are needed).")
    phi = features.to(_F64)  # (B, p)
    w = weight.to(device=phi.device, dtype=_F64)
    full = phi @ w.T  # (B, C)
    if bias is not None:
        full = full + bias.to(device=phi.device, dtype=_F64)
    decisions = full.argmax(-1)  # (B,)
    if centre is not None and summary.operator == "centred":
        x = phi - centre.to(phi.device)
    elif summary.operator == "augmented":
        x = torch.cat([phi, phi.new_ones(len(phi), 1)], 1)
    else:
        x = phi
    u = spec.eigenvectors.to(phi.device)  # (q, r)
    coef = alignment.to(phi.device) / spec.nonzero.sqrt().to(phi.device)[:, None]  # (r, C)
    r, c = coef.shape
    running = offset.to(phi.device).expand(len(phi), c).clone()  # (B, C) f_k of the block's start
    counts: list[Tensor] = []
    start, width = 0, 16
    while start < r:
        stop = min(r, start + width)
        kept = phi.new_zeros(stop - start)
        step = max(1, chunk // max(1, (stop - start) * c))
        for lo in range(0, len(phi), step):
            proj = x[lo : lo + step] @ u[:, start:stop]  # (b, k) = √λ_i e_i(x)
            trunc = running[lo : lo + step, None, :] + torch.cumsum(proj[:, :, None] * coef[None, start:stop], 1)
            kept += (trunc.argmax(-1) == decisions[lo : lo + step, None]).sum(0)  # (k,)
            running[lo : lo + step] = trunc[:, -1]
        counts.append(kept)
        if stop_at is not None and bool((kept >= stop_at * len(phi) * (1 - 1e-12)).any()):
            break
        start, width = stop, width if start == 0 else 2 * width
    return torch.cat(counts) if counts else phi.new_zeros(0)



def decision_features(kept_share: Tensor, rank: int, threshold: float = 0.99, complete: bool = True) -> int | None:
    """n_features_decisions: the fewest k whose truncated f keeps ``threshold`` of the argmax decisions (≤ r).

    Args:
        kept_share: (≥ r,) share of kept decisions for k = 1, 2, ...
        rank: r, the eigenfunctions counted.
        threshold: the share to keep.
        complete: the r eigenfunctions are all there are (False from the top-k eigensolver): when none of them
            reaches the share, the answer lies beyond them and None is returned (the full solve knows it).

    Example:
        >>> decision_features(torch.tensor([0.5, 0.995, 1.0, 0.0]), rank=3)
        2
        >>> decision_features(torch.tensor([0.5, 0.9]), rank=2, complete=False) is None
        True
    """
    share = kept_share[:rank]
    if not complete and not bool((share >= threshold - 1e-12).any()):
        return None
    return features_needed(share, threshold)
