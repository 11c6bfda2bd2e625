"""Pictures and text to every attached logger that can take them, each through its own API.

Scalars go to every logger through ``log_metrics`` (base.py). Pictures ((H, W, 3) uint8), histograms and markdown
texts need more than that, and each logger spells it differently:

- ``TensorBoardLogger``: its ``SummaryWriter`` (``add_image`` / ``add_histogram`` / ``add_text``), as always;
- a logger class with ``log_image`` / ``log_text`` methods (Lightning's ``WandbLogger``; any user logger written
  the same way): ``log_image(key, images=[image], step=step)`` and ``log_text(key, columns=["text"],
  data=[[text]], step=step)``;
- ``MLFlowLogger``: its ``MlflowClient`` (``experiment``): ``log_image(run_id, image, key=..., step=...)`` and
  ``log_text(run_id, text, artifact_file)``;
- ``CometLogger``: its ``Experiment``: ``log_image(image, name=..., step=...)`` and ``log_text(text, step=...,
  metadata=...)``.

Any other logger (``CSVLogger``, ...) takes no pictures: :func:`picture_sinks` leaves it out and the monitor names
it in one info line. Everything here runs on global rank 0 only.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from lightning_probes.tensorboard import drawing

__all__ = ["Sink", "picture_sinks", "publish", "write_text"]


class Sink:
    """One logger's way of taking pictures and text. Subclasses override what their logger supports."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    @property
    def label(self) -> str:
        return type(self.logger).__name__

    def image(self, key: str, image: np.ndarray, step: int) -> None:
        raise NotImplementedError

    def histogram(self, key: str, values: Any, step: int) -> None:
        """Histograms only where the logger has them (TensorBoard); elsewhere nothing."""

    def text(self, key: str, text: str, step: int) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make what was written visible (TensorBoard buffers its events)."""


class _TensorBoard(Sink):
    def image(self, key: str, image: np.ndarray, step: int) -> None:
        self.logger.experiment.add_image(key, image, step, dataformats="HWC")

    def histogram(self, key: str, values: Any, step: int) -> None:
        self.logger.experiment.add_histogram(key, values, step)

    def text(self, key: str, text: str, step: int) -> None:
        self.logger.experiment.add_text(key, text, step)

    def flush(self) -> None:
        self.logger.experiment.flush()


class _Methods(Sink):
    """A logger class with its own ``log_image`` / ``log_text`` (WandbLogger's signatures)."""

    def image(self, key: str, image: np.ndarray, step: int) -> None:
        if hasattr(self.logger, "log_image"):
            self.logger.log_image(key, images=[image], step=step)

    def text(self, key: str, text: str, step: int) -> None:
        if hasattr(self.logger, "log_text"):
            self.logger.log_text(key, columns=["text"], data=[[text]], step=step)


class _MLFlow(Sink):
    def image(self, key: str, image: np.ndarray, step: int) -> None:
        self.logger.experiment.log_image(self.logger.run_id, image, key=_safe(key), step=step)

    def text(self, key: str, text: str, step: int) -> None:
        self.logger.experiment.log_text(self.logger.run_id, text, f"{key}/step_{step:08d}.md")


class _Comet(Sink):
    def image(self, key: str, image: np.ndarray, step: int) -> None:
        self.logger.experiment.log_image(image, name=key, step=step)

    def text(self, key: str, text: str, step: int) -> None:
        self.logger.experiment.log_text(text, step=step, metadata={"key": key})


def _safe(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . /`` and spaces: anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _sink(logger: Any) -> Sink | None:
    from lightning.pytorch.loggers import TensorBoardLogger

    if isinstance(logger, TensorBoardLogger):
        return _TensorBoard(logger)
    kind = type(logger).__name__
    if hasattr(logger, "log_image") or hasattr(logger, "log_text"):
        return _Methods(logger)
    if kind == "MLFlowLogger":  # by name: importing the class would import mlflow
        return _MLFlow(logger)
    if kind == "CometLogger":
        return _Comet(logger)
    return None


_ANNOUNCED: weakref.WeakSet = weakref.WeakSet()  # trainers whose picture-less loggers were named already


def picture_sinks(trainer: Any, announce: bool = False) -> list[Sink]:
    """The sinks of the loggers that take pictures, on global rank 0 (elsewhere none). With ``announce``, one info
    line per trainer names the attached loggers that cannot.

    Example:
        >>> from types import SimpleNamespace
        >>> from lightning.pytorch.loggers import CSVLogger
        >>> picture_sinks(SimpleNamespace(is_global_zero=True, loggers=[CSVLogger("/tmp")]))
        []
    """
    if not trainer.is_global_zero:
        return []
    sinks, unable = [], []
    for logger in trainer.loggers:
        sink = _sink(logger)
        if sink is None:
            unable.append(type(logger).__name__)
        else:
            sinks.append(sink)
    if announce and unable and trainer not in _ANNOUNCED:
        _ANNOUNCED.add(trainer)
        rank_zero_info(f"[lightning-probes] {', '.join(unable)} cannot take pictures or text (no log_image / "
                       "log_text); scalars still go to it" + (", pictures to the others." if sinks else
                                                             "; no picture is drawn."))
    return sinks


def publish(sinks: list[Sink], prefix: str, images: Mapping[str, np.ndarray], histograms: Mapping[str, Any],
            texts: Mapping[str, str], step: int) -> None:
    """Write a probe's artefacts, keys prefixed, to every sink. Writing a picture counts as drawing it (its
    encoding is part of its cost: see :func:`~lightning_probes.tensorboard.drawing`)."""
    for sink in sinks:
        with drawing():
            for key, image in images.items():
                sink.image(prefix + key, image, step)
        for key, values in histograms.items():
            sink.histogram(prefix + key, values, step)
        for key, text in texts.items():
            sink.text(prefix + key, text, step)


def write_text(sinks: list[Sink], key: str, text: str, step: int) -> None:
    """One text (a stop reason) to every sink."""
    for sink in sinks:
        sink.text(key, text, step)
