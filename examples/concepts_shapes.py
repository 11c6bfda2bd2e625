"""Explain the units of a small CNN with concept formulas per activation range while it learns coloured shapes.

    python examples/concepts_shapes.py [--max-epochs 15] [--logdir runs]
    tensorboard --logdir runs

The same run as ``lightning-probes fit --config configs/concepts_shapes.yaml``. The images (one circle, square or
triangle in red, green or blue on a noisy background) and their per-pixel concept masks are generated in code.
At each probe the 16 units of ``conv2`` are split into 5 activation ranges (exact 1-D k-means) and each range
gets the formula of up to 3 concepts with the highest IoU (exact search) — La Rosa et al., NeurIPS 2023.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_probes.datasets import ShapesDataModule, ShapesProbe
from lightning_probes.models import ShapesCNN
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.schedules import log_spaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    monitor = ConceptMonitor(
        layer="conv2",  # Sequential(Conv2d, ReLU): post-ReLU maps, 16 x 16, upsampled to the 32 x 32 masks
        concepts=ShapesProbe(num_samples=128, size=32, seed=12345),  # probe images + masks + concept names
        num_clusters=5,
        max_length=3,
        schedule=log_spaced(per_decade=4, max_interval=100),
        images_every=2,
    )
    logger = TensorBoardLogger(args.logdir, name="concepts_shapes")
    trainer = pl.Trainer(max_epochs=args.max_epochs, callbacks=[monitor], logger=logger, log_every_n_steps=10)
    model, data = ShapesCNN(channels=(16, 16), lr=3e-3), ShapesDataModule(batch_size=64)
    trainer.fit(model, data)

    print("\nmean IoU per activation range (1 = lowest ... 5 = highest) over training:")
    print("  step  " + "  ".join(f"range {c}" for c in range(1, 6)) + "  specialisation  explained  inactive")
    for step, s in monitor.history:
        ranges = "  ".join(f"{s[f'mean_iou_range_{c}']:7.3f}" for c in range(1, 6))
        print(f"  {step:>4}  {ranges}  {s['specialisation']:14.3f}  {int(s['n_units_explained']):>9}"
              f"  {int(s['n_inactive_units']):>8}")
    print("\nfinal formulas (unit/range -> formula):")
    for key, name in sorted(monitor.last_formulas.items(), key=lambda kv: tuple(map(int, kv[0].split("/")))):
        print(f"  {key:>6}  {name}")
    print(f"val accuracy: {float(trainer.callback_metrics['val/acc']):.3f}")
    print(f"TensorBoard logs: {logger.log_dir}   ->   tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
