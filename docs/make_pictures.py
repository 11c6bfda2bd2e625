"""Draw the one real picture each monitor page in docs/ shows, from short real training runs.

Each run trains a small model shipped with the package (lightning_probes.models) on data shipped with it
(lightning_probes.datasets: scikit-learn's digits, the generated 1-D regression data) for a few hundred steps with
one monitor attached, and keeps the pictures that monitor sends to a picture-taking logger. The last picture of
the chosen tag is written to docs/img/<monitor>.png. Nothing is downloaded.

Run from the repository root (about a minute on one CPU core)::

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python docs/make_pictures.py            # every picture
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python docs/make_pictures.py spectrum   # only one
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from lightning.pytorch.loggers import Logger  # noqa: E402

from lightning_probes import (  # noqa: E402
    ConceptMonitor,
    CondensationMonitor,
    FeatureSpectrumMonitor,
    ImagePatches,
    InteractionBasisMonitor,
    InteractionMonitor,
    every,
)
from lightning_probes.datasets import DigitsDataModule, DigitsProbe, RegressionDataModule  # noqa: E402
from lightning_probes.models import MLPClassifier, ThreeLayerRegressor  # noqa: E402

OUT = Path(__file__).resolve().parent / "img"


class PictureLogger(Logger):
    """Keeps every picture a monitor sends (WandbLogger's ``log_image`` signature), by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.images: dict[str, list[tuple[int | None, np.ndarray]]] = {}

    @property
    def name(self) -> str:
        return "pictures"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_image(self, key: str, images: list[np.ndarray], step: int | None = None, **kwargs: Any) -> None:
        self.images.setdefault(key, []).append((step, np.asarray(images[0])))


def _fit(model: pl.LightningModule, data: pl.LightningDataModule, monitor: Any, max_steps: int) -> PictureLogger:
    pl.seed_everything(0, verbose=False)
    pictures = PictureLogger()
    with tempfile.TemporaryDirectory() as root:
        trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=[pictures],
                             callbacks=[monitor], enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                             default_root_dir=root)
        trainer.fit(model, data)
    return pictures


def spectrum() -> PictureLogger:
    monitor = FeatureSpectrumMonitor(head="classifier", probe_data="val", schedule=every(100), images_every=1)
    return _fit(MLPClassifier(hidden=(256, 256)), DigitsDataModule(), monitor, max_steps=300)


def condensation() -> PictureLogger:
    # the configs/condensation.yaml set-up, shortened: small initialisation (gamma 1.5), sin 3x, through the plateau
    monitor = CondensationMonitor(layers=["layer1", "layer2"], schedule=every(300), images_every=1)
    model = ThreeLayerRegressor(in_features=1, width=100, activation="tanh", init_gamma=1.5, lr=0.2)
    # the heatmap's two-line title is wider than its 4.8-inch figure at the default title size ("large") and
    # lightning_probes.tensorboard.heatmap_image centres it over the axes, which the colour bar pushes left, so
    # its first characters fell off the picture's left edge; one size smaller it fits (only this page's picture)
    with matplotlib.rc_context({"axes.titlesize": "medium"}):
        return _fit(model, RegressionDataModule(num_train=1024, num_val=256, target="sin", frequency=3.0),
                    monitor, max_steps=1200)


def interactions() -> PictureLogger:
    # configs/interactions_digits.yaml, with 4 samples: ten 2x2 patches of the 8x8 digit are the players
    players = ImagePatches(grid=(4, 4), image_shape=(8, 8), select=[1, 2, 4, 5, 6, 7, 9, 10, 13, 14], flatten=True)
    monitor = InteractionMonitor(players=players, layers=["features.1", "features.3"], num_samples=4,
                                 schedule=every(200), images_every=1, at_start=False)
    return _fit(MLPClassifier(hidden=(64, 64), lr=0.1), DigitsDataModule(), monitor, max_steps=200)


def interaction_basis() -> PictureLogger:
    monitor = InteractionBasisMonitor(layers=["features.0", "features.2", "classifier"], num_samples=256,
                                      schedule=every(300), images_every=1, at_start=False)
    return _fit(MLPClassifier(hidden=(100, 100), lr=0.1), DigitsDataModule(), monitor, max_steps=300)


def concepts() -> PictureLogger:
    probe = DigitsProbe(num_samples=512)
    monitor = ConceptMonitor(layer="features.3", concepts=probe, units=list(range(16)), schedule=every(300),
                             images_every=1, at_start=False, range_importance=False)
    return _fit(MLPClassifier(hidden=(64, 64), lr=0.1), DigitsDataModule(), monitor, max_steps=300)


# page name -> (run, the tag whose last picture the page shows)
PICTURES: dict[str, tuple[Callable[[], PictureLogger], str]] = {
    "spectrum": (spectrum, "probes/spectrum/cumulative_power"),
    "condensation": (condensation, "probes/condensation/layer2/cosine_heatmap"),
    "interactions": (interactions, "probes/interactions/order_histogram"),
    "interaction_basis": (interaction_basis, "probes/lib/edges/features.2"),
    "concepts": (concepts, "probes/concepts/iou_per_range"),
}


def main(names: list[str]) -> None:
    OUT.mkdir(exist_ok=True)
    unknown = sorted(set(names) - set(PICTURES))
    if unknown:
        raise SystemExit(f"unknown picture(s) {unknown}; choose from {sorted(PICTURES)}")
    for name in names or list(PICTURES):
        run, tag = PICTURES[name]
        # the runs build their model before _fit seeds, and the global RNG of a fresh process is not the same from
        # one process to the next: without this seed every call drew a different initialisation (and picture)
        pl.seed_everything(0, verbose=False)
        pictures = run()
        if tag not in pictures.images:
            raise SystemExit(f"{name}: no picture {tag!r}; the run drew {sorted(pictures.images)}")
        step, image = pictures.images[tag][-1]
        path = OUT / f"{name}.png"
        plt.imsave(path, image)
        print(f"{path.relative_to(OUT.parent.parent)}: {tag} at step {step}, {image.shape[1]}x{image.shape[0]}, "
              f"{path.stat().st_size // 1024} KiB; other tags: {sorted(set(pictures.images) - {tag})}")


if __name__ == "__main__":
    main(sys.argv[1:])
