"""One probe of the concepts example: 16 units of ShapesCNN.conv2 x 5 ranges, 128 probe images of 32 x 32.

Target (issue 6): under 10 s on this CPU. Baselines in the same run: the probe's forward passes alone, and the
same probe with the paper's beam search instead of the exact search, and without the paper's range importance and
label masking (issue 16: 2 x 16 x 5 extra forward passes). Measured on the model at initialisation
and after 100 Adam steps (trained units have other activation distributions).

Run: python benchmarks/concepts_monitor.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from lightning_probes.datasets import ShapesProbe, make_shapes
from lightning_probes.models import ShapesCNN
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.probe_set import capture, probing


def monitor_for(model: ShapesCNN, probe: ShapesProbe, search: str, paper: bool = True) -> ConceptMonitor:
    monitor = ConceptMonitor("conv2", probe, num_clusters=5, max_length=3, search=search, images_every=0,
                             range_importance=paper, label_masking=paper)
    monitor.probe_set.materialise()
    with probing(model), capture(model, {"conv2": "output"}) as seen:
        model(probe.inputs[:1])
    monitor._check_layer_output(seen["conv2"])  # what on_train_start does, without a Trainer
    return monitor


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    torch.manual_seed(0)
    model = ShapesCNN(channels=(16, 16))
    probe = ShapesProbe(num_samples=128, size=32, seed=12345)
    train = make_shapes(2048, 32, seed=0)
    for label in ("initialisation", "after 100 Adam steps"):
        if label != "initialisation":
            opt = torch.optim.Adam(model.parameters(), lr=3e-3)
            for step in range(100):
                idx = torch.randint(0, 2048, (64,))
                loss = F.cross_entropy(model(train.images[idx]), train.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        exact, beam = monitor_for(model, probe, "exact"), monitor_for(model, probe, "beam")
        bare = monitor_for(model, probe, "exact", paper=False)

        def forward_only() -> None:
            with probing(model), capture(model, {"conv2": "output"}):
                for x, _ in exact.probe_set.batches("cpu"):
                    model(x)

        def probe_with(monitor: ConceptMonitor):
            def run() -> None:
                with probing(model):
                    run.report = monitor.measure(None, model)  # type: ignore[attr-defined]
            return run

        run_exact, run_beam, run_bare = probe_with(exact), probe_with(beam), probe_with(bare)
        t_fwd = best_of(args.repeats, forward_only)
        t_exact = best_of(args.repeats, run_exact)
        t_beam = best_of(args.repeats, run_beam)
        t_bare = best_of(args.repeats, run_bare)
        s = run_exact.report.scalars
        inactive = int(s["n_inactive_units"])
        print(f"{label}: one probe (16 units x 5 ranges, exact search) {t_exact:.2f} s  [target < 10 s]; "
              f"forward passes alone {t_fwd:.3f} s ({t_exact / t_fwd:.0f}x); with beam search {t_beam:.2f} s "
              f"(exact/beam {t_exact / t_beam:.2f}); without range importance and label masking {t_bare:.2f} s "
              f"(with/without {t_exact / t_bare:.2f}); {inactive} inactive units")
        print("  range importance per range: " + ", ".join(f"{s[f'range_importance_range_{c}']:.3f}"
                                                       for c in range(1, 6))
              + "; label masking per range: " + ", ".join(f"{s[f'label_masking_range_{c}']:.3f}" for c in range(1, 6)))


if __name__ == "__main__":
    main()
