"""Cost of the condensation measures and monitor against training, on this machine's CPU.

Run: ``python benchmarks/condensation.py [--threads 1]``. Prints medians and ratios measured in the same run:

- one probe of the width-1024 hidden layer (``layer2`` of a ThreeLayerNet(1, 1024, 1): a 1024 x 1024 weight)
  against one SGD training step of the same model at batch 64 (issue target: ratio <= 10);
- where that probe's time goes (float64 Gram, float64 eigenvalues, heatmap order, clustering), with the torch
  forms used before next to the faster ones;
- one probe of a width-4096 layer with the default ``max_neurons=2048`` sampling, and with 1024 (target < 2 s);
- inside ``Trainer.fit``: the monitor's measured seconds per probe (both hidden layers) against the seconds per
  training step, and the share of a run it costs on the default log-spaced schedule.
"""

from __future__ import annotations

import argparse
import warnings

import lightning.pytorch as pl
import torch
from _timing import median_seconds
from threadpoolctl import threadpool_limits
from torch.nn import functional as F

from lightning_probes.datasets import RegressionDataModule
from lightning_probes.measures.condensation import (
    _cosine_from_gram,
    _eigvalsh,
    _gram,
    condensation_stats,
    condensed_directions,
    eigenvector_order,
    relative_change,
)
from lightning_probes.models import ThreeLayerNet, ThreeLayerRegressor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.schedules import Clock, every, log_spaced


def parts(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Where one probe's time goes, each part as condensation_stats runs it (float64 throughout)."""
    w = weight.detach().double()
    aug = torch.cat([w, bias.detach().double()[:, None]], 1)
    gram = _gram(w)
    cos = _cosine_from_gram(gram + torch.outer(bias.detach().double(), bias.detach().double()))
    rows = [
        ("Gram (float64, NumPy BLAS)", lambda: _gram(w)),
        ("  the same by torch (before)", lambda: w @ w.T),
        ("eigvalsh (float64, SciPy)", lambda: _eigvalsh(gram)),
        ("  the same by torch (before)", lambda: torch.linalg.eigvalsh(gram)),
        ("heatmap order (Lanczos)", lambda: eigenvector_order(cos)),
        ("  full eigh (before)", lambda: torch.linalg.eigh(cos)),
        ("clustering (components)", lambda: condensed_directions(cos)),
        ("the cosines from the Gram", lambda: _cosine_from_gram(gram)),
        ("relative change", lambda: relative_change(weight, aug[:, :-1])),
    ]
    for label, fn in rows:
        print(f"  {label:31s}: {1e3 * median_seconds(fn, 5):8.2f} ms")


def measure_level() -> float:
    torch.manual_seed(0)
    net = ThreeLayerNet(1, 1024, 1, init_gamma=1.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.rand(64, 1) * 2 - 1, torch.randn(64, 1)

    def train_step() -> None:
        optimizer.zero_grad()
        F.mse_loss(net(x), y).backward()
        optimizer.step()

    w0 = net.layer2.weight.detach().clone()
    step = median_seconds(train_step, 50)
    one_probe = median_seconds(lambda: condensation_stats(net.layer2.weight, net.layer2.bias, w0), 7)
    print(f"training step, width 1024, batch 64 : {step * 1e3:8.2f} ms")
    print(f"one probe of layer2 (1024 x 1024)   : {one_probe * 1e3:8.2f} ms   ratio {one_probe / step:6.1f}x "
          "(target <= 10x)")
    parts(net.layer2.weight, net.layer2.bias)
    wide = ThreeLayerNet(1, 4096, 1, init_gamma=1.0).layer2
    wide0 = wide.weight.detach().clone()
    for max_neurons in (2048, 1024):
        seconds = median_seconds(lambda: condensation_stats(wide.weight, wide.bias, wide0, max_neurons=max_neurons), 2)
        print(f"one probe of a 4096-wide layer, max_neurons={max_neurons}: {seconds:6.2f} s (target < 2 s)")
    return step


def monitor_level() -> None:
    steps, interval = 300, 50
    pl.seed_everything(0)
    monitor = CondensationMonitor(schedule=every(interval), images_every=0, at_end=False)
    trainer = pl.Trainer(max_steps=steps, callbacks=[monitor], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(ThreeLayerRegressor(width=1024, init_gamma=1.0, lr=0.01), RegressionDataModule(batch_size=64))
    clock = monitor.clock
    per_probe = clock.probe_seconds / clock.n_probes
    per_step = clock.train_seconds / steps
    print(f"in Trainer.fit (width 1024, layer1 + layer2): {per_probe * 1e3:.1f} ms per probe, "
          f"{per_step * 1e3:.2f} ms per training step -> {per_probe / per_step:.1f}x")
    schedule, clock0 = log_spaced(per_decade=8, max_interval=500), Clock()
    for total in (1000, 10000):
        n = sum(schedule(s, clock0) for s in range(total + 1))
        share = n * per_probe / (n * per_probe + total * per_step)
        print(f"  default schedule log_spaced(8, max_interval=500) over {total} steps: {n} probes, "
              f"{100 * share:.1f}% of the run")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: the machine is shared, one thread gives stable timings)")
    parser.add_argument("--no-fit", action="store_true", help="skip the Trainer.fit part")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s) (NumPy/SciPy BLAS limited to the same)")
    with threadpool_limits(args.threads):  # the probe's Gram and eigenvalues run in NumPy/SciPy's BLAS
        measure_level()
        if not args.no_fit:
            monitor_level()


if __name__ == "__main__":
    main()
