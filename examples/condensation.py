"""Condensation in small-initialised three-layer nets: the same 1-D target learned from three init scales.

    python examples/condensation.py [--gammas 0.5 1.0 1.5] [--max-steps 2000] [--logdir runs]
    tensorboard --logdir runs/condensation

Every parameter of a width-100 tanh ThreeLayerNet is drawn from N(0, 100^(-2γ)) and trained by plain SGD on
y = sin(3x). Small initialisation (γ = 1.5) spends an initial stage in which the weights barely move while the
neurons' input-weight directions align, then the weights blow up (the initial stage's end: the peak of the norm's
growth rate): the first layer ends on one direction and the second layer's effective rank falls from ≈80 to under
10, with nearly all of its norm in one direction. At γ = 0.5 nothing condenses and no initial stage is found. The
runs sit side by side in TensorBoard (one version per γ); compare the cosine heatmaps under IMAGES. One γ is also
``lightning-probes fit --config configs/condensation.yaml``.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_probes.datasets import RegressionDataModule
from lightning_probes.models import ThreeLayerRegressor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.schedules import log_spaced


def run(gamma: float, args: argparse.Namespace) -> tuple[CondensationMonitor, str]:
    pl.seed_everything(args.seed)
    monitor = CondensationMonitor(
        layers="auto",  # layer1 and layer2: every Linear but the output
        threshold=0.95,  # neurons whose directions have |cos| >= 0.95 on average are one condensed direction
        schedule=log_spaced(per_decade=10, max_interval=100),
        images_every=4,
    )
    logger = TensorBoardLogger(args.logdir, name="condensation", version=f"gamma_{gamma}")
    trainer = pl.Trainer(max_steps=args.max_steps, callbacks=[monitor], logger=logger, log_every_n_steps=10,
                         check_val_every_n_epoch=25, enable_model_summary=False,
                         enable_checkpointing=False)
    model = ThreeLayerRegressor(width=args.width, init_gamma=gamma, lr=args.lr)
    trainer.fit(model, RegressionDataModule(target="sin", frequency=3.0, batch_size=64))
    return monitor, logger.log_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.5, 1.0, 1.5])
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; small matrices run fastest on one (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for gamma in args.gammas:
        monitor, log_dir = run(gamma, args)
        first, last = monitor.history[0][1], monitor.history[-1][1]
        for layer in monitor.layers:
            rows.append((gamma, layer, first[f"{layer}/n_directions"], last[f"{layer}/n_directions"],
                         last[f"{layer}/n_directions_weighted"], last[f"{layer}/n_directions_random"],
                         first[f"{layer}/effective_rank"], last[f"{layer}/effective_rank"],
                         monitor.stage_end.get(layer), log_dir))

    print(f"\n{'gamma':>5}  {'layer':<7} {'n_directions':>14}  {'99% of norm':>11}  {'random':>6}  "
          f"{'effective rank':>16}  {'initial stage end':>17}")
    for gamma, layer, d0, d1, heavy, chance, r0, r1, end, _ in rows:
        ended = "-" if end is None else f"step {end}"
        print(f"{gamma:>5}  {layer:<7} {int(d0):>5} -> {int(d1):<5}  {int(heavy):>11}  {chance:>6.1f}  "
              f"{r0:>6.1f} -> {r1:<6.1f}  {ended:>17}")
    print(f"\nTensorBoard: tensorboard --logdir {args.logdir}/condensation")


if __name__ == "__main__":
    main()
