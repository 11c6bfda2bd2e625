"""Cost of the condensation measures against training, on this machine's CPU.

Run: ``python benchmarks/condensation.py``. Prints medians and ratios measured in the same run:

- one probe of the width-1024 hidden layer (``layer2`` of a ThreeLayerNet(1, 1024, 1): a 1024 x 1024 weight)
  against one SGD training step of the same model at batch 64 (target: ratio <= 10);
- one probe of a width-4096 layer with the default ``max_neurons=2048`` sampling (target: under 2 s);
- where the probe's time goes (Gram, eigenvalues, clustering).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from lightning_probes.measures.condensation import condensation_stats, condensed_directions
from lightning_probes.models import ThreeLayerNet


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    net = ThreeLayerNet(1, 1024, 1, init_gamma=1.0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.rand(64, 1) * 2 - 1, torch.randn(64, 1)

    def train_step() -> None:
        optimizer.zero_grad()
        F.mse_loss(net(x), y).backward()
        optimizer.step()

    w0 = net.layer2.weight.detach().clone()

    def probe() -> None:
        condensation_stats(net.layer2.weight, net.layer2.bias, w0)

    step = median_seconds(train_step, 50)
    one_probe = median_seconds(probe, 7)
    print(f"training step, width 1024, batch 64 : {step * 1e3:8.2f} ms")
    print(f"one probe of layer2 (1024 x 1024)   : {one_probe * 1e3:8.2f} ms   ratio {one_probe / step:6.1f}x (target <= 10x)")

    w = net.layer2.weight.detach().double()
    gram = w @ w.T
    cos = gram / gram.diagonal().sqrt().outer(gram.diagonal().sqrt())
    print("  breakdown: Gram (float64)          : %8.2f ms" % (1e3 * median_seconds(lambda: w @ w.T, 7)))
    print("             eigvalsh (float64)      : %8.2f ms" % (1e3 * median_seconds(lambda: torch.linalg.eigvalsh(gram), 5)))
    print("             clustering (SciPy)      : %8.2f ms" % (1e3 * median_seconds(lambda: condensed_directions(cos), 5)))

    wide = ThreeLayerNet(1, 4096, 1, init_gamma=1.0).layer2
    wide0 = wide.weight.detach().clone()
    start = time.perf_counter()
    stats = condensation_stats(wide.weight, wide.bias, wide0, max_neurons=2048)
    wide_time = time.perf_counter() - start
    print(
        f"one probe of a 4096-wide layer, {len(stats.neuron_indices)} sampled neurons: {wide_time:6.2f} s "
        f"(target < 2 s; {wide_time / step:.0f}x a width-1024 training step)"
    )


if __name__ == "__main__":
    main()
