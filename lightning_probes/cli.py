"""The ``lightning-probes`` command: LightningCLI ``fit`` (monitors declared by ``class_path`` in YAML).

``lightning-probes fit --config configs/digits_spectrum.yaml`` trains, then tests the model when the data has a
test set, and prints what each monitor found and where the TensorBoard logs are.
"""

from __future__ import annotations

import sys

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from lightning_probes.monitors.base import Monitor

__all__ = ["ProbesCLI", "main"]


class ProbesCLI(LightningCLI):
    """LightningCLI whose ``fit`` ends with a test run (if the data has a test set) and a summary of the probes."""

    def after_fit(self) -> None:
        trainer, datamodule = self.trainer, self.datamodule
        if datamodule is not None and type(datamodule).test_dataloader is not pl.LightningDataModule.test_dataloader:
            trainer.test(self.model, datamodule=datamodule, verbose=False)
        if not trainer.is_global_zero:
            return
        for callback in trainer.callbacks:
            if isinstance(callback, Monitor):
                print(callback.summary())
        for key in ("test/acc", "test/loss"):
            if key in trainer.callback_metrics:
                print(f"{key}: {float(trainer.callback_metrics[key]):.4f}")
        if trainer.log_dir:
            print(f"TensorBoard logs: {trainer.log_dir}  (tensorboard --logdir {trainer.log_dir})")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-probes`` console script."""
    args = sys.argv[1:] if argv is None else argv
    ProbesCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":  # pragma: no cover
    main()
