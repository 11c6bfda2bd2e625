"""Ready-made models for the examples, configs and tests.

Each model names its layers so monitors can find them by module name (``"classifier"`` is the final
``nn.Linear`` of :class:`MLPClassifier`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Activation", "Loss", "MLPClassifier", "ShapesCNN", "TextClassifier", "TextClassifierOutput",
           "ThreeLayerNet", "ThreeLayerRegressor", "scale_init_"]

Activation = Literal["relu", "tanh", "gelu"]
"""The hidden activation of the bundled models."""
Loss = Literal["cross_entropy", "mse"]
"""The training loss of :class:`MLPClassifier`."""

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def _activation(name: str) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}.")
    return _ACTIVATIONS[name]()


class _Supervised(pl.LightningModule):
    """Shared train / val / test steps: subclasses give ``_loss_and_metrics(batch)``; everything is logged as
    ``<stage>/<name>`` (the names the examples, configs and CLI summary read)."""

    def _loss_and_metrics(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        loss, metrics = self._loss_and_metrics(batch)
        for name, value in {"loss": loss, **metrics}.items():
            self.log(f"{stage}/{name}", value, prog_bar=stage != "train")
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")


class MLPClassifier(_Supervised):
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

    Raises:
        ValueError: an unknown loss or activation, or no hidden layer.

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
        activation: Activation = "relu",
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        loss: Loss = "cross_entropy",
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
        if self.hparams["loss"] == "mse":
            return F.mse_loss(logits, F.one_hot(y, logits.shape[-1]).to(logits.dtype))
        return F.cross_entropy(logits, y)

    def _loss_and_metrics(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        logits = self(x)
        return self._loss(logits, y), {"acc": (logits.argmax(-1) == y).float().mean()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        return torch.optim.SGD(self.parameters(), lr=hp["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"])


class ShapesCNN(_Supervised):
    """A small CNN for :class:`~lightning_probes.datasets.ShapesDataModule` images (3, S, S).

    Blocks ``conv1`` and ``conv2`` are ``Sequential(Conv2d 3x3, ReLU)`` — their outputs are post-ReLU unit maps
    (S x S and S/2 x S/2), the layers a concept monitor explains —, then global average pooling and the
    ``classifier`` head.

    Args:
        num_classes: number of classes (9 = 3 shapes x 3 colours).
        channels: output channels of ``conv1`` and ``conv2``.
        lr: Adam learning rate.

    Raises:
        ValueError: channels not two positive widths.

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

    def _loss_and_metrics(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        logits = self(x)
        return F.cross_entropy(logits, y), {"acc": (logits.argmax(-1) == y).float().mean()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])


# --- Three-layer nets with a scalable initialisation (condensation, Chen & Luo 2024) -----------------------


def scale_init_(
    module: nn.Module, gamma: float | None = None, std: float | None = None, width: int | None = None
) -> nn.Module:
    """Redraw every parameter of ``module`` (weights and biases) from N(0, std²), in place.

    This is the initialisation of the condensation papers (Luo et al. 2021; Chen & Luo 2024): std = m^(-γ) with
    m the width, so γ = 0.5 is LeCun-like and γ > 1 a small initialisation that condenses. Uses the global
    torch RNG (seed it for reproducibility).

    Args:
        module: any model.
        gamma: the exponent γ; std = width^(-γ).
        std: the standard deviation itself (instead of ``gamma``).
        width: m for ``gamma``; default: the largest ``out_features`` among the module's ``nn.Linear`` layers.

    Returns:
        ``module`` itself.

    Raises:
        ValueError: not exactly one of gamma and std; no nn.Linear to take the width from and no width; width not
            positive; std negative or not finite.

    Example:
        >>> net = scale_init_(nn.Linear(100, 100), gamma=1.5)
        >>> round(float(net.weight.detach().std()), 4)
        0.001
    """
    if (gamma is None) == (std is None):
        raise ValueError("Give exactly one of gamma (std = width^-gamma) or std.")
    if std is None:
        if width is None:
            widths = [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]
            if not widths:
                raise ValueError("The module has no nn.Linear layer to take the width from; pass width=.")
            width = max(widths)
        if width < 1:
            raise ValueError(f"width must be positive, got {width}.")
        assert gamma is not None  # exactly one of gamma and std was given (checked above)
        std = float(width) ** (-gamma)
    if not std >= 0 or math.isinf(std):
        raise ValueError(f"std must be a finite non-negative number, got {std}.")
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def _build_three_layer(
    host: ThreeLayerNet | ThreeLayerRegressor, in_features: int, width: int, out_features: int, activation: Activation,
    init_gamma: float | None, init_std: float | None, bias: bool,
) -> None:
    """Give ``host`` the layers ``layer1``, ``layer2``, ``output`` and the activation, initialised as asked."""
    if min(in_features, width, out_features) < 1:
        raise ValueError(
            f"in_features, width and out_features must be positive, got {in_features, width, out_features}."
        )
    if init_gamma is not None and init_std is not None:
        raise ValueError("Give init_gamma or init_std, not both (or neither for PyTorch's default init).")
    host.layer1 = nn.Linear(in_features, width, bias=bias)
    host.layer2 = nn.Linear(width, width, bias=bias)
    host.output = nn.Linear(width, out_features, bias=bias)
    host.activation = _activation(activation)
    if init_gamma is not None or init_std is not None:
        for layer in (host.layer1, host.layer2, host.output):
            scale_init_(layer, gamma=init_gamma, std=init_std, width=width)


def _three_layer_forward(host: ThreeLayerNet | ThreeLayerRegressor, x: Tensor) -> Tensor:  # (B, d) -> (B, out)
    return host.output(host.activation(host.layer2(host.activation(host.layer1(x)))))


