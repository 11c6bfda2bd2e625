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

__all__ = ["MLPClassifier"]

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
