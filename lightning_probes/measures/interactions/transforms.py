"""The subset lattice and its fast transforms: zeta (subset sums), Möbius (Harsanyi dividends), superset sums.

Subsets are integers: bit i of T is set when player i is kept, so T = 0 is ∅ and T = 2^n - 1 is N; every game
or interaction vector has 2^n entries in that order on its last dimension. Symbols: B samples (or problems),
m = 2^n subsets. The transforms are butterflies on Kronecker blocks in O(n·2^n) — never a 2^n×2^n matrix (the
dense matrices below exist only as test and benchmark references).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = [
    "dense_mobius_matrix",
    "dense_or_matrix",
    "dense_zeta_matrix",
    "mobius_transform",
    "subset_masks",
    "subset_orders",
    "superset_zeta_transform",
    "zeta_transform",
]

_F64 = torch.float64
MAX_PLAYERS_HARD = 24  # 2^24 subsets per sample: beyond this nothing fits in memory anyway


# ---------------------------------------------------------------------------------------------------------
# The subset lattice
# ---------------------------------------------------------------------------------------------------------
def _num_players(m: int) -> int:
    n = m.bit_length() - 1
    if m < 1 or (1 << n) != m:
        raise ValueError(
            f"The last dimension must hold 2^n subset values (one per subset of the n players), got {m}."
        )
    return n


def subset_masks(n: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean membership table of all 2^n subsets: row T, column i is True when player i ∈ T.

    Args:
        n: number of players.
        device: device of the result.

    Returns:
        Tensor of shape (2^n, n), dtype bool; row 0 is ∅, row 2^n - 1 is N.

    Raises:
        ValueError: n outside [0, MAX_PLAYERS_HARD].

    Example:
        >>> subset_masks(2).int().tolist()
        [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    if not 0 <= n <= MAX_PLAYERS_HARD:
        raise ValueError(f"n must be in [0, {MAX_PLAYERS_HARD}] (2^n subsets are enumerated), got {n}.")
    subsets = torch.arange(1 << n, device=device)  # (m,)
    bits = torch.arange(n, device=device)  # (n,)
    return (subsets[:, None] >> bits[None, :]) & 1 == 1  # (m, n)


def subset_orders(n: int, device: torch.device | str | None = None) -> Tensor:
    """Order |T| of every subset T (its number of players).

    Raises:
        ValueError: n outside [0, MAX_PLAYERS_HARD].

    Example:
        >>> subset_orders(3).tolist()
        [0, 1, 1, 2, 1, 2, 2, 3]
    """
    return subset_masks(n, device).sum(-1)  # (m,)
_BLOCK_BITS = 5  # players per dense Kronecker block (32×32): a radix-32 butterfly that runs as batched matmuls
_ZETA = ((1.0, 0.0), (1.0, 1.0))  # one player: f(T ∪ {i}) receives f(T)
_MOBIUS = ((1.0, 0.0), (-1.0, 1.0))
_SUPERSET = ((1.0, 1.0), (0.0, 1.0))  # one player: f(T) receives f(T ∪ {i})


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run small, memory-bound tensor loops on one intra-op thread.

    Measured here on a busy 2-core CPU: a 16×4096 zeta transform took 75 ms with 2 threads (spin-waiting) and
    1.5 ms with one; the solver's thousands of small steps suffer the same way.
    """
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _kronecker_blocks(factors: Tensor, bits: int) -> Tensor:
    """⊗^bits of each 2×2 factor: (F, 2, 2) -> (F, 2^bits, 2^bits)."""
    out = torch.ones(factors.shape[0], 1, 1, dtype=factors.dtype, device=factors.device)
    for _ in range(bits):
        side = out.shape[-1] * 2
        out = torch.einsum("fij,fkl->fikjl", out, factors).reshape(-1, side, side)
    return out


@functools.lru_cache(maxsize=64)
def _cached_blocks(factor: tuple[tuple[float, float], ...], bits: int, dtype: torch.dtype, device: str) -> Tensor:
    return _kronecker_blocks(torch.tensor(factor, dtype=dtype, device=device)[None], bits)


