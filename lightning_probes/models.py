"""Ready-made models for the examples, configs and tests.

Each model names its layers so monitors can find them by module name (``"classifier"`` is the final
``nn.Linear`` of :class:`MLPClassifier`).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MLPClassifier", "ShapesCNN"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]()


class MLPClassifier(pl.LightningModule):
    """A fully-connected classifier: ``features`` (Linear + activation blocks) then the ``classifier`` head.

    Args:
        in_features: input dimension (64 for scikit-learn's 8x8 digits).
        hidden: widths of the hidden layers; the last one is the feature dimension p seen by the head.
        num_classes: number of classes C (the head's output dimension).
        activation: ``"relu"``, ``"tanh"`` or ``"gelu"``.
        lr: learning rate of plain SGD (with ``momentum``).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        loss: ``"cross_entropy"`` or ``"mse"`` (on one-hot targets, the setting of Nam et al. 2024).

    Example:
        >>> model = MLPClassifier(in_features=64, hidden=(32, 16), num_classes=10)
        >>> model(torch.zeros(5, 64)).shape
        torch.Size([5, 10])
        >>> model.classifier
        Linear(in_features=16, out_features=10, bias=True)
    """

    def __init__(
        self,
        in_features: int = 64,
        hidden: Sequence[int] = (256, 256),
        num_classes: int = 10,
        activation: str = "relu",
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        loss: str = "cross_entropy",
    ) -> None:
        super().__init__()
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss must be 'cross_entropy' or 'mse', got {loss!r}.")
        if not hidden:
            raise ValueError("hidden needs at least one layer width.")
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), _activation(activation)]
            width = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, C)
        return self.classifier(self.features(x.flatten(1)))

    def _loss(self, logits: Tensor, y: Tensor) -> Tensor:
        if self.hparams.loss == "mse":
            return F.mse_loss(logits, F.one_hot(y, logits.shape[-1]).to(logits.dtype))
        return F.cross_entropy(logits, y)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train")
        self.log(f"{stage}/acc", acc, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)


class ShapesCNN(pl.LightningModule):
    """A small CNN for :class:`~lightning_probes.datasets.ShapesDataModule` images (3, S, S).

    Blocks ``conv1`` and ``conv2`` are ``Sequential(Conv2d 3x3, ReLU)`` — their outputs are post-ReLU unit maps
    (S x S and S/2 x S/2), the layers a concept monitor explains —, then global average pooling and the
    ``classifier`` head.

    Args:
        num_classes: number of classes (9 = 3 shapes x 3 colours).
        channels: output channels of ``conv1`` and ``conv2``.
        lr: Adam learning rate.

    Example:
        >>> net = ShapesCNN(channels=(8, 16))
        >>> net(torch.zeros(2, 3, 32, 32)).shape, net.conv2(net.pool(net.conv1(torch.zeros(2, 3, 32, 32)))).shape
        (torch.Size([2, 9]), torch.Size([2, 16, 16, 16]))
    """

    def __init__(self, num_classes: int = 9, channels: Sequence[int] = (16, 16), lr: float = 3e-3) -> None:
        super().__init__()
        if len(channels) != 2 or min(channels) < 1:
            raise ValueError(f"channels must be two positive widths (conv1, conv2), got {channels}.")
        self.save_hyperparameters()
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, padding=1), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Sequential(nn.Conv2d(channels[0], channels[1], 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(channels[1], num_classes)

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, S, S) -> (B, C)
        return self.classifier(self.conv2(self.pool(self.conv1(x))).mean(dim=(2, 3)))

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log(f"{stage}/loss", loss, prog_bar=stage != "train")
        self.log(f"{stage}/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
