"""Players: a partition of one input sample into n players (features, token positions, image patches)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

__all__ = ["FeatureGroups", "ImagePatches", "Players", "RestMode", "TokenPositions"]

RestMode = Literal["keep", "baseline"]
"""What the input elements outside every player do: keep the sample's value, or always take the baseline."""

_REST: tuple[RestMode, ...] = ("keep", "baseline")


class Players:
    """A partition of one input sample into n players (plus an optional fixed remainder).

    ``groups`` has the shape of one sample (or a leading part of it: trailing dimensions, e.g. a token's
    embedding, broadcast) and holds, for every input element, the index of its player in 0..n-1, or -1 for
    elements that belong to no player. Those follow ``rest``: ``"keep"`` (always the sample's value, the
    papers' setting when only some patches are players) or ``"baseline"`` (always masked).

    Args:
        groups: integer tensor, values in {-1, 0, ..., n-1}, every player non-empty.
        rest: what elements outside every player do: ``"keep"`` or ``"baseline"``.
        names: a label per player (default ``"0"``, ``"1"``, ...).

    Raises:
        ValueError: groups is not an integer tensor of -1 and player indices 0..n-1 without gaps; an unknown rest; names
            of the wrong length.

    Example:
        >>> players = Players.features([[0, 1], [2]], num_features=4)
        >>> players.n, players.groups.tolist()
        (2, [0, 0, 1, -1])
        >>> x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
        >>> players.mask(x, torch.tensor([[False, True]]), baseline=torch.zeros(4)).tolist()
        [[0.0, 0.0, 3.0, 4.0]]
    """

    def __init__(self, groups: Tensor, rest: RestMode = "keep", names: Sequence[str] | None = None) -> None:
        groups = torch.as_tensor(groups)
        if groups.dtype.is_floating_point or groups.dtype == torch.bool:
            raise ValueError("groups must be an integer tensor of player indices (-1 = no player).")
        if rest not in _REST:
            raise ValueError(f"rest must be one of {_REST}, got {rest!r}.")
        if groups.numel() == 0 or int(groups.max()) < 0:
            raise ValueError("groups assigns no element to any player; give each player at least one element.")
        if int(groups.min()) < -1:
            raise ValueError("groups values must be -1 (no player) or a player index ≥ 0.")
        n = int(groups.max()) + 1
        present = torch.bincount(groups[groups >= 0].flatten(), minlength=n)
        if bool((present == 0).any()):
            empty = torch.nonzero(present == 0).flatten().tolist()
            raise ValueError(f"Players {empty} own no input element; player indices must be 0..n-1 without gaps.")
        if names is not None and len(names) != n:
            raise ValueError(f"names has {len(names)} entries for {n} players.")
        self.groups = groups.long()
        self.rest = rest
        self.n = n
        self.names = [str(i) for i in range(n)] if names is None else [str(s) for s in names]

    def __repr__(self) -> str:
        return f"Players(n={self.n}, shape={tuple(self.groups.shape)}, rest={self.rest!r})"

    @classmethod
    def from_sets(
        cls, sets: Sequence[Sequence[int] | int], shape: Sequence[int] | int, rest: RestMode = "keep",
        names: Sequence[str] | None = None,
    ) -> Players:
        """Players from lists of flat element indices of a sample of the given shape; overlapping sets are an error."""
        return cls(_groups_from_sets(sets, shape), rest=rest, names=names)

    @classmethod
    def features(
        cls, indices: Sequence[Sequence[int] | int], num_features: int, rest: RestMode = "keep",
        names: Sequence[str] | None = None,
    ) -> Players:
        """Tabular players: player i is the feature (or feature group) ``indices[i]`` of (B, num_features) inputs."""
        return FeatureGroups(indices, num_features, rest=rest, names=names)

    @classmethod
    def tokens(
        cls, positions: Sequence[Sequence[int] | int], seq_len: int, rest: RestMode = "keep",
        names: Sequence[str] | None = None,
    ) -> Players:
        """Sequence players: player i is the token position (or span) ``positions[i]`` of (B, L[, E]) inputs.

        For token ids give the mask token id as the baseline (a scalar); for embeddings the default mean works.
        """
        return TokenPositions(positions, seq_len, rest=rest, names=names)

    @classmethod
    def image_patches(
        cls, grid: Sequence[int], image_shape: Sequence[int], select: Sequence[int] | None = None,
        rest: RestMode = "keep", flatten: bool = False,
    ) -> Players:
        """Image players: the image is cut into a grid of equal patches; ``select`` picks which patches play.

        Args:
            grid: (rows, cols) of patches; they must divide the image height and width.
            image_shape: (H, W) or (C, H, W) of one sample (channels share a patch).
            select: patch indices (row-major, 0..rows·cols-1) that become players 0..k-1 in this order; all
                patches when omitted. Unselected patches follow ``rest``.
            rest: ``"keep"`` or ``"baseline"`` for the unselected patches.
            flatten: the model takes flattened images (B, C·H·W) (e.g. the digits MLP).

        Example:
            >>> p = Players.image_patches((2, 2), (4, 4), select=[3, 0])
            >>> p.n, p.groups[0].tolist(), p.groups[3].tolist()
            (2, [1, 1, -1, -1], [-1, -1, 0, 0])
        """
        return ImagePatches(grid, image_shape, select=select, rest=rest, flatten=flatten)

    def element_mask(self, keep: Tensor) -> Tensor:
        """Which input elements keep their value, (R, *groups.shape), for player masks keep (R, n).

        Raises:
            ValueError: keep is not (R, n).
        """
        if keep.ndim != 2 or keep.shape[-1] != self.n:
            raise ValueError(f"keep must have shape (R, {self.n}), got {tuple(keep.shape)}.")
        groups = self.groups.to(keep.device)
        in_player = keep[:, groups.clamp_min(0)]  # (R, *shape)
        outside = torch.full_like(in_player, self.rest == "keep")
        return torch.where(groups >= 0, in_player, outside)

    def mask(self, x: Tensor, keep: Tensor, baseline: Tensor | float) -> Tensor:
        """Masked inputs x_T: players in T (keep[r] True) keep x[r], the others take the baseline.

        Args:
            x: inputs (R, *shape) whose leading dims after R match ``groups``.
            keep: player masks (R, n), bool.
            baseline: tensor broadcastable to one sample (*shape), or a scalar (e.g. a mask token id).

        Returns:
            Masked inputs (R, *shape), dtype of x.

        Raises:
            ValueError: x does not match the players' sample shape; a baseline that does not fit one sample, or non-
                integer for token ids.
        """
        gshape = tuple(self.groups.shape)
        if tuple(x.shape[1 : 1 + len(gshape)]) != gshape:
            raise ValueError(
                f"Players were built for samples of shape {gshape} (leading dims), but the input has "
                f"{tuple(x.shape[1:])}; build them for the shape the model takes (e.g. flatten=True)."
            )
        elem = self.element_mask(keep)  # (R, *gshape)
        elem = elem.view(*elem.shape, *([1] * (x.ndim - elem.ndim)))  # broadcast trailing dims (embeddings)
        given = torch.as_tensor(baseline, device=x.device)
        if not x.is_floating_point() and given.is_floating_point() and not bool((given == given.round()).all()):
            raise ValueError(
                f"the inputs are {x.dtype} (token ids) but the baseline holds non-integer values (a mean over ids?); "
                "give a baseline token id (e.g. the tokenizer's mask_token_id or pad id), or mask at an embedding "
                "layer instead (InteractionMonitor(mask_at=...))."
            )
        base = given.to(x.dtype)
        sample = tuple(x.shape[1:])
        if base.ndim > len(sample) or any(b not in (1, s) for b, s in zip(base.shape[::-1], sample[::-1])):
            raise ValueError(f"baseline of shape {tuple(base.shape)} does not fit one sample of shape {sample}; "
                             "give a scalar or a tensor of the sample's shape.")
        return torch.where(elem, x, base)


