"""Watch the feature-map spectrum of an MLP on scikit-learn's digits, and stop once it is in the MF regime.

    python examples/digits_spectrum.py [--max-epochs 40] [--logdir runs]
    tensorboard --logdir runs

The same run as ``lightning-probes fit --config configs/digits_spectrum.yaml``.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_probes import FeatureSpectrumMonitor, StopOnRegime, log_spaced
from lightning_probes.datasets import DigitsDataModule
from lightning_probes.models import MLPClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    monitor = FeatureSpectrumMonitor(
        head="classifier",  # Φ is the input of this Linear layer
        probe_data="val",
        max_samples=512,
        schedule=log_spaced(per_decade=8, max_interval=100),  # dense early, where the regime forms
        images_every=4,
        triggers=[StopOnRegime("MF", patience=3, min_step=200)],
    )
    logger = TensorBoardLogger(args.logdir, name="digits_spectrum")
    trainer = pl.Trainer(max_epochs=args.max_epochs, callbacks=[monitor], logger=logger, log_every_n_steps=10)
    model, data = MLPClassifier(hidden=(256, 256), lr=0.1), DigitsDataModule(batch_size=64)
    trainer.fit(model, data)
    test = trainer.test(model, data, verbose=False)[0]

    print("\nregime changes:")
    for step, regime in monitor.regime_changes():
        print(f"  step {step:>5}: {regime}")
    step, last = monitor.history[-1]
    print(f"final probe (step {step}): n_features = {int(last['n_features'])}, "
          f"n_features_99 = {int(last['n_features_99'])}, n_features_decisions = "
          f"{int(last['n_features_decisions'])}, NC1 = {last['nc1']:.3f}, NC4 = {last['nc4']:.3f}")
    print(f"stopped by: {monitor.stop_reason or 'max_epochs'}")
    print(f"test accuracy: {test['test/acc']:.4f}")
    print(f"TensorBoard logs: {logger.log_dir}   ->   tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
