"""Long runs stay bounded: a monitor's checkpointed state and its per-probe bookkeeping at 1k, 10k and 100k probes.

    python benchmarks/long_runs.py [--probes 100000] [--window 1000]

A real fit of 100k probes would take hours, so the probes are **simulated**: a monitor whose ``measure`` returns a
fixed-shape ProbeResult at once (the spectrum's 15 scalars and its regime table, which changes every 20k probes; or 3
layers x 10 condensation-like scalars and a per-layer table that changes every probe) is driven through the real
``Monitor._probe`` — history, failure bookkeeping, scalars to the loggers and ``callback_metrics``, text tables
(written only when changed), clock — with a minimal stand-in Trainer and a TensorBoard logger that counts what it is
given instead of encoding it (a real SummaryWriter costs the same per point at any run length, and on a loaded
machine its writer thread dominates the timing). What the measurement itself costs is not part of this benchmark
(see overhead.py and grid.py).

Prints, at 1k, 10k and 100k probes: the size of the monitor's ``state_dict`` as ``torch.save`` writes it (and what an
unbounded list of every probe's scalars would weigh), the per-probe bookkeeping CPU time over the last ``window``
probes before the mark (the median of ten slices' means), as a ratio to the 1k mark's (timed in the same process:
the machine is shared and noisy), and the text bytes handed to TensorBoard per 1k probes at the end. Targets: state
<= 2 MiB per monitor at 100k probes; per-probe cost flat (<= 1.1x from 1k to 100k).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from types import SimpleNamespace
from typing import Any

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lightning_probes.monitors.base import Monitor, ProbeResult
from lightning_probes.schedules import every
from lightning_probes.tensorboard import markdown_table

MARKS = (1_000, 10_000, 100_000)
SPECTRUM_KEYS = ["n_features", "n_features_99", "participation_ratio", "gap_at_C", "regime", "target_power_at_C",
                 "learned_power_at_C", "top_eigenvalue", "rank", "nc1", "nc2_equinorm", "nc2_equiangular",
                 "nc2_angle_deviation", "nc3", "nc4"]
CONDENSATION_KEYS = [f"layer{i}/{k}" for i in range(3) for k in (
    "n_directions", "largest_cluster_share", "effective_rank", "stable_rank", "mean_abs_cosine", "weight_norm",
    "relative_change", "dead_neurons", "n_neurons", "initial_stage_end")]


class Simulated(Monitor):
    """A monitor whose measurement is free: the ProbeResult a real one of this shape would give."""

    needs_probe_data = False

    def __init__(self, kind: str, keys: list[str], **kwargs: Any) -> None:
        super().__init__(schedule=every(1), at_start=False, at_end=False, images_every=0, **kwargs)
        self.kind, self.keys = kind, keys
        self.name = kind

    def measure(self, trainer: Any, pl_module: Any) -> ProbeResult:
        n = self.clock.n_probes
        scalars = {k: float((n * 7 + i) % 97) / 97 for i, k in enumerate(self.keys)}
        if self.kind == "spectrum":  # a regime table that changes every 20k probes
            flips = n // 20_000
            text = markdown_table(["step", "regime"], [[20_000 * i, "MF" if i % 2 else "EF"] for i in range(flips + 1)])
        else:  # a per-layer table whose figures change every probe
            text = markdown_table(["layer", "n_directions"], [[f"layer{i}", n % 13 + i] for i in range(3)])
        return ProbeResult(scalars=scalars, texts={"table": text})


def state_bytes(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


class CountingWriter:
    """Stands in for a SummaryWriter: counts the texts (and their bytes) it is given."""

    def __init__(self) -> None:
        self.texts = 0
        self.text_bytes = 0

    def add_text(self, tag: str, text: str, step: int) -> None:
        self.texts += 1
        self.text_bytes += len(text.encode())

    def flush(self) -> None:
        pass


class CountingLogger(TensorBoardLogger):
    """A TensorBoardLogger (so the monitor publishes its texts to it) that writes nothing."""

    def __init__(self) -> None:
        super().__init__(tempfile.mkdtemp(prefix="long_runs_"), name="run", version=0)
        self.writer, self.points = CountingWriter(), 0

    @property
    def experiment(self) -> CountingWriter:  # type: ignore[override]
        return self.writer

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.points += len(metrics)


def _median_mean(times: list[float], chunks: int = 10) -> float:
    """The median over ``chunks`` consecutive slices of the mean per-probe time: robust to a burst of load."""
    size = max(1, len(times) // chunks)
    means = sorted(sum(times[i:i + size]) / size for i in range(0, len(times) - size + 1, size))
    return means[len(means) // 2]


def run(kind: str, keys: list[str], probes: int, window: int) -> list[dict[str, float]]:
    logger = CountingLogger()
    trainer = SimpleNamespace(world_size=1, loggers=[logger], callback_metrics={}, is_global_zero=True,
                              strategy=None)
    monitor, module = Simulated(kind, keys), nn.Linear(1, 1)
    marks, rows, times, unbounded = set(MARKS) & set(range(probes + 1)), [], [], []
    text_bytes_at = {}
    for step in range(1, probes + 1):
        start = time.process_time()  # CPU time: on a shared machine wall time mostly measures the neighbours
        monitor._probe(trainer, module, step)
        times.append(time.process_time() - start)
        unbounded.append((step, monitor.history[-1][1]))  # what an unbounded history would hold
        if step in marks or step == probes - 1000:
            text_bytes_at[step] = logger.writer.text_bytes
        if step in marks:
            rows.append({
                "probes": step, "state": state_bytes(monitor.state_dict()),
                "unbounded": state_bytes({"history": [(s, dict(v)) for s, v in unbounded]}),
                "per_probe": _median_mean(times[-window:]), "kept": len(monitor.history),
            })
    if probes - 1000 in text_bytes_at and probes in text_bytes_at:
        rows[-1]["text_bytes_per_1k"] = text_bytes_at[probes] - text_bytes_at[probes - 1000]
    rows[-1]["text_events"] = logger.writer.texts
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--probes", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for kind, keys in (("spectrum", SPECTRUM_KEYS), ("condensation", CONDENSATION_KEYS)):
        rows = run(kind, keys, args.probes, args.window)
        base = rows[0]["per_probe"]
        print(f"\n{kind} ({len(keys)} scalars per probe; simulated probes through Monitor._probe)")
        print("| probes | state (torch.save) | unbounded history | history entries kept | per-probe cost vs 1k |")
        print("|---|---|---|---|---|")
        for row in rows:
            print(f"| {row['probes']:,} | {row['state'] / 2**20:.2f} MiB | {row['unbounded'] / 2**20:.2f} MiB | "
                  f"{row['kept']} | {row['per_probe'] / base:.2f}x ({row['per_probe'] * 1e6:.0f} us) |")
        last = rows[-1]
        if "text_bytes_per_1k" in last:
            print(f"text tables: {last['text_events']:,} written in {last['probes']:,} probes; "
                  f"{last['text_bytes_per_1k'] / 2**10:.1f} KiB per 1k probes at the end")
        ok_state = last["state"] <= 2 * 2**20
        ok_flat = last["per_probe"] / base <= 1.1
        print(f"targets: state <= 2 MiB: {'met' if ok_state else 'MISSED'}; per-probe cost <= 1.1x: "
              f"{'met' if ok_flat else 'MISSED'}")


if __name__ == "__main__":
    main()
