"""Concept masks compressed once per probe set (:func:`prepare_concepts`).

Positions with the same concept vector become one weighted column. Every count a formula needs is a weighted
sum over columns, so this is exact (SCIENCE.md section 5).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["ConceptTable", "prepare_concepts"]


@dataclass
class ConceptTable:
    """Concept masks compressed to their distinct columns (exact for every count a formula needs).

    Attributes:
        masks: distinct concept columns, shape (K, G) bool.
        group: column of every position, shape (N * S,) int64 (positions sample-major).
        weight: number of positions in each column, shape (G,) float64.
        num_samples: N.
        spatial_size: (H, W) of the masks, or () for per-sample concepts.
    """

    masks: Tensor
    group: Tensor
    weight: Tensor
    num_samples: int
    spatial_size: tuple[int, ...]

    @property
    def num_concepts(self) -> int:
        return self.masks.shape[0]

    @property
    def positions_per_sample(self) -> int:
        return self.group.numel() // max(self.num_samples, 1)

    def expand(self, column_mask: Tensor) -> Tensor:
        """A mask on columns (G,) as a mask on positions (N, S)."""
        return column_mask[self.group].reshape(self.num_samples, -1)

    def column_counts(self, unit_mask: Tensor) -> Tensor:
        """Number of unit-mask positions in each column, shape (G,) float64.

        Raises:
            ValueError: the unit mask is not boolean (or 0/1 integer), or does not have the concepts' size.
        """
        flat = unit_mask.reshape(-1)
        if flat.dtype != torch.bool and (flat.is_floating_point() or not bool(((flat == 0) | (flat == 1)).all())):
            raise ValueError(f"the unit mask must be a boolean (or 0/1 integer) tensor, got dtype {flat.dtype}.")
        if flat.numel() != self.group.numel():
            raise ValueError(
                f"unit mask has {flat.numel()} positions but the concepts have {self.group.numel()} "
                f"({self.num_samples} samples x {self.positions_per_sample}); upsample the activations to "
                f"the concept size {self.spatial_size}."
            )
        return torch.zeros_like(self.weight).index_add_(0, self.group, flat.to(torch.float64))


def prepare_concepts(concepts: Tensor, spatial_size: tuple[int, int] | None = None) -> ConceptTable:
    """Validate and compress concept masks once per probe set.

    Args:
        concepts: boolean masks, shape (N, K) per sample or (N, K, H, W) per position.
        spatial_size: for per-sample concepts explained on spatial maps, the (h, w) of the maps: each
            sample's concepts then hold at every position of its map.

    Returns:
        A :class:`ConceptTable`.

    Raises:
        ValueError: concepts not boolean (or 0/1 integer), not (N, K) or (N, K, H, W), empty, or all False; a
            spatial_size that is not (h, w) of positive integers.

    Example:
        >>> table = prepare_concepts(torch.tensor([[1, 0], [1, 0], [0, 1]]).bool())
        >>> table.masks.int().tolist(), table.weight.tolist()  # two distinct columns: (1, 0) twice, (0, 1) once
        ([[1, 0], [0, 1]], [2.0, 1.0])
    """
    if concepts.dtype != torch.bool:
        if concepts.is_floating_point() or not ((concepts == 0) | (concepts == 1)).all():
            raise ValueError(f"concepts must be a boolean (or 0/1 integer) tensor, got dtype {concepts.dtype}.")
        concepts = concepts.bool()
    if concepts.dim() not in (2, 4):
        raise ValueError(f"concepts must have shape (N, K) or (N, K, H, W), got {tuple(concepts.shape)}.")
    n, k = concepts.shape[:2]
    if n == 0 or k == 0:
        raise ValueError(f"concepts are empty (shape {tuple(concepts.shape)}): give at least one sample and concept.")
    if not concepts.any():
        raise ValueError("no concept is present anywhere (all masks are False); check the concept annotations.")
    if concepts.dim() == 2 and spatial_size is not None:
        if len(spatial_size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in spatial_size):
            raise ValueError(f"spatial_size must be (h, w) of positive integers, got {tuple(spatial_size)}.")
        concepts = concepts[:, :, None, None].expand(n, k, *spatial_size)
    size = tuple(concepts.shape[2:])
    columns = concepts.reshape(n, k, -1).permute(0, 2, 1).reshape(-1, k)  # (N * S, K)
    if k <= 62:  # one int64 key per position: a 1-D unique is much faster than a row-wise one
        bits = torch.arange(k)
        keys = (columns.long() << bits).sum(1)  # (N * S,)
        distinct_keys, group, counts = torch.unique(keys, return_inverse=True, return_counts=True)
        masks = ((distinct_keys[None, :] >> bits[:, None]) & 1).bool()  # (K, G)
    else:
        distinct, group, counts = torch.unique(columns, dim=0, return_inverse=True, return_counts=True)
        masks = distinct.T.contiguous()
    return ConceptTable(masks, group, counts.to(torch.float64), n, size)
