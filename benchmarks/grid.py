"""The overhead grid: every monitor alone and every preset, under every(1), every(10), every(100) and budget(0.05).

    python benchmarks/grid.py [--steps 1000] [--repeats 3] [--cell-seconds 8] [--threads 1] [--no-memory]
                              [--check-steps 700,2000,10000,40000] [--check-repeats 2] [--check-only]

Cells are wall-time ratios of training with the monitor(s) to bare training of the same model for the same number
of steps, all measured in one process with the repeats interleaved (so a drift of the machine hits every cell
alike); in brackets the same ratio in CPU time, which other processes on a shared machine disturb less. The
reference model is the digits MLP 64-256-256-10 (batch 64), and ThreeLayerNet (width 100, γ = 1.5, the
condensation example) for CondensationMonitor alone. Single monitors run with pictures off (they have their own
cadence; see benchmarks/overhead.py); presets run as shipped, pictures included.

A cell whose probes would take more than ``--cell-seconds`` over the full run is measured over fewer steps (at
least 5 probe intervals), which the table notes: its ratio is the same quantity, (training + probes) / training,
over a shorter run; a cell that takes over a minute is run once. The "as shipped" column runs each preset with its
own schedules. "Memory" is the peak resident memory a row adds: in a fresh process, peak RSS after the monitored
run minus peak RSS after the same bare run before it.

Last, the budget presets are checked as shipped (``--check-steps``): at 700 and 2000 steps, the run lengths of the
examples (the README's all-five example is 680 steps), for the probes every monitor gets (at least 3, the last
at the final step); at 10 000 and 40 000 steps (~20 s and ~80 s of bare training) against their bounds (5%, 15%),
on which the one-off costs — the unbudgeted probe at step 0, the final-state probe, the first pictures — are paid
back. ``--check-only`` runs just that. The wall ratio stops before the final-state probes (listed first, the loop
timer ends at ``on_train_end`` before them); their cost is its own column.
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import lightning.pytorch as pl
import torch

from lightning_probes import presets
from lightning_probes.datasets import DigitsDataModule, DigitsProbe, RegressionDataModule
from lightning_probes.measures.interactions import FeatureGroups
from lightning_probes.models import MLPClassifier, ThreeLayerRegressor
from lightning_probes.monitors.base import Monitor
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.group import MonitorGroup
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import Budget, Schedule, budget, every

COLUMNS: dict[str, Callable[[], Schedule]] = {
    "every(1)": lambda: every(1), "every(10)": lambda: every(10), "every(100)": lambda: every(100),
    "budget(0.05)": lambda: budget(0.05),
}
SHIPPED = "as shipped"
LONG_CELL = 60.0  # seconds: a cell this slow is run once, not once per repeat
LIB_LAYERS = ["features.0", "features.2", "classifier"]


def image_rows() -> FeatureGroups:
    """8 players: the 8 pixel rows of a digit."""
    return FeatureGroups([list(range(8 * r, 8 * r + 8)) for r in range(8)], num_features=64)


def preset_kwargs(all_five: bool) -> dict:
    if not all_five:
        return {"head": "classifier", "probe_data": "val"}
    return {"head": "classifier", "probe_data": "val", "players": image_rows(), "lib_layers": LIB_LAYERS,
            "interaction_layers": ["features.3"], "concept_layer": "features.3", "concepts": DigitsProbe(512)}


@dataclass
class Row:
    name: str
    model: str  # "mlp" or "three_layer"
    build: Callable[[Schedule | None], list[Monitor] | MonitorGroup]  # None: the preset's own schedules
    preset: bool = False


def _with_schedule(monitors: MonitorGroup, schedule: Schedule | None) -> MonitorGroup:
    for monitor in monitors if schedule is not None else []:
        # a budget column is the preset's total: split evenly, as the presets themselves do
        monitor.schedule = budget(schedule.fraction / len(monitors)) if isinstance(schedule, Budget) else schedule
    return monitors


def rows() -> list[Row]:
    single = [
        Row("FeatureSpectrumMonitor", "mlp",
            lambda s: [FeatureSpectrumMonitor(schedule=s, probe_data="val", images_every=0)]),
        Row("CondensationMonitor (ThreeLayerNet)", "three_layer",
            lambda s: [CondensationMonitor(schedule=s, images_every=0)]),
        Row("InteractionMonitor (8 players, 8 samples)", "mlp",
            lambda s: [InteractionMonitor(image_rows(), num_samples=8, probe_data="val", max_samples=256,
                                          schedule=s, images_every=0)]),
        Row("InteractionBasisMonitor (3 layers, 256 samples)", "mlp",
            lambda s: [InteractionBasisMonitor(LIB_LAYERS, num_samples=256, probe_data="val", schedule=s,
                                               images_every=0)]),
        Row("ConceptMonitor (32 units, 512 samples)", "mlp",
            lambda s: [ConceptMonitor("features.3", DigitsProbe(512), units=range(32), schedule=s, images_every=0)]),
    ]
    made = [
        Row(f"presets.{fn.__name__} ({'all five' if five else 'head only'})", "mlp",
            lambda s, fn=fn, five=five: _with_schedule(fn(**preset_kwargs(five)), s), preset=True)
        for fn in (presets.economy, presets.standard, presets.full) for five in (False, True)
    ]
    return single + made


def fit_seconds(model: str, steps: int, monitors: list[Monitor] | MonitorGroup) -> tuple[float, float]:
    """(wall, CPU) seconds of the training loop alone (Trainer start-up and data set-up excluded). A preset's
    MonitorGroup goes in as the one callback it is."""
    pl.seed_everything(0, verbose=False)
    timer = _LoopTimer()
    if model == "mlp":
        module, data = MLPClassifier(hidden=(256, 256)), DigitsDataModule(batch_size=64)
    else:
        module, data = ThreeLayerRegressor(width=100, init_gamma=1.5), RegressionDataModule()
    trainer = pl.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=_logger(), enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        callbacks=[timer, *([monitors] if isinstance(monitors, MonitorGroup) else monitors)],
    )
    trainer.fit(module, data)
    return timer.wall, timer.cpu


def _logger():
    """Every run, bare ones included, logs to TensorBoard in a temp dir (Lightning's default logger), so a preset's
    pictures and text go somewhere real and the logger's own cost is in the baseline too, not charged to the probes."""
    import tempfile

    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(tempfile.mkdtemp(prefix="grid-"), name="run")


class _LoopTimer(pl.Callback):
    """Wall and CPU time from on_train_start to on_train_end. Listed first, so it stops before the monitors'
    final probes (at_end), which are the same one probe whatever the schedule."""

    def on_train_start(self, trainer, pl_module):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def on_train_end(self, trainer, pl_module):
        self.wall, self.cpu = time.perf_counter() - self._wall, time.process_time() - self._cpu


def probe_seconds(row: Row) -> float:
    """Seconds of one probe of all the row's monitors (mean over a 3-step run probing every step), to size cells."""
    monitors = row.build(every(1))
    fit_seconds(row.model, 3, monitors)
    return sum(m.clock.probe_seconds / max(m.clock.n_probes, 1) for m in monitors)


def cell_steps(column: str, cost: float, steps: int, cell_seconds: float) -> int:
    interval = {"every(1)": 1, "every(10)": 10, "every(100)": 100}.get(column)
    if interval is None:  # budget and the shipped schedules hold themselves to a share of training
        return steps
    return int(min(steps, max(5 * interval, round(cell_seconds * interval / cost, -1))))


def measure_memory(row_index: int, steps: int) -> float:
    """MiB of peak RSS that the row adds (run in a fresh process: peak RSS only ever grows)."""
    row = rows()[row_index]
    fit_seconds(row.model, steps, [])
    before = _peak_rss_kib()
    fit_seconds(row.model, steps, row.build(every(10)))
    return (_peak_rss_kib() - before) / 1024


def _peak_rss_kib() -> int:
    """This process's peak resident memory in KiB. Linux's VmHWM belongs to the process image; getrusage's ru_maxrss
    does not: it survives execve, so a child started by this (large) grid process would begin at the parent's peak
    and every row would read 0 MiB added."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cell-seconds", type=float, default=8.0,
                        help="probe time a cell may take; beyond it the cell runs fewer steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default="", help="comma-separated row numbers to run (default: all)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--check-steps", default="700,2000,10000,40000",
                        help='lengths (comma-separated) of the runs checking the budget presets ("": none)')
    parser.add_argument("--check-repeats", type=int, default=2, help="repeats of the (long) preset check runs")
    parser.add_argument("--check-only", action="store_true", help="only the preset check")
    parser.add_argument("--memory-row", type=int, default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.ERROR)
    if args.memory_row is not None:
        print(f"{measure_memory(args.memory_row, 200):.1f}")
        return

    check_steps = [int(n) for n in args.check_steps.split(",") if n]  # "" skips the check
    if args.check_only:
        check_presets(check_steps, args.check_repeats)
        return
    table = rows()
    chosen = [int(i) for i in args.rows.split(",")] if args.rows else list(range(len(table)))
    fit_seconds("mlp", 30, [FeatureSpectrumMonitor(schedule=every(5), probe_data="val")])  # warm-up: imports
    costs = {i: probe_seconds(table[i]) for i in chosen}
    cells = []  # (row index, column, steps)
    for i in chosen:
        columns = [*COLUMNS, SHIPPED] if table[i].preset else list(COLUMNS)
        cells += [(i, col, cell_steps(col, costs[i], args.steps, args.cell_seconds)) for col in columns]
    bare: dict[tuple[str, int], list[tuple[float, float]]] = {}
    runs: dict[tuple[int, str], list[tuple[float, float]]] = {}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        for model, steps in sorted({(table[i].model, s) for i, _, s in cells}):
            bare.setdefault((model, steps), []).append(fit_seconds(model, steps, []))
        for i, col, steps in cells:
            if runs.get((i, col)) and runs[(i, col)][0][0] > LONG_CELL:
                continue  # measured once: a ratio in the tens does not need a median
            schedule = None if col == SHIPPED else COLUMNS[col]()
            runs.setdefault((i, col), []).append(fit_seconds(table[i].model, steps, table[i].build(schedule)))
            print(f"  {table[i].name} / {col} ({steps} steps): {runs[(i, col)][-1][0]:.1f} s", file=sys.stderr)
        print(f"repeat {repeat + 1}/{args.repeats} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    memory = {} if args.no_memory else {
        i: subprocess.run([sys.executable, __file__, "--memory-row", str(i), "--threads", str(args.threads)],
                          capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        for i in chosen
    }
    print(f"## overhead grid: wall-time ratio to bare training [CPU-time ratio], median of {args.repeats}, "
          f"{args.threads} thread(s); {args.steps} steps unless noted\n")
    header = ["row", "one probe", *COLUMNS, SHIPPED, "peak memory added"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    steps_of = {(i, col): s for i, col, s in cells}
    for i in chosen:
        out = [table[i].name, f"{costs[i] * 1e3:.0f} ms"]
        for col in [*COLUMNS, SHIPPED]:
            if (i, col) not in runs:
                out.append("—")
                continue
            steps = steps_of[(i, col)]
            base = bare[(table[i].model, steps)]
            wall = statistics.median(r[0] for r in runs[(i, col)]) / statistics.median(b[0] for b in base)
            cpu = statistics.median(r[1] for r in runs[(i, col)]) / statistics.median(b[1] for b in base)
            note = "" if steps == args.steps else f" ({steps} steps)"
            out.append(f"{wall:.2f}x [{cpu:.2f}x]{note}")
        out.append(f"{memory[i]} MiB" if i in memory else "—")
        print("| " + " | ".join(out) + " |")
    check_presets(check_steps, args.check_repeats)


def check_presets(lengths: list[int], repeats: int) -> None:
    """The budget presets as shipped on runs long enough for their one-off costs to be paid back. Besides the wall and
    CPU ratios, the monitors' own account: the share of the bare loop their probes took (the rest of the overhead is
    what no monitor can time: Lightning's dispatch of every hook of every callback, one-off imports)."""
    table = [r for r in rows() if r.preset and "full" not in r.name]  # full is unbounded by design
    for steps in lengths:
        bare, runs, shares = [], {r.name: [] for r in table}, {r.name: [] for r in table}
        probes: dict[str, str] = {}
        finals: dict[str, list[float]] = {r.name: [] for r in table}
        for _ in range(repeats):
            bare.append(fit_seconds("mlp", steps, []))
            for row in table:
                monitors = row.build(None)
                runs[row.name].append(fit_seconds("mlp", steps, monitors))
                shares[row.name].append(sum(m.clock.probe_seconds for m in monitors) / bare[-1][0])
                # probes of each monitor (name: count), and the final-state probes' seconds (not in the wall ratio)
                probes[row.name] = ", ".join(f"{m.name} {m.clock.n_probes}" for m in monitors)
                finals[row.name].append(sum(m.cost_model.final_seconds or 0.0 for m in monitors))
                print(f"  check {row.name}, {steps} steps: {runs[row.name][-1][0]:.1f} s", file=sys.stderr)
        base_wall, base_cpu = statistics.median(b[0] for b in bare), statistics.median(b[1] for b in bare)
        print(f"\n## budget presets as shipped, {steps} steps (bare loop {base_wall:.1f} s), median of {repeats}\n")
        print("| preset | wall-time ratio | CPU-time ratio | probes' own account | probes per monitor (last run) | "
              "final-state probes |\n|---|---|---|---|---|---|")
        for name, times in runs.items():
            wall = statistics.median(t[0] for t in times) / base_wall
            cpu = statistics.median(t[1] for t in times) / base_cpu
            print(f"| {name} | {wall:.3f}x | {cpu:.3f}x | {statistics.median(shares[name]):.1%} | {probes[name]} | "
                  f"{statistics.median(finals[name]):.2f} s |")


if __name__ == "__main__":
    main()
