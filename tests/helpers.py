"""Shared test helpers: small fits and reading TensorBoard event files back."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

import lightning.pytorch as pl
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2


@dataclass
class Events:
    scalars: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    images: dict[str, list[int]] = field(default_factory=dict)
    texts: dict[str, list[str]] = field(default_factory=dict)
    histograms: dict[str, list[int]] = field(default_factory=dict)
    layouts: list = field(default_factory=list)  # layout_pb2.Layout, one per written layout

    def charts(self) -> dict[str, list[str]]:
        """category title -> chart titles of the (single) custom-scalars layout."""
        assert len(self.layouts) == 1, f"expected one custom-scalars layout, found {len(self.layouts)}"
        return {c.title: [ch.title for ch in c.chart] for c in self.layouts[0].category}


def read_events(logdir: str) -> Events:
    """Everything the event files under ``logdir`` hold, by tag."""
    files = glob.glob(os.path.join(logdir, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no event files under {logdir}"
    out = Events()
    for path in files:
        acc = EventAccumulator(path, size_guidance={"scalars": 0, "images": 0, "tensors": 0, "histograms": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            out.scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in tags.get("images", []):
            out.images.setdefault(tag, []).extend(e.step for e in acc.Images(tag))
        for tag in tags.get("histograms", []):
            out.histograms.setdefault(tag, []).extend(e.step for e in acc.Histograms(tag))
        for tag in tags.get("tensors", []):
            events = acc.Tensors(tag)
            if tag == "custom_scalars__config__":
                out.layouts.extend(layout_pb2.Layout.FromString(e.tensor_proto.string_val[0]) for e in events)
            else:
                name = tag.removesuffix("/text_summary")  # SummaryWriter.add_text's own suffix
                out.texts.setdefault(name, []).extend(
                    e.tensor_proto.string_val[0].decode() for e in events if e.tensor_proto.string_val
                )
    return out


def trainer(tmp_path, **kwargs) -> pl.Trainer:
    """A quiet CPU trainer logging to TensorBoard under ``tmp_path``."""
    from lightning.pytorch.loggers import TensorBoardLogger

    defaults = dict(
        accelerator="cpu", devices=1, logger=TensorBoardLogger(str(tmp_path), name="run"), enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, log_every_n_steps=1,
    )
    defaults.update(kwargs)
    return pl.Trainer(**defaults)


def fit_digits(tmp_path, monitor, model, max_steps: int, ckpt_path: str | None = None, **trainer_kw) -> pl.Trainer:
    """Seeded fit of ``model`` on scikit-learn's digits (batch 64) with ``monitor`` as the callback (unless
    ``callbacks=`` is given), logging to TensorBoard under ``tmp_path``; resumed from ``ckpt_path`` if given."""
    from lightning_probes.datasets import DigitsDataModule

    pl.seed_everything(0)
    trainer_kw.setdefault("callbacks", [monitor])
    t = trainer(tmp_path, max_steps=max_steps, **trainer_kw)
    t.fit(model, DigitsDataModule(batch_size=64), ckpt_path=ckpt_path)
    return t


def all_five(**extra) -> dict:
    """Preset arguments that give each of the five monitors what it needs, on ``MLPClassifier(hidden=(32,))``:
    4 pixel-block players, LIB node points at the two Linear layers, digit concepts explaining the hidden units."""
    from lightning_probes.datasets import DigitsProbe
    from lightning_probes.measures.interactions import FeatureGroups

    players = FeatureGroups([list(range(16 * i, 16 * i + 16)) for i in range(4)], num_features=64)
    return dict(head="classifier", players=players, lib_layers=["features.0", "classifier"],
                concept_layer="features.1", concepts=DigitsProbe(120), **extra)


class ClosesProcessGroup(pl.Callback):
    """Spawned DDP ranks meet, then destroy the gloo process group, at teardown.

    Lightning destroys only NCCL groups at exit and leaves a gloo group alive while the ranks exit. A rank was seen
    to abort there after fit had ended ("terminate called without an active exception", SIGABRT): once in CI, once
    in a full run here, never in 19 runs of the DDP tests alone. Nothing after callback teardown uses the group.
    """

    def teardown(self, trainer, pl_module, stage):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