class ThreeLayerNet(nn.Module):
    """f(x) = aᵀ σ(W² σ(W¹ x + b¹) + b²) (+ output bias), the three-layer net of Chen & Luo (2024).

    Args:
        in_features: input dimension d.
        width: hidden width m of both hidden layers.
        out_features: output dimension.
        activation: ``"tanh"`` (default, odd: a direction and its opposite condense together), ``"relu"``, ``"gelu"``.
        init_gamma: every parameter ~ N(0, m^(-2γ)) (std m^(-γ)); γ = 1.5 condenses, γ = 0.5 does not.
        init_std: every parameter ~ N(0, init_std²) instead.
        bias: whether the layers have biases.

    Neither ``init_gamma`` nor ``init_std``: PyTorch's default init. Layers: ``layer1``, ``layer2``, ``output``.

    Raises:
        ValueError: a size that is not positive, an unknown activation, or both init_gamma and init_std.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = ThreeLayerNet(1, 100, 1, init_gamma=1.5)
        >>> net(torch.zeros(4, 1)).shape, round(float(net.layer2.weight.detach().std()), 4)
        (torch.Size([4, 1]), 0.001)
    """
    layer1: nn.Linear
    layer2: nn.Linear
    output: nn.Linear
    activation: nn.Module

    def __init__(
        self, in_features: int = 1, width: int = 100, out_features: int = 1, activation: Activation = "tanh",
        init_gamma: float | None = None, init_std: float | None = None, bias: bool = True,
    ) -> None:
        super().__init__()
        _build_three_layer(self, in_features, width, out_features, activation, init_gamma, init_std, bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, d) -> (B, out)
        return _three_layer_forward(self, x)


class ThreeLayerRegressor(_Supervised):
    """A :class:`ThreeLayerNet` trained by plain SGD on the mean squared error (condensation example).

    The layers sit directly on the module (``layer1``, ``layer2``, ``output``), so monitors name them as such.

    Args:
        in_features, width, out_features, activation, init_gamma, init_std, bias: as :class:`ThreeLayerNet`.
        lr: SGD learning rate (0.2 trains width 100 from γ = 1.5 through its plateau in about 1000 steps).
        momentum: SGD momentum.

    Raises:
        ValueError: lr not positive, or as :class:`ThreeLayerNet`.

    Example:
        >>> model = ThreeLayerRegressor(width=16, init_gamma=1.0)
        >>> model(torch.zeros(3, 1)).shape
        torch.Size([3, 1])
    """
    layer1: nn.Linear
    layer2: nn.Linear
    output: nn.Linear
    activation: nn.Module

    def __init__(
        self, in_features: int = 1, width: int = 100, out_features: int = 1, activation: Activation = "tanh",
        init_gamma: float | None = 1.5, init_std: float | None = None, bias: bool = True, lr: float = 0.2,
        momentum: float = 0.0,
    ) -> None:
        super().__init__()
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}.")
        self.save_hyperparameters()
        _build_three_layer(self, in_features, width, out_features, activation, init_gamma, init_std, bias)

    def forward(self, x: Tensor) -> Tensor:  # (B, d) -> (B, out)
        return _three_layer_forward(self, x)

    def _loss_and_metrics(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        return F.mse_loss(self(x), y), {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams["lr"], momentum=self.hparams["momentum"])


@dataclass
class TextClassifierOutput:
    """What :class:`TextClassifier` returns, shaped like transformers' ``SequenceClassifierOutput``: the loss
    (None without labels) and the logits (B, C)."""

    loss: Tensor | None
    logits: Tensor


class TextClassifier(pl.LightningModule):
    """A small transformer text classifier with a Hugging Face-style interface: dict batches of ``input_ids`` /
    ``attention_mask`` / ``labels`` (e.g. :class:`~lightning_probes.datasets.SentimentDataModule`), a forward by
    keyword that returns a :class:`TextClassifierOutput`.

    Modules: ``embed`` (token embedding, (B, T, d)), ``position``, ``encoder`` (``nn.TransformerEncoder``, padding
    masked), a masked mean over tokens, ``pre`` (Linear + tanh) and the ``classifier`` head.

    Args:
        vocab_size: token ids are 0..vocab_size-1.
        d: model width.
        max_length: longest sequence (position embeddings).
        num_layers: encoder layers.
        num_classes: C.
        lr: Adam learning rate.

    Example:
        >>> model = TextClassifier(vocab_size=19)
        >>> out = model(input_ids=torch.ones(2, 12, dtype=torch.long), attention_mask=torch.ones(2, 12))
        >>> out.loss is None, tuple(out.logits.shape)
        (True, (2, 2))
    """

    def __init__(self, vocab_size: int = 19, d: int = 32, max_length: int = 12, num_layers: int = 1,
                 num_classes: int = 2, lr: float = 3e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.embed = nn.Embedding(vocab_size, d)
        self.position = nn.Embedding(max_length, d)
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.pre = nn.Sequential(nn.Linear(d, d), nn.Tanh())
        self.classifier = nn.Linear(d, num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None) -> TextClassifierOutput:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.embed(input_ids) + self.position(positions)  # (B, T, d)
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1)  # (B, d): the mean over real tokens
        logits = self.classifier(self.pre(pooled))
        return TextClassifierOutput(None if labels is None else F.cross_entropy(logits, labels), logits)

    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        out = self(**batch)
        acc = (out.logits.argmax(-1) == batch["labels"]).float().mean()
        self.log(f"{stage}/loss", out.loss, prog_bar=stage != "train")
        self.log(f"{stage}/acc", acc, prog_bar=True)
        return out.loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])