def _groups_from_sets(sets: Sequence[Sequence[int] | int], shape: Sequence[int] | int) -> Tensor:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    size = math.prod(shape)
    groups = torch.full((size,), -1, dtype=torch.long)
    for player, members in enumerate(sets):
        idx = torch.as_tensor([members] if isinstance(members, int) else list(members), dtype=torch.long)
        if idx.numel() == 0:
            raise ValueError(f"Player {player} is empty; every player needs at least one input element.")
        if bool(((idx < 0) | (idx >= size)).any()):
            raise ValueError(f"Player {player} has indices outside 0..{size - 1} (the input has {size} elements).")
        taken = groups[idx] >= 0
        if bool(taken.any()):
            raise ValueError(
                f"Players overlap: element {int(idx[taken][0])} is in player {int(groups[idx[taken][0]])} and "
                f"player {player}; players must partition the input (each element in at most one player)."
            )
        groups[idx] = player
    return groups.view(shape)


def _patch_groups(
    grid: Sequence[int], image_shape: Sequence[int], select: Sequence[int] | None, flatten: bool
) -> tuple[Tensor, list[str]]:
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (rows, cols) of positive ints, got {tuple(grid)}.")
    if len(image_shape) not in (2, 3):
        raise ValueError(f"image_shape must be (H, W) or (C, H, W), got {tuple(image_shape)}.")
    h, w = image_shape[-2:]
    gh, gw = grid
    if h % gh or w % gw:
        raise ValueError(f"grid {tuple(grid)} does not divide the image {h}x{w} into equal patches.")
    rows = torch.arange(h) // (h // gh)
    cols = torch.arange(w) // (w // gw)
    patch = rows[:, None] * gw + cols[None, :]  # (H, W) patch index
    chosen = list(range(gh * gw)) if select is None else [int(s) for s in select]
    if len(set(chosen)) != len(chosen) or any(not 0 <= s < gh * gw for s in chosen):
        raise ValueError(f"select must list distinct patch indices in 0..{gh * gw - 1}, got {chosen}.")
    lookup = torch.full((gh * gw,), -1, dtype=torch.long)
    lookup[torch.as_tensor(chosen, dtype=torch.long)] = torch.arange(len(chosen))
    groups = lookup[patch]  # (H, W)
    if len(image_shape) == 3:
        groups = groups.expand(image_shape[0], h, w)
    if flatten:
        groups = groups.flatten()
    return groups.contiguous(), [f"r{s // gw}c{s % gw}" for s in chosen]  # row, column of the patch