def _kronecker(
    f: Tensor, factors: Tensor | tuple[tuple[float, float], ...], cache: dict[int, Tensor] | None = None
) -> Tensor:
    """Apply ⊗_{i<n} factors[j] (the same 2×2 matrix for every player) to f[j] along the last dim.

    The fast zeta / Möbius transform generalised: the n players are taken _BLOCK_BITS at a time, each group by
    a 2^k×2^k Kronecker block as one batched matmul, so the cost is O(2^n·n·2^k/k) and no 2^n×2^n matrix exists.

    Args:
        f: (F, ..., 2^n).
        factors: (F, 2, 2), or one 2×2 factor as a tuple (F = 1; its blocks are cached).
        cache: a dict that keeps the blocks of tensor factors between calls (same factors, dtype and device).

    Returns:
        (F, ..., 2^n).
    """
    m = f.shape[-1]
    n = _num_players(m)
    shape = f.shape
    g = f.reshape(shape[0], -1, m)  # (F, L, m)
    done = 0
    while done < n:
        bits = min(_BLOCK_BITS, n - done)
        if isinstance(factors, tuple):
            block = _cached_blocks(factors, bits, f.dtype, str(f.device))  # (1, 2^k, 2^k)
        elif cache is not None and bits in cache:
            block = cache[bits]
        else:
            block = _kronecker_blocks(factors.to(f.dtype), bits)  # (F, 2^k, 2^k)
            if cache is not None:
                cache[bits] = block
        # the k lowest bits of the current layout are the last axis: one batched matmul applies the block
        g = torch.matmul(g.reshape(shape[0], -1, 1 << bits), block.transpose(-1, -2))
        # rotate: the processed bits become the highest, the next group the lowest (n rotated bits = identity)
        g = g.reshape(shape[0], -1, m >> bits, 1 << bits).transpose(-1, -2).reshape(shape[0], -1, m)
        done += bits
    return g.reshape(shape)


def _lattice_transform(f: Tensor, factor: tuple[tuple[float, float], ...]) -> Tensor:
    with _one_thread():
        return _kronecker(f[None], factor)[0]


def zeta_transform(f: Tensor) -> Tensor:
    """Subset sums (f Z)(T) = Σ_{S⊆T} f(S), by the fast zeta transform in O(n·2^n).

    Args:
        f: values on subsets, shape (..., 2^n).

    Returns:
        Tensor of shape (..., 2^n).

    Raises:
        ValueError: the last dimension of f is not 2^n.

    Example:
        >>> zeta_transform(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
        [1.0, 3.0, 4.0, 10.0]
    """
    return _lattice_transform(f, _ZETA)


def mobius_transform(f: Tensor) -> Tensor:
    """Möbius inversion (Harsanyi dividends) g(S) = Σ_{T⊆S} (-1)^{|S|-|T|} f(T), the inverse of the zeta transform.

    Args:
        f: values on subsets, shape (..., 2^n).

    Returns:
        Tensor of shape (..., 2^n).

    Raises:
        ValueError: the last dimension of f is not 2^n.

    Example:
        >>> mobius_transform(torch.tensor([1.0, 3.0, 4.0, 10.0])).tolist()
        [1.0, 2.0, 3.0, 4.0]
    """
    return _lattice_transform(f, _MOBIUS)


def superset_zeta_transform(f: Tensor) -> Tensor:
    """Superset sums g(S) = Σ_{T⊇S} f(T): the adjoint (transpose) of :func:`zeta_transform`.

    Raises:
        ValueError: the last dimension of f is not 2^n.

    Example:
        >>> superset_zeta_transform(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist()
        [10.0, 6.0, 7.0, 4.0]
    """
    return _lattice_transform(f, _SUPERSET)


def dense_zeta_matrix(n: int, dtype: torch.dtype = _F64) -> Tensor:
    """Reference only: the 2^n×2^n matrix Z[T, S] = 1[S ⊆ T] (so zeta_transform(f) = f @ Z.T).

    Example:
        >>> dense_zeta_matrix(1).tolist()
        [[1.0, 0.0], [1.0, 1.0]]
    """
    t = torch.arange(1 << n)
    return ((t[:, None] & t[None, :]) == t[None, :]).to(dtype)  # (m, m)


def dense_mobius_matrix(n: int, dtype: torch.dtype = _F64) -> Tensor:
    """Reference only: the AND matrix M[S, T] = (-1)^{|S|-|T|} 1[T ⊆ S] of the definition (I_and = M v_and).

    Example:
        >>> dense_mobius_matrix(1).tolist()
        [[1.0, 0.0], [-1.0, 1.0]]
    """
    orders = subset_orders(n)
    parity = 1.0 - 2.0 * ((orders[:, None] - orders[None, :]) % 2).to(dtype)  # (m, m)
    return torch.where(dense_zeta_matrix(n, dtype) > 0, parity, torch.zeros_like(parity))


def dense_or_matrix(n: int, dtype: torch.dtype = _F64) -> Tensor:
    r"""Reference only: the OR matrix O[S, T] = -(-1)^{|S|-|T'|} 1[T' ⊆ S], T' = N \ T (I_or = O v_or).

    Example:
        >>> dense_or_matrix(1).tolist()
        [[0.0, -1.0], [-1.0, 1.0]]
    """
    return 0.0 - dense_mobius_matrix(n, dtype).flip(1)  # column T holds the coefficient of v_or(x_T)
