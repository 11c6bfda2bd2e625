"""Overhead of FeatureSpectrumMonitor on the digits MLP (64-256-256-10), all measured in one process.

    python benchmarks/overhead.py [--steps 1000] [--repeats 5] [--threads 1]

Prints, as ratios to a baseline measured in the same run (machines here are noisy, absolute times are not):
1. training wall time with the monitor at every(1), every(10), every(100) and budget(0.05) over bare training
   (pictures off: they have their own cadence, costed in 3);
2. one probe's measurement (capture, statistics, diagonalisation, scalars; with and without the NC4 second pass)
   over a bare no-grad forward pass of the probe set plus one float64 symmetric eigensolve of the p x p matrix;
3. rendering the pictures of one probe, over the same baseline;
4. the memory of the statistics for 512 and 4096 probe samples (it must not grow).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import lightning.pytorch as pl
import torch
from _timing import LoopTimer

from lightning_probes import FeatureSpectrumMonitor, budget, every
from lightning_probes.datasets import DigitsDataModule, load_digits_tensors
from lightning_probes.models import MLPClassifier
from lightning_probes.probe_set import probing


def train_seconds(steps: int, monitor: FeatureSpectrumMonitor | None) -> float:
    pl.seed_everything(0, verbose=False)
    timer = LoopTimer()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer] + ([monitor] if monitor else []),
    )
    trainer.fit(MLPClassifier(hidden=(256, 256)), DigitsDataModule(batch_size=64))
    return timer.seconds



def probe_costs(repeats: int, pictures: bool = True) -> tuple[float, dict[str, tuple[float, float]]]:
    """Baseline seconds and, per probe variant, (median seconds, median ratio to the baseline). Baseline and probes
    are timed in alternation, ``repeats`` rounds, and each round's ratio uses that round's baseline, so a drift of the
    shared machine hits numerator and denominator alike."""
    x, y = load_digits_tensors()
    model = MLPClassifier(hidden=(256, 256))
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    monitors = {
        "probe, NC4 previous means (default)": FeatureSpectrumMonitor(probe_data=(x, y), max_samples=512),
        "probe, NC4 current means (2 passes)": FeatureSpectrumMonitor(probe_data=(x, y), max_samples=512,
                                                                      nc4_means="current"),
        "probe, no neural collapse": FeatureSpectrumMonitor(probe_data=(x, y), max_samples=512, neural_collapse=False),
        "probe, no decision count": FeatureSpectrumMonitor(probe_data=(x, y), max_samples=512, decisions=False),
        "probe, neither": FeatureSpectrumMonitor(probe_data=(x, y), max_samples=512, decisions=False,
                                                 neural_collapse=False),
    }
    runs: dict[str, Callable[[], None]] = {}
    for label, monitor in monitors.items():
        monitor.check_model(trainer, model)  # what setup does: resolves the head
        monitor.on_train_start(trainer, model)  # fixes the probe set and builds the statistics

        def run(render: bool = False, monitor=monitor) -> None:
            monitor.render_images = render
            with probing(model):
                monitor.measure(trainer, model)

        runs[label] = run
        if pictures and "default" in label:
            runs["probe + pictures"] = lambda run=run: run(True)

    probe_x, sym = x[:512], _sym(256)

    def baseline() -> None:
        with torch.no_grad():
            for start in range(0, 512, 256):
                model(probe_x[start : start + 256])
        torch.linalg.eigh(sym)

    base_times, times = [], {label: [] for label in runs}
    for fn in [baseline, *runs.values()]:
        fn()  # warm-up: allocator, lazy initialisation, the first probe's second NC4 pass
    for round_ in range(repeats):
        base_times.append(_seconds(baseline))
        for label, fn in runs.items():
            if label == "probe + pictures" and round_ >= max(3, repeats // 4):
                continue  # ~0.5 s each: a few rounds are enough
            times[label].append(_seconds(fn))
    base = statistics.median(base_times)
    return base, {label: (statistics.median(t), statistics.median(s / b for s, b in zip(t, base_times)))
                  for label, t in times.items()}


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _sym(p: int) -> torch.Tensor:
    a = torch.randn(p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return a @ a.T


def memory_bytes(num_samples: int) -> int:
    from lightning_probes.measures.spectrum import FeatureStatistics

    stats = FeatureStatistics(256, 10)
    for start in range(0, num_samples, 256):
        batch = min(256, num_samples - start)
        stats.update(torch.randn(batch, 256), torch.randint(0, 10, (batch,)))
    return sum(v.numel() * v.element_size() for v in stats.metric_state.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (1: small ops time steadily on a shared, noisy CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-run start-up chatter

    schedules = {"every(1)": every(1), "every(10)": every(10), "every(100)": every(100), "budget(0.05)": budget(0.05)}
    train_seconds(20, FeatureSpectrumMonitor(schedule=every(5), probe_data="val"))  # warm-up: imports, allocators
    bare, runs, clocks = [], {k: [] for k in schedules}, {}
    for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every row alike
        bare.append(train_seconds(args.steps, None))
        for label, schedule in schedules.items():
            monitor = FeatureSpectrumMonitor(schedule=schedule, probe_data="val", images_every=0)
            runs[label].append(train_seconds(args.steps, monitor))
            clocks[label] = monitor.clock  # what the schedule saw (last repeat)
    base = statistics.median(bare)
    print(f"## training overhead ({args.steps} steps, {args.threads} thread(s), median of {args.repeats}; "
          f"bare loop {base:.2f} s)")
    for label, times in runs.items():
        clock = clocks[label]
        print(f"{label:>14}: {statistics.median(times) / base:.3f}x   ({clock.n_probes} probes, "
              f"{1e3 * clock.probe_seconds / max(clock.n_probes, 1):.1f} ms each in the loop; the monitor's own "
              f"account: probes = {clock.probe_seconds / clock.train_seconds:.1%} of training time)")

    ref, costs = probe_costs(repeats=41)
    print(f"\n## one probe (512 samples, p = 256) vs forward + eigh = {ref * 1e3:.1f} ms (median of per-round ratios)")
    for label, (seconds, ratio) in costs.items():
        print(f"{label:>36}: {ratio:.2f}x  ({seconds * 1e3:.1f} ms)")

    print("\n## statistics memory")
    for n in (512, 4096):
        print(f"{n:>5} probe samples: {memory_bytes(n) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
