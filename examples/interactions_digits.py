"""Watch the AND-OR interactions of an MLP learning scikit-learn's digits: how many, of which orders, per layer.

    python examples/interactions_digits.py [--max-epochs 20] [--logdir runs]
    tensorboard --logdir runs

The same run as ``lightning-probes fit --config configs/interactions_digits.yaml``. Ten 2x2 patches of the 8x8
image are the players (the four corner patches always keep their pixels). At each probe the first 16 probe
samples are masked in all 2^10 ways; the log-odds of the true class — of the network's output, and of linear
probes on the two hidden layers — is decomposed into sparse AND-OR interactions. At the end it prints how
n_salient evolved and the per-layer completeness / redundancy against the output.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.measures.interactions import ImagePatches
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.schedules import log_spaced

PLAYERS = [1, 2, 4, 5, 6, 7, 9, 10, 13, 14]  # the non-corner cells of a 4x4 grid of 2x2 patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    monitor = InteractionMonitor(
        players=ImagePatches(grid=(4, 4), image_shape=(8, 8), select=PLAYERS, flatten=True),
        layers=["features.1", "features.3"],  # outputs of the two hidden ReLUs
        num_samples=16,
        max_samples=512,  # the probe set: baseline (its mean) and the layer probes' training data
        probe_data="train",
        schedule=log_spaced(per_decade=3, max_interval=100),
        images_every=2,
    )
    logger = TensorBoardLogger(args.logdir, name="interactions_digits")
    trainer = pl.Trainer(max_epochs=args.max_epochs, callbacks=[monitor], logger=logger, log_every_n_steps=10)
    model, data = MLPClassifier(in_features=64, hidden=(64, 64), num_classes=10, lr=0.1), DigitsDataModule()
    trainer.fit(model, data)
    test = trainer.test(model, data, verbose=False)[0]

    print("\nSalient AND-OR interactions of the output (per sample, mean over 16 samples):")
    print(f"  {'step':>6}{'n_salient':>11}{'mean order':>12}{'emerged':>9}{'forgotten':>11}")
    for step, scalars in monitor.history:
        print(f"  {step:>6}{scalars['n_salient']:>11.1f}{scalars['mean_order']:>12.2f}"
              f"{scalars.get('emerged', float('nan')):>9.2f}{scalars.get('forgotten', float('nan')):>11.2f}")
    step, last = monitor.history[-1]
    n = monitor.players.n
    print(f"\nCompleteness / redundancy of each layer against the output at step {step}, by order:")
    print(f"  {'layer':<12}{'probe acc':>10}{'complete':>10}{'redundant':>11}")
    for layer in monitor.layers:
        print(f"  {layer:<12}{last[f'{layer}/probe_accuracy']:>10.3f}{last[f'{layer}/completeness']:>10.3f}"
              f"{last[f'{layer}/redundancy']:>11.3f}")
    print(f"\n  {'order':<24}" + "".join(f"{k:>6}" for k in range(1, n + 1)))
    print(f"  {'n_salient (output)':<24}" + "".join(f"{last[f'n_salient_order_{k}']:>6.1f}" for k in range(1, n + 1)))
    for layer in monitor.layers:
        for key in ("completeness", "redundancy"):
            values = monitor.last_by_order[layer][key][1:].tolist()  # NaN: no salient interaction of that order
            print(f"  {layer + ' ' + key:<24}" + "".join(f"{v:>6.2f}" for v in values))
    print(f"test accuracy: {test['test/acc']:.4f}")
    print(f"TensorBoard logs: {logger.log_dir}   ->   tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
