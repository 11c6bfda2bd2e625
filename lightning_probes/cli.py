"""The ``lightning-probes`` command.

``lightning-probes fit --config configs/digits_spectrum.yaml`` (LightningCLI; monitors declared by ``class_path``
in YAML) trains, then tests the model when the data has a test set, and prints what each monitor found and where
the TensorBoard logs are. ``lightning-probes report LOGDIR [--out report.html]`` turns a finished run's logs into
one self-contained HTML page.
"""

from __future__ import annotations

import argparse
import sys

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI

from lightning_probes.monitors.group import attached_monitors

__all__ = ["ProbesCLI", "main"]


class ProbesCLI(LightningCLI):
    """LightningCLI whose ``fit`` ends with a test run (if the data has a test set) and a summary of the probes."""

    def after_fit(self) -> None:
        trainer, datamodule = self.trainer, self.datamodule
        if datamodule is not None and type(datamodule).test_dataloader is not pl.LightningDataModule.test_dataloader:
            trainer.test(self.model, datamodule=datamodule, verbose=False)
        if not trainer.is_global_zero:
            return
        for monitor in attached_monitors(trainer):
            print(monitor.summary())
        for key in ("test/acc", "test/loss"):
            if key in trainer.callback_metrics:
                print(f"{key}: {float(trainer.callback_metrics[key]):.4f}")
        if trainer.log_dir:
            print(f"TensorBoard logs: {trainer.log_dir}  (tensorboard --logdir {trainer.log_dir})")


def report(argv: list[str]) -> None:
    """``lightning-probes report LOGDIR [--out FILE] [--quiet]``."""
    from lightning_probes.report import write_report

    parser = argparse.ArgumentParser(prog="lightning-probes report",
                                     description="Write a self-contained HTML report of a run's probes.")
    parser.add_argument("logdir", help="a TensorBoard log directory (e.g. runs/digits_spectrum/version_0)")
    parser.add_argument("--out", help="output file (default: LOGDIR/report.html)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    try:
        write_report(args.logdir, args.out, args.quiet)
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"lightning-probes report: error: {err}\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-probes`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["report"]:
        report(args[1:])
        return
    ProbesCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":  # pragma: no cover
    main()
