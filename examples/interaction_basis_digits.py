"""Watch the Local Interaction Basis of an MLP learning scikit-learn's digits: directions and edges, LIB vs PCA.

    python examples/interaction_basis_digits.py [--max-epochs 30] [--logdir runs]
    tensorboard --logdir runs

The same run as ``lightning-probes fit --config configs/interaction_basis_digits.yaml``. The node points are
the inputs of ``features.0`` (the pixels), ``features.2`` (hidden layer 1) and ``classifier`` (hidden layer 2),
plus the logits. At the end it prints, per layer, how many directions LIB keeps versus PCA at the same
threshold and how many edges hold 90% / 99% of the interaction mass in each basis.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.schedules import log_spaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    monitor = InteractionBasisMonitor(
        layers=["features.0", "features.2", "classifier"],  # node points: the inputs of these modules
        truncation=1e-6,
        num_samples=512,
        probe_data="train",
        schedule=log_spaced(per_decade=4, max_interval=150),
        images_every=3,
        ablation=True,
    )
    logger = TensorBoardLogger(args.logdir, name="interaction_basis_digits")
    trainer = pl.Trainer(max_epochs=args.max_epochs, callbacks=[monitor], logger=logger, log_every_n_steps=10)
    model, data = MLPClassifier(in_features=64, hidden=(100, 100), num_classes=10, lr=0.1), DigitsDataModule()
    trainer.fit(model, data)
    test = trainer.test(model, data, verbose=False)[0]

    step, last = monitor.history[-1]
    print(f"\nLocal Interaction Basis at step {step} (data directions; the constant direction apart):")
    print(f"  {'layer':<12}{'LIB dirs':>9}{'PCA dirs':>9}{'edges90 LIB':>13}{'PCA':>7}{'edges99 LIB':>13}{'PCA':>7}"
          f"{'constant share':>16}")
    for layer in monitor.layers:
        g = lambda key: int(last[f"{layer}/{key}"])  # noqa: E731
        print(f"  {layer:<12}{g('n_directions'):>9}{g('n_directions_pca'):>9}{g('edges_90'):>13}"
              f"{g('edges_90_pca'):>7}{g('edges_99'):>13}{g('edges_99_pca'):>7}"
              f"{last[f'{layer}/constant_edge_share']:>16.1%}")
    print(f"test accuracy: {test['test/acc']:.4f}")
    print(f"TensorBoard logs: {logger.log_dir}   ->   tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
