"""Spectrum summaries at the widths of real models: the top-k Krylov route against the full float64 ``eigh``.

Run: ``python benchmarks/spectrum_scale.py [--sizes 1024 2048 4096] [--threads 1] [--crossover]``.

Σ is built directly as a PSD matrix (not from N samples: forming Φᵀ Φ at p = 4096, N = 2p would cost more than the
solves being compared): Σ = Q diag(λ) Qᵀ + V diag(s) Vᵀ with

- a power-law bulk λ_i = 0.1 · i^(-1.2) (the decay of trained-network feature spectra), rotated by a dense random
  orthogonal Q = A ⊗ B (Kronecker product of two random orthogonal factors; applied in O(p^2.5), so building Σ costs
  far less than one eigh),
- a planted low-rank signal: C = 10 directions V with strengths s = 1.0 … 0.5, the class structure.

Two heads are timed: ``signal`` (W along the planted directions plus 2 % noise: n_features_99 ≈ 10, a trained net)
and ``wide`` (W spread evenly over 250 bulk eigen-directions: n_features_99 ≈ 248, the issue's worst case
n_features_99 ≤ 256). Every row also checks the top-k answer against the full solve (eigenvalues, Π̂, n_features).

Each size prints the median time of one probe summary (operator from Σ to n_features, gap and regime) both ways
and their ratio, measured in the same run. Absolute times depend on the load of the machine; the ratio less so.
"""

from __future__ import annotations

import argparse
import time

import torch

from lightning_probes.measures.spectrum import cumulative_learned_power, diagonalise, features_needed, leading_spectrum

F64 = torch.float64


def kron_orthogonal(p: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random orthogonal factors A (a, a), B (b, b) with a · b = p; Q = A ⊗ B is dense and orthogonal."""
    a = 1 << (p.bit_length() - 1) // 2
    while p % a:
        a -= 1
    b = p // a
    fa, _ = torch.linalg.qr(torch.randn(a, a, generator=gen, dtype=F64))
    fb, _ = torch.linalg.qr(torch.randn(b, b, generator=gen, dtype=F64))
    return fa, fb


def apply_kron(fa: torch.Tensor, fb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(A ⊗ B) X for X (p, n): each column reshaped to (a, b) becomes A X Bᵀ."""
    a, b, n = len(fa), len(fb), x.shape[1]
    xr = x.T.reshape(n, a, b)
    return (fa @ xr @ fb.T).reshape(n, a * b).T


def planted_operator(p: int, seed: int = 0, classes: int = 10, wide: int = 250):
    """Σ (p, p), the planted directions V (p, C), the bulk eigenvectors' first ``wide`` columns (p, wide)."""
    gen = torch.Generator().manual_seed(seed)
    fa, fb = kron_orthogonal(p, gen)
    lam = 0.1 * torch.arange(1, p + 1, dtype=F64) ** -1.2  # (p,)
    q_lam = apply_kron(fa, fb, torch.diag(lam))  # Q diag(λ), (p, p)
    sigma = apply_kron(fa, fb, q_lam.T)  # Q (Q diag(λ))ᵀ = Q diag(λ) Qᵀ
    v, _ = torch.linalg.qr(torch.randn(p, classes, generator=gen, dtype=F64))  # (p, C)
    s = torch.linspace(1.0, 0.5, classes, dtype=F64)
    sigma = sigma + (v * s) @ v.T
    sigma = (sigma + sigma.T) / 2
    bulk = apply_kron(fa, fb, torch.eye(p, wide, dtype=F64))  # (p, wide) the leading bulk eigenvectors
    return sigma, v, lam, bulk, gen


def heads(p: int, v, lam, bulk, gen, classes: int = 10, wide: int = 250) -> dict[str, torch.Tensor]:
    signal = v.T + 0.2 * torch.randn(classes, p, generator=gen, dtype=F64) / p ** 0.5  # (C, p)
    # W u_i √λ_i of equal size for the first `wide` bulk directions: every one carries the same power
    coef = torch.randn(classes, wide, generator=gen, dtype=F64) / lam[:wide].sqrt()
    return {"signal": signal, "wide": coef @ bulk.T}


def timed(fn, repeats: int) -> tuple[float, object]:
    out, times = fn(), []  # the first call warms up (allocator, lazy libraries)
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2], out


def full_summary(sigma: torch.Tensor, w: torch.Tensor):
    spec = diagonalise(sigma)
    learned = cumulative_learned_power(spec, w, None, None, sigma)
    return spec, learned, features_needed(learned, 0.95), features_needed(learned, 0.99)


def run(sizes: list[int], repeats: int, direct_below: int | None) -> None:
    print(f"{'p':>5} {'head':>7} {'nf':>4} {'nf99':>5} {'k':>4} {'m':>5} {'fallback':>8} {'top-k s':>8} "
          f"{'full s':>8} {'ratio':>6}  max|Δλ|/λ1  max|ΔΠ̂|")
    for p in sizes:
        sigma, v, lam, bulk, gen = planted_operator(p)
        for name, w in heads(p, v, lam, bulk, gen).items():
            kw = {} if direct_below is None else {"direct_below": direct_below}
            t_top, out = timed(lambda: leading_spectrum(sigma, w, threshold=0.95, **kw), repeats)
            t_full, (spec, learned, nf, nf99) = timed(lambda: full_summary(sigma, w), max(1, repeats // 2))
            k = out.k
            d_lam = float(((out.eigenvalues - spec.eigenvalues[:k]).abs()).max() / spec.eigenvalues[0])
            d_pow = float((out.learned_power - learned[:k]).abs().max())
            agree = (out.n_features, out.n_features_99) == (nf, nf99)
            print(f"{p:>5} {name:>7} {out.n_features:>4} {out.n_features_99:>5} {k:>4} {out.basis_size:>5} "
                  f"{str(out.fallback):>8} {t_top:>8.3f} {t_full:>8.3f} {t_full / t_top:>6.1f}  {d_lam:.1e}"
                  f"     {d_pow:.1e}{'' if agree else '  n_features DIFFER'}")


def crossover(repeats: int) -> None:
    """Top-k (forced) against full eigh at small p: where the direct solve stops being cheaper."""
    print(f"{'p':>5} {'head':>7} {'top-k s':>8} {'full s':>8} {'full/top':>8}")
    for p in (256, 384, 512, 768, 1024):
        sigma, v, lam, bulk, gen = planted_operator(p, wide=min(250, p // 4))
        for name, w in heads(p, v, lam, bulk, gen, wide=min(250, p // 4)).items():
            t_top, _ = timed(lambda: leading_spectrum(sigma, w, direct_below=0), repeats)
            t_full, _ = timed(lambda: full_summary(sigma, w), repeats)
            print(f"{p:>5} {name:>7} {t_top:>8.3f} {t_full:>8.3f} {t_full / t_top:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--crossover", action="store_true", help="time both routes at p = 256 … 1024 instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); shared machine: compare the ratios")
    if args.crossover:
        crossover(args.repeats)
    else:
        run(args.sizes, args.repeats, None)


if __name__ == "__main__":
    main()
