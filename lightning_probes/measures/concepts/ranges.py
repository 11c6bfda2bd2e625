"""Activation ranges of a unit: exact 1-D k-means of its activations and the binary mask of each range.

Steps 1-2 of SCIENCE.md section 5 (La Rosa et al., NeurIPS 2023): :func:`activation_ranges` pools the unit's
activations over the probe data, drops zeros when all values are >= 0, and splits the values into K ranges with
*exact* 1-D k-means (dynamic programming, so the ranges are deterministic and globally optimal); K = 1 gives the
classic top-0.5% threshold. :func:`range_masks` binarises the activation map (upsampled to the concept-mask size
with :func:`upsample_activations`) into one unit mask per range.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["InactiveUnitError", "activation_ranges", "kmeans_1d", "range_masks", "upsample_activations"]


NETDISSECT_QUANTILE = 0.005  # top 0.5% of activations (Bau et al. 2017; Mu & Andreas 2020)


class InactiveUnitError(ValueError):
    """Raised when a unit has no activation value to cluster (a ReLU unit that never fires)."""


def kmeans_1d(values: Tensor, num_clusters: int, weights: Tensor | None = None) -> Tensor:
    """Exact (globally optimal) k-means of 1-D values by dynamic programming.

    The clusters of an optimal 1-D k-means are intervals of the sorted values, so the optimum is
    ``D_k(i) = min_j D_{k-1}(j) + SSE(j..i-1)`` over split points j. The optimal split point is monotone in
    i (the SSE cost is a Monge matrix), so each layer is solved by divide and conquer in O(n log n)
    (Grønlund et al. 2017, "Fast exact k-means, k-medians and Bregman divergence clustering in 1D");
    here every recursion depth is one batch of tensor operations.

    Args:
        values: sorted, strictly increasing values, shape (n,).
        num_clusters: K >= 1; at most n.
        weights: positive multiplicity of each value, shape (n,); ones if omitted.

    Returns:
        Cluster boundaries as indices into ``values``, shape (K + 1,), int64: cluster c holds
        ``values[b[c]:b[c + 1]]``.

    Raises:
        ValueError: values not 1-D, finite and strictly increasing; num_clusters outside [1, n]; weights not positive,
            one per value.

    Example:
        >>> kmeans_1d(torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 9.0]), 3).tolist()
        [0, 3, 5, 6]
    """
    if values.ndim != 1:
        raise ValueError(f"values must be a 1-D tensor, got shape {tuple(values.shape)}.")
    n = values.numel()
    if not 1 <= num_clusters <= n:
        raise ValueError(f"num_clusters must be in [1, {n}] for {n} distinct values, got {num_clusters}.")
    if not bool(torch.isfinite(values).all()) or not bool((values[1:] > values[:-1]).all()):
        raise ValueError("values must be finite, sorted and strictly increasing (e.g. torch.unique(...)).")
    if weights is not None and (weights.shape != values.shape or not bool((weights > 0).all())):
        raise ValueError(f"weights must be positive, one per value {tuple(values.shape)}, got shape "
                         f"{tuple(weights.shape)}.")
    x = values.to(torch.float64)
    x = x - x.mean()  # centring keeps the prefix sums of squares well conditioned
    w = torch.ones_like(x) if weights is None else weights.to(torch.float64)
    zero = x.new_zeros(1)
    cum_w = torch.cat([zero, w.cumsum(0)])  # (n + 1,)
    cum_x = torch.cat([zero, (w * x).cumsum(0)])
    cum_xx = torch.cat([zero, (w * x * x).cumsum(0)])

    def sse(j: Tensor, i: Tensor) -> Tensor:  # weighted SSE of values[j:i], j < i
        s = cum_x[i] - cum_x[j]
        return (cum_xx[i] - cum_xx[j] - s * s / (cum_w[i] - cum_w[j])).clamp_min(0.0)

    cost = torch.full((n + 1,), math.inf, dtype=torch.float64)
    cost[1:] = sse(torch.zeros(n, dtype=torch.long), torch.arange(1, n + 1))
    split = torch.zeros(num_clusters, n + 1, dtype=torch.long)  # split[k, i]: start of the last cluster
    for k in range(1, num_clusters):
        new_cost = torch.full_like(cost, math.inf)
        # points i whose optimum is needed: room must remain for the later clusters; the last layer needs i = n
        last = n - (num_clusters - 1 - k)
        lo, hi = torch.tensor([k + 1 if k < num_clusters - 1 else n]), torch.tensor([last])
        opt_lo, opt_hi = torch.tensor([k]), hi - 1  # allowed split points j
        while lo.numel():
            mid = (lo + hi) // 2
            count = torch.minimum(opt_hi, mid - 1) - opt_lo + 1  # (T,) candidates per task, >= 1
            task = torch.repeat_interleave(count)  # task of every candidate
            j = (opt_lo - (count.cumsum(0) - count))[task] + torch.arange(task.numel())
            val = cost[j] + sse(j, mid[task])
            best = torch.full(mid.shape, math.inf, dtype=torch.float64).scatter_reduce(0, task, val, "amin")
            arg = torch.full_like(mid, n).scatter_reduce(
                0, task, torch.where(val == best[task], j, n), "amin"
            )  # leftmost argmin keeps the split points monotone
            new_cost[mid], split[k, mid] = best, arg
            go_left, go_right = lo <= mid - 1, mid + 1 <= hi
            lo = torch.cat([lo[go_left], (mid + 1)[go_right]])
            hi = torch.cat([(mid - 1)[go_left], hi[go_right]])
            opt_lo, opt_hi = torch.cat([opt_lo[go_left], arg[go_right]]), torch.cat([arg[go_left], opt_hi[go_right]])
        cost = new_cost
    bounds = [n]
    for k in range(num_clusters - 1, 0, -1):
        bounds.append(int(split[k, bounds[-1]]))
    bounds.append(0)
    return torch.tensor(bounds[::-1], dtype=torch.long)


def activation_ranges(
    activations: Tensor, num_clusters: int = 5, quantile: float = NETDISSECT_QUANTILE
) -> Tensor:
    """Activation ranges of one unit: exact 1-D k-means clusters of its pooled activations.

    Step 1 of SCIENCE.md section 5 (La Rosa et al. 2023, Sec. 3): all values (every sample and position) are
    pooled; if all are >= 0 (a ReLU unit) the zeros are dropped; the remaining values are clustered with
    exact 1-D k-means and each cluster c gives the closed range [min_c, max_c]. Ranges are sorted from the
    lowest (c = 1) to the highest. ``num_clusters=1`` is the classic threshold of Network Dissection /
    Compositional Explanations: T = the top ``quantile`` of *all* values (zeros included), range [T, +inf).
    For a ReLU unit (all values >= 0) zeros never enter that range: when fewer than ``quantile`` of the values
    are non-zero, T is 0 and the paper's strict ``a > T`` keeps only the firing positions; the closed range
    used here gets the same set by raising T to the smallest non-zero value (so a sparse unit that fires on a
    rare concept is explained by it, not by everything).

    Args:
        activations: the unit's activations, any shape (pooled).
        num_clusters: K >= 1.
        quantile: top share used when K = 1.

    Returns:
        Ranges, shape (R, 2) float64 with R = min(K, number of distinct values), rows (low, high).

    Raises:
        InactiveUnitError: the unit has no value to cluster (only zeros, or no data).

    Example:
        >>> acts = torch.tensor([0.0, 0.0, 1.0, 1.1, 4.0, 4.2, 9.0], dtype=torch.float64)
        >>> activation_ranges(acts, num_clusters=3).tolist()
        [[1.0, 1.1], [4.0, 4.2], [9.0, 9.0]]
    """
    if num_clusters < 1:
        raise ValueError(f"num_clusters must be >= 1, got {num_clusters}.")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}.")
    values = activations.detach().reshape(-1).to(torch.float64)
    if not torch.isfinite(values).all():
        raise ValueError("activations contain NaN or infinite values; check the model before explaining it.")
    if num_clusters == 1:
        if values.numel() == 0 or not (values != 0).any():
            raise InactiveUnitError("the unit never activates (all activations are zero).")
        ordered = values.sort().values
        position = (1.0 - quantile) * (ordered.numel() - 1)  # linear interpolation, as numpy.quantile
        below = int(math.floor(position))
        above = min(below + 1, ordered.numel() - 1)
        threshold = ordered[below] + (position - below) * (ordered[above] - ordered[below])
        if bool((ordered[0] >= 0).item()) and not bool((threshold > 0).item()):  # ReLU: a > 0 as a closed range
            threshold = ordered[ordered > 0][0]
        return torch.stack([threshold, threshold.new_tensor(math.inf)]).reshape(1, 2)
    if values.numel() and (values >= 0).all():
        values = values[values > 0]
    if values.numel() == 0:
        raise InactiveUnitError("the unit never activates (no non-zero activation in the probe data).")
    distinct, counts = torch.unique(values, return_counts=True)  # sorted; ties can never be split
    bounds = kmeans_1d(distinct, min(num_clusters, distinct.numel()), counts)
    return torch.stack([distinct[bounds[:-1]], distinct[bounds[1:] - 1]], dim=1)


def upsample_activations(activations: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of activation maps to the concept-mask size (Bau et al. 2017).

    Args:
        activations: maps, shape (N, U, h, w) or one unit's maps (N, h, w).
        size: target (H, W).

    Returns:
        Shape (N, U, H, W) or (N, H, W); returned unchanged when already of that size.

    Raises:
        ValueError: activations not (N, U, h, w) or (N, h, w).

    Example:
        >>> upsample_activations(torch.ones(2, 3, 4, 4), (8, 8)).shape
        torch.Size([2, 3, 8, 8])
    """
    if activations.dim() not in (3, 4):
        raise ValueError(f"activation maps must be (N, U, h, w) or (N, h, w), got shape {tuple(activations.shape)}.")
    if tuple(activations.shape[-2:]) == tuple(size):
        return activations
    single = activations.dim() == 3
    maps = activations.unsqueeze(1) if single else activations
    out = F.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return out.squeeze(1) if single else out


