"""Timing helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``, so this imports as
``_timing``). Benchmarks report ratios against a baseline timed in the same process: the machines are shared
and noisy, absolute times are not comparable between runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import lightning.pytorch as pl


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one untimed warm-up call (allocator, vmap
    tracing and lazy imports would otherwise land in the first sample)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class LoopTimer(pl.Callback):
    """Wall time of the training loop alone, from ``on_train_start`` to ``on_train_end`` (no Trainer start-up,
    no data-module set-up), so bare and monitored runs are compared on the part a monitor can slow down."""

    seconds: float = float("nan")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start
