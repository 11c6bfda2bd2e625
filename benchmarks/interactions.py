"""Benchmarks of the AND-OR interaction measures (issue 4), each against a baseline measured in the same run.

0. One InteractionMonitor probe of the digits example (16 samples, n = 10, 2 layers + output).
1. Fast Möbius (butterfly) transform vs the dense 2^n×2^n matrix product at n = 10 and 12.
2. Sparse AND-OR decomposition at n = 10: the default (ADMM / Douglas-Rachford on the fast transforms) and the
   exact LP (HiGHS) against the reference recipe (10^4 steps of SGD-momentum, lr 1e-5 → 1e-6, dense matrices):
   time ratio and objective, on games of a digits MLP (10 patch players) and on random games.

Run: ``python benchmarks/interactions.py`` (add ``--quick`` for fewer samples).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from lightning_probes.datasets import load_digits_tensors
from lightning_probes.measures.interactions import (
    Players,
    dense_mobius_matrix,
    log_odds,
    masked_outputs,
    mobius_transform,
    sparse_and_or,
)

DIGITS_PLAYERS = [1, 2, 4, 5, 6, 7, 9, 10, 13, 14]  # the 10 non-corner 2x2 patches of the 4x4 grid


def _best_time(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_transforms(batch: int) -> None:
    print(f"\n## Möbius transform of {batch} games: fast (Kronecker butterfly, 1 thread) vs dense matrix (float64)")
    print("| n | fast | dense matmul (all threads) | dense (1 thread) | ratio dense / fast | max abs difference |")
    print("|---|---|---|---|---|---|")
    threads = torch.get_num_threads()
    for n in (10, 12):
        f = torch.randn(batch, 1 << n, dtype=torch.float64)
        dense = dense_mobius_matrix(n)  # built once, not timed (it alone is 4^n entries)
        fast_t = _best_time(lambda: mobius_transform(f))
        dense_t = _best_time(lambda: f @ dense.T)
        torch.set_num_threads(1)
        dense_1 = _best_time(lambda: f @ dense.T)
        torch.set_num_threads(threads)
        err = (mobius_transform(f) - f @ dense.T).abs().max().item()
        print(f"| {n} | {fast_t * 1e3:.2f} ms | {dense_t * 1e3:.2f} ms | {dense_1 * 1e3:.2f} ms | "
              f"{min(dense_t, dense_1) / fast_t:.0f}x | {err:.1e} |")


def digits_games(num_samples: int, seed: int = 0) -> torch.Tensor:
    """v(x_T) of a quickly trained 64-128-128-10 MLP on digits, 10 patch players, baseline = data mean."""
    torch.manual_seed(seed)
    x, y = load_digits_tensors()
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):  # full batch: ~97% train accuracy
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    players = Players.image_patches((4, 4), (8, 8), select=DIGITS_PLAYERS, flatten=True)
    with torch.no_grad():
        logits = masked_outputs(net, x[:num_samples], players, baseline=x.mean(0))
    return log_odds(logits, y[:num_samples]).values.to(torch.float64)


def bench_solvers(name: str, v: torch.Tensor, run_lp: bool) -> None:
    start = time.perf_counter()
    sgd = sparse_and_or(v, method="sgd")
    sgd_t = time.perf_counter() - start
    rows = [("SGD recipe (10^4 steps, dense)", sgd_t, sgd.objective, "")]
    start = time.perf_counter()
    default = sparse_and_or(v)
    rows.append(("default (ADMM, fast transforms)", time.perf_counter() - start, default.objective,
                 f"{default.iterations} iterations"))
    lp_obj = None
    if run_lp:
        start = time.perf_counter()
        lp = sparse_and_or(v, method="lp")
        rows.append(("exact LP (HiGHS)", time.perf_counter() - start, lp.objective, ""))
        lp_obj = lp.objective
    print(f"\n## AND-OR decomposition, {name}: {v.shape[0]} games, n = {v.shape[1].bit_length() - 1}")
    print("| solver | time | speed-up vs SGD | mean objective | objective / SGD | objective / LP | note |")
    print("|---|---|---|---|---|---|---|")
    for label, seconds, obj, note in rows:
        vs_lp = f"{(obj / lp_obj).mean().item():.4f}" if lp_obj is not None else "-"
        print(
            f"| {label} | {seconds:.2f} s | {sgd_t / seconds:.1f}x | {obj.mean().item():.3f} | "
            f"{(obj / sgd.objective).mean().item():.4f} | {vs_lp} | {note} |"
        )


def bench_monitor_probe() -> None:
    """One probe of the digits example: 16 samples, n = 10, 2 layers (+ the output), as the monitor runs it."""
    from lightning_probes.measures.interactions import ImagePatches
    from lightning_probes.models import MLPClassifier
    from lightning_probes.monitors.interactions import InteractionMonitor
    from lightning_probes.probe_set import probing

    torch.manual_seed(0)
    x, y = load_digits_tensors()
    model = MLPClassifier(in_features=64, hidden=(64, 64), num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):  # a partly trained network, as mid-run
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    monitor = InteractionMonitor(
        ImagePatches((4, 4), (8, 8), select=DIGITS_PLAYERS, flatten=True), layers=["features.1", "features.3"],
        num_samples=16, max_samples=512, probe_data=(x, y),
    )
    monitor.probe_set.materialise()
    print("\n## One InteractionMonitor probe of the digits example (16 samples, n = 10, 2 layers + output)")
    print("| pictures | time | target |")
    print("|---|---|---|")
    for pictures in (False, True):
        monitor.render_images = pictures
        times = []
        for _ in range(3):
            start = time.perf_counter()
            with probing(model):
                report = monitor.measure(None, model)  # type: ignore[arg-type]
            times.append(time.perf_counter() - start)
        print(f"| {'yes' if pictures else 'no'} | {min(times):.2f} s (best of 3) | < 5 s |")
    print(f"n_salient = {report.scalars['n_salient']:.1f}, features.3 completeness = "
          f"{report.scalars['features.3/completeness']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_monitor_probe()
    bench_transforms(batch=4 if args.quick else 16)
    samples = 2 if args.quick else 4
    bench_solvers("digits MLP, 10 patch players", digits_games(samples), run_lp=True)
    g = torch.Generator().manual_seed(1)
    bench_solvers("random games", torch.randn(samples, 1 << 10, dtype=torch.float64, generator=g), run_lp=True)


if __name__ == "__main__":
    main()