def range_masks(activations: Tensor, ranges: Tensor) -> Tensor:
    """Unit masks M_c(x) = 1[min_c <= a(x) <= max_c], one per range.

    Closed ranges [min_c, max_c], deliberately: on the raw activations M_c is then exactly cluster c. The
    paper's reference code and SCIENCE.md step 2 use strict inequalities min_c < a < max_c, which drop each
    cluster's own extreme values (and empty a cluster of one distinct value: its range would explain nothing);
    after bilinear upsampling the two differ only on positions whose value equals a range end. For K = 1 the
    range is [T, +inf), and for a ReLU unit T > 0 (see :func:`activation_ranges`), so zeros never fire.

    Args:
        activations: one unit's (upsampled) activations, any shape S.
        ranges: (R, 2) from :func:`activation_ranges`.

    Returns:
        Boolean masks, shape (R, *S).

    Raises:
        ValueError: ranges not (R, 2).

    Example:
        >>> range_masks(torch.tensor([0.5, 1.0, 2.0, 3.0]), torch.tensor([[1.0, 2.0]])).int().tolist()
        [[0, 1, 1, 0]]
    """
    if ranges.ndim != 2 or ranges.shape[1] != 2:
        raise ValueError(f"ranges must have shape (R, 2) (low, high), got {tuple(ranges.shape)}.")
    a = activations.to(torch.float64).unsqueeze(0)  # (1, *S)
    view = (-1,) + (1,) * activations.dim()
    return (a >= ranges[:, 0].reshape(view)) & (a <= ranges[:, 1].reshape(view))