class ImagePatches(Players):
    """Image players: equal patches of a grid (``select`` picks which patches play); see :meth:`Players.image_patches`.

    A class of its own so configs can build it (``class_path: lightning_probes.measures.interactions.ImagePatches``).

    Example:
        >>> ImagePatches((4, 4), (8, 8), select=[5, 6, 9, 10], flatten=True)
        Players(n=4, shape=(64,), rest='keep')
    """

    def __init__(
        self, grid: Sequence[int], image_shape: Sequence[int], select: Sequence[int] | None = None,
        rest: RestMode = "keep", flatten: bool = False,
    ) -> None:
        groups, names = _patch_groups(grid, image_shape, select, flatten)
        super().__init__(groups, rest=rest, names=names)


class FeatureGroups(Players):
    """Tabular players: player i is feature (or feature group) ``indices[i]``; see :meth:`Players.features`."""

    def __init__(
        self, indices: Sequence[Sequence[int] | int], num_features: int, rest: RestMode = "keep",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(_groups_from_sets(indices, num_features), rest=rest, names=names)


class TokenPositions(Players):
    """Sequence players: player i is token position (or span) ``positions[i]``; see :meth:`Players.tokens`."""

    def __init__(
        self, positions: Sequence[Sequence[int] | int], seq_len: int, rest: RestMode = "keep",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__(_groups_from_sets(positions, seq_len), rest=rest, names=names)
