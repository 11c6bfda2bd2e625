"""The ``lightning-probes`` command.

``lightning-probes fit --config configs/digits_spectrum.yaml`` (LightningCLI; monitors declared by ``class_path``
in YAML) trains, then tests the model when the data has a test set, and prints what each monitor found and where
the TensorBoard logs are. ``lightning-probes report LOGDIR [--run NAME] [--out report.html] [--partial]`` turns
finished runs' logs into one self-contained HTML page. ``lightning-probes --help`` lists the commands.
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


_COMMANDS = """commands:
  fit         train a model with its monitors (LightningCLI; `lightning-probes fit --help`)
  validate    LightningCLI's validate
  test        LightningCLI's test
  predict     LightningCLI's predict
  report      write a self-contained HTML report of runs' probes (`lightning-probes report --help`)
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightning-probes")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def report(argv: list[str]) -> None:
    """``lightning-probes report LOGDIR [--run NAME] [--out FILE] [--partial] [--quiet]``.

    Exit status: 0 the page was written from complete logs; 2 bad input (no such directory, no event files, no such
    run, a settings file that is not UTF-8); 3 an event file could not be read to its end (the page is written all
    the same and says what is missing; ``--partial`` accepts it and exits 0).
    """
    from lightning_probes.report import DamagedLogs, write_report

    parser = argparse.ArgumentParser(
        prog="lightning-probes report",
        description="Write a self-contained HTML report of the runs under a log directory: one run, or one section "
                    "per run (each directory holding event files is a run) with a table of contents.")
    parser.add_argument("logdir", help="a TensorBoard log directory (e.g. runs/digits_spectrum/version_0, or "
                                       "runs/digits_spectrum for all its versions)")
    parser.add_argument("--run", metavar="NAME", help="report only this run (its path relative to LOGDIR)")
    parser.add_argument("--out", help="output file (default: LOGDIR/report.html)")
    parser.add_argument("--partial", action="store_true",
                        help="accept damaged event files: report what could be read (said in the page) and exit 0")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    try:
        write_report(args.logdir, args.out, args.quiet, run=args.run, partial=args.partial)
    except DamagedLogs as err:
        parser.exit(3, f"lightning-probes report: error: {err}\n")
    except (FileNotFoundError, ValueError) as err:
        parser.exit(2, f"lightning-probes report: error: {err}\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-probes`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["report"]:
        report(args[1:])
        return
    if args[:1] in (["--version"], ["-V"]):
        print(f"lightning-probes {_version()}")
        return
    if not args or args[:1] in (["-h"], ["--help"]):
        print(f"usage: lightning-probes [-h] [--version] {{fit,validate,test,predict,report}} ...\n\n"
              f"lightning-probes {_version()}: PyTorch Lightning callbacks that watch how a network learns.\n\n"
              f"{_COMMANDS}")
        return
    ProbesCLI(
        pl.LightningModule, pl.LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
        # None when run as the console script: LightningCLI then reads sys.argv itself, and does not warn that its
        # args parameter "is intended to run from within Python"
        args=None if argv is None else args, save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":  # pragma: no cover
    main()
