"""DataModules for data that ships with a package or is generated in code (no downloads)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = [
    "ConceptProbe",
    "DigitsDataModule",
    "DigitsProbe",
    "RegressionDataModule",
    "SentimentDataModule",
    "SentimentProbe",
    "ShapesData",
    "ShapesDataModule",
    "ShapesProbe",
    "load_digits_tensors",
    "make_regression_tensors",
    "make_sentiment",
    "make_shapes",
    "pad_batch",
]


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 handwritten digits as ``(x, y)``: x (1797, 64) in [0, 1], y (1797,) int64.

    Example:
        >>> x, y = load_digits_tensors()
        >>> x.shape, y.shape, int(y.max())
        (torch.Size([1797, 64]), torch.Size([1797]), 9)
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "The digits data comes from scikit-learn: pip install 'lightning-probes[examples]'."
        ) from err
    data = load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.as_tensor(data.target, dtype=torch.long)
    return x, y


class DigitsDataModule(pl.LightningDataModule):
    """scikit-learn digits split deterministically into train / val / test.

    Args:
        batch_size: training batch size.
        val_fraction: share of samples held out for validation.
        test_fraction: share held out for testing.
        seed: seed of the split permutation (a private generator: the global RNG is not touched).
        num_workers: DataLoader workers.

    Example:
        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup("fit")
        >>> len(dm.train_set), len(dm.val_set), len(dm.test_set)
        (1079, 359, 359)
    """

    def __init__(
        self, batch_size: int = 64, val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError("val_fraction and test_fraction must be in [0, 1) and sum to less than 1.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        x, y = load_digits_tensors()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams["seed"]))
        n_val = int(round(self.hparams["val_fraction"] * len(x)))
        n_test = int(round(self.hparams["test_fraction"] * len(x)))
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])
        self.test_set = TensorDataset(x[test], y[test])

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.hparams["batch_size"], shuffle=shuffle, num_workers=self.hparams["num_workers"]
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


# ---------------------------------------------------------------------------------------------- coloured shapes
SHAPE_NAMES = ("circle", "square", "triangle")
COLOUR_NAMES = ("red", "green", "blue")
POSITION_NAMES = ("top", "bottom", "left", "right")
_RGB = torch.tensor([[0.90, 0.15, 0.10], [0.15, 0.80, 0.20], [0.15, 0.30, 0.95]])  # (3 colours, 3 channels)


class ShapesData(NamedTuple):
    """Generated shapes: images (N, 3, S, S) float, labels (N,) = shape * 3 + colour, concepts (N, K, S, S) bool."""

    images: torch.Tensor
    labels: torch.Tensor
    concepts: torch.Tensor
    concept_names: tuple[str, ...]


def make_shapes(num_samples: int, size: int = 32, seed: int = 0) -> ShapesData:
    """Images of one coloured shape on a noisy background, with per-pixel concept masks (generated, no download).

    Concepts (K = 11): the shape (circle, square, triangle), its colour (red, green, blue) — both true on the
    shape's pixels only —, the pixel's position (top, bottom, left, right half of the image) and background.
    The class label is shape * 3 + colour (9 classes). A private generator is used: the global RNG is untouched.

    Example:
        >>> data = make_shapes(4, size=16)
        >>> data.images.shape, data.concepts.shape, data.concept_names[:4]
        (torch.Size([4, 3, 16, 16]), torch.Size([4, 11, 16, 16]), ('circle', 'square', 'triangle', 'red'))
        >>> bool((data.concepts[:, :3].sum(1) == data.concepts[:, 3:6].sum(1)).all())  # one colour per shape pixel
        True
    """
    if num_samples < 1 or size < 8:
        raise ValueError(f"need num_samples >= 1 and size >= 8, got {num_samples} and {size}.")
    gen = torch.Generator().manual_seed(seed)
    n = num_samples
    shape = torch.randint(0, 3, (n,), generator=gen)
    colour = torch.randint(0, 3, (n,), generator=gen)
    radius = size * (0.15 + 0.15 * torch.rand(n, generator=gen))  # (N,)
    centre = radius[:, None] + (size - 2 * radius[:, None]) * torch.rand(n, 2, generator=gen)  # (N, 2) as (x, y)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    x = coords[None, None, :] - centre[:, 0, None, None]  # (N, 1, S) offsets from the centre
    y = coords[None, :, None] - centre[:, 1, None, None]  # (N, S, 1)
    r = radius[:, None, None]
    circle = x**2 + y**2 <= r**2
    square = (x.abs() <= 0.85 * r) & (y.abs() <= 0.85 * r)
    triangle = (y.abs() <= r) & (x.abs() <= 0.6 * (y + r))  # apex up, base at the bottom
    drawn = torch.stack([circle, square, triangle], 1)[torch.arange(n), shape]  # (N, S, S)
    background = 0.1 + 0.1 * torch.rand(n, 1, size, size, generator=gen)
    paint = _RGB[colour][:, :, None, None] + 0.05 * torch.randn(n, 3, size, size, generator=gen)
    images = torch.where(drawn[:, None], paint, background).clamp(0, 1)
    shape_masks = torch.nn.functional.one_hot(shape, 3).bool()[:, :, None, None] & drawn[:, None]  # (N, 3, S, S)
    colour_masks = torch.nn.functional.one_hot(colour, 3).bool()[:, :, None, None] & drawn[:, None]
    half = coords < size / 2
    top = half[:, None].expand(size, size)
    left = half[None, :].expand(size, size)
    position = torch.stack([top, ~top, left, ~left])[None].expand(n, 4, size, size)
    concepts = torch.cat([shape_masks, colour_masks, position, ~drawn[:, None]], 1)
    names = SHAPE_NAMES + COLOUR_NAMES + POSITION_NAMES + ("background",)
    return ShapesData(images, shape * 3 + colour, concepts, names)


class ConceptProbe:
    """Probe inputs with aligned concept annotations, for :class:`~lightning_probes.ConceptMonitor`.

    Args:
        inputs: (N, ...) model inputs, or a mapping of them (``input_ids``, ``attention_mask``, ...).
        concepts: bool (N, K) per sample, (N, K, H, W) per position or (N, K, T) per token.
        concept_names: K names.
        targets: optional (N,) labels.
    """

    def __init__(
        self, inputs: torch.Tensor | Mapping[str, torch.Tensor], concepts: torch.Tensor,
        concept_names: tuple[str, ...] | list[str],
        targets: torch.Tensor | None = None,
    ) -> None:
        from lightning_probes.batches import num_samples  # inputs may be a mapping of tensors (input_ids, ...)

        if num_samples(inputs) != len(concepts):
            raise ValueError(f"inputs have {num_samples(inputs)} samples but concepts {len(concepts)}.")
        self.inputs, self.concepts, self.concept_names, self.targets = inputs, concepts, tuple(concept_names), targets


class ShapesProbe(ConceptProbe):
    """A fixed set of :func:`make_shapes` images with their concept masks (config-friendly: plain arguments).

    Example:
        >>> probe = ShapesProbe(num_samples=8, size=16, seed=1)
        >>> probe.inputs.shape, probe.concepts.shape, len(probe.concept_names)
        (torch.Size([8, 3, 16, 16]), torch.Size([8, 11, 16, 16]), 11)
    """

    def __init__(self, num_samples: int = 128, size: int = 32, seed: int = 12345) -> None:
        data = make_shapes(num_samples, size, seed)
        super().__init__(data.images, data.concepts, data.concept_names, data.labels)


class DigitsProbe(ConceptProbe):
    """The first ``num_samples`` digits (:func:`load_digits_tensors`) with per-sample concepts (N, 16): the digit
    itself (``digit_0`` .. ``digit_9``) and where its ink is — more ink in the top / left half than in the other
    half (``ink_top``, ``ink_left``, and their complements ``ink_bottom``, ``ink_right``), total ink above the
    median (``bold``), ink in the central 4 x 4 block above the median (``centre_ink``). For
    :class:`~lightning_probes.ConceptMonitor` on the digits MLP.

    Example:
        >>> probe = DigitsProbe(num_samples=100)
        >>> probe.inputs.shape, probe.concepts.shape, probe.concept_names[10:12]
        (torch.Size([100, 64]), torch.Size([100, 16]), ('ink_top', 'ink_bottom'))
        >>> bool((probe.concepts[:, :10].sum(1) == 1).all())  # exactly one digit concept per sample
        True
    """

    def __init__(self, num_samples: int = 512) -> None:
        x, y = load_digits_tensors()
        if not 1 <= num_samples <= len(x):
            raise ValueError(f"num_samples must be in [1, {len(x)}], got {num_samples}.")
        x, y = x[:num_samples], y[:num_samples]
        img = x.view(-1, 8, 8)  # (N, 8, 8)
        top, left = img[:, :4].sum((1, 2)), img[:, :, :4].sum((1, 2))
        ink = img.sum((1, 2))
        centre = img[:, 2:6, 2:6].sum((1, 2))
        digits = torch.nn.functional.one_hot(y, 10).bool()  # (N, 10)
        where = torch.stack([top > ink - top, top <= ink - top, left > ink - left, left <= ink - left,
                             ink > ink.median(), centre > centre.median()], 1)  # (N, 6)
        names = tuple(f"digit_{d}" for d in range(10)) + (
            "ink_top", "ink_bottom", "ink_left", "ink_right", "bold", "centre_ink")
        super().__init__(x, torch.cat([digits, where], 1), names, y)


class ShapesDataModule(pl.LightningDataModule):
    """Coloured shapes (:func:`make_shapes`) for a 9-class shape-and-colour classifier; train and val are
    generated from different seeds.

    Args:
        num_train: training images.
        num_val: validation images.
        size: image side S.
        batch_size: training batch size.
        seed: seed of the training images (validation uses ``seed + 1``).
        num_workers: DataLoader workers.

    Example:
        >>> dm = ShapesDataModule(num_train=16, num_val=8, size=16)
        >>> dm.setup("fit")
        >>> len(dm.train_set), dm.train_set[0][0].shape
        (16, torch.Size([3, 16, 16]))
    """

    def __init__(
        self, num_train: int = 2048, num_val: int = 512, size: int = 32, batch_size: int = 64, seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if num_train < 1 or num_val < 1 or batch_size < 1:
            raise ValueError(f"num_train, num_val and batch_size must be positive, got {num_train}, {num_val}, "
                             f"{batch_size}.")
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        train = make_shapes(hp["num_train"], hp["size"], hp["seed"])
        val = make_shapes(hp["num_val"], hp["size"], hp["seed"] + 1)
        self.train_set = TensorDataset(train.images, train.labels)
        self.val_set = TensorDataset(val.images, val.labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams["batch_size"], shuffle=True,
                          num_workers=self.hparams["num_workers"])

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams["batch_size"], num_workers=self.hparams["num_workers"])


# --- Generated 1-D (or low-dimensional) regression targets (condensation example) --------------------------

_REGRESSION_TARGETS = {"sin": torch.sin, "tanh": torch.tanh, "relu": torch.relu}


def make_regression_tensors(
    num: int, in_features: int = 1, target: str = "sin", frequency: float = 3.0, noise: float = 0.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs x ~ U[-1, 1]^d and targets y = g(ω · mean_i x_i) (+ Gaussian noise), from a private generator.

    With d = 1 this is the 1-D target of the condensation experiments (y = sin(3x) by default).

    Args:
        num: number of samples.
        in_features: input dimension d.
        target: g, one of ``"sin"``, ``"tanh"``, ``"relu"``.
        frequency: ω.
        noise: standard deviation of additive Gaussian noise on y.
        seed: seed of the generator (the global RNG is not touched).

    Returns:
        ``(x, y)``: x (num, d) and y (num, 1), float32.

    Example:
        >>> x, y = make_regression_tensors(4, seed=0)
        >>> x.shape, y.shape, bool(torch.allclose(y, torch.sin(3 * x)))
        (torch.Size([4, 1]), torch.Size([4, 1]), True)
    """
    if target not in _REGRESSION_TARGETS:
        raise ValueError(f"Unknown target {target!r}; choose one of {sorted(_REGRESSION_TARGETS)}.")
    if num < 1 or in_features < 1:
        raise ValueError(f"num and in_features must be positive, got {num} and {in_features}.")
    if noise < 0:
        raise ValueError(f"noise is a standard deviation and must be >= 0, got {noise}.")
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(num, in_features, generator=generator) * 2 - 1  # (num, d)
    y = _REGRESSION_TARGETS[target](frequency * x.mean(dim=1, keepdim=True))  # (num, 1)
    if noise > 0:
        y = y + noise * torch.randn(num, 1, generator=generator)
    return x, y


class RegressionDataModule(pl.LightningDataModule):
    """Generated regression data from :func:`make_regression_tensors` (train and val drawn with different seeds).

    Args:
        num_train: training samples.
        num_val: validation samples.
        in_features: input dimension d.
        target: ``"sin"``, ``"tanh"`` or ``"relu"``.
        frequency: ω in y = g(ω · mean x).
        noise: standard deviation of the noise on the training and validation targets.
        batch_size: batch size.
        seed: seed of the data (validation uses seed + 1).
        num_workers: DataLoader workers.

    Example:
        >>> dm = RegressionDataModule(num_train=100, num_val=20)
        >>> dm.setup("fit")
        >>> len(dm.train_set), len(dm.val_set)
        (100, 20)
    """

    def __init__(
        self, num_train: int = 1024, num_val: int = 256, in_features: int = 1, target: str = "sin",
        frequency: float = 3.0, noise: float = 0.0, batch_size: int = 64, seed: int = 0, num_workers: int = 0,
    ) -> None:
        super().__init__()
        if num_train < 1 or num_val < 1 or batch_size < 1:
            raise ValueError(f"num_train, num_val and batch_size must be positive, got {num_train}, {num_val}, "
                             f"{batch_size}.")
        if target not in _REGRESSION_TARGETS:
            raise ValueError(f"Unknown target {target!r}; choose one of {sorted(_REGRESSION_TARGETS)}.")
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        common = dict(in_features=hp["in_features"], target=hp["target"], frequency=hp["frequency"], noise=hp["noise"])
        self.train_set = TensorDataset(*make_regression_tensors(hp["num_train"], seed=hp["seed"], **common))
        self.val_set = TensorDataset(*make_regression_tensors(hp["num_val"], seed=hp["seed"] + 1, **common))

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams["batch_size"], shuffle=True,
                          num_workers=self.hparams["num_workers"])

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams["batch_size"], num_workers=self.hparams["num_workers"])


# ---------------------------------------------------------------------------------------------- synthetic text
SENTIMENT_SPECIALS = ("[PAD]", "[CLS]", "[MASK]")
SENTIMENT_POSITIVE = ("good", "great", "fine", "happy")
SENTIMENT_NEGATIVE = ("bad", "awful", "poor", "sad")
SENTIMENT_NEUTRAL = ("the", "a", "film", "was", "and", "plot", "actor", "it")
SENTIMENT_VOCAB = SENTIMENT_SPECIALS + SENTIMENT_POSITIVE + SENTIMENT_NEGATIVE + SENTIMENT_NEUTRAL
PAD_ID, CLS_ID, MASK_ID = 0, 1, 2


def make_sentiment(
    num_samples: int, max_length: int = 12, min_length: int = 8, seed: int = 0
) -> list[dict[str, torch.Tensor]]:
    """Generated sentences for a two-class "sentiment" task over a 19-token vocabulary (:data:`SENTIMENT_VOCAB`).

    Each sample is ``{"input_ids": (L,) int64, "labels": () int64}`` with ``[CLS]`` first and a length L in
    ``[min_length, max_length]`` (unpadded: :func:`pad_batch` pads like a tokenizer). The label is 1 when the
    sentence holds more positive words than negative ones, 0 when fewer (never a tie); the other words are
    neutral. A private generator: the global RNG is not touched.

    Example:
        >>> samples = make_sentiment(4, seed=0)
        >>> len(samples), samples[0]["input_ids"][0].item(), sorted(samples[0])
        (4, 1, ['input_ids', 'labels'])
    """
    if not 2 <= min_length <= max_length:
        raise ValueError(f"need 2 <= min_length <= max_length, got {min_length}, {max_length}.")
    gen = torch.Generator().manual_seed(seed)
    pos = torch.arange(len(SENTIMENT_SPECIALS), len(SENTIMENT_SPECIALS) + len(SENTIMENT_POSITIVE))
    neg = pos + len(SENTIMENT_POSITIVE)
    neutral = torch.arange(int(neg[-1]) + 1, len(SENTIMENT_VOCAB))
    samples = []
    for _ in range(num_samples):
        length = int(torch.randint(min_length, max_length + 1, (1,), generator=gen))
        words = length - 1
        n_sent = int(torch.randint(1, min(3, words) + 1, (1,), generator=gen))  # 1..3 sentiment words, odd split
        n_pos = int(torch.randint(0, n_sent + 1, (1,), generator=gen))
        if 2 * n_pos == n_sent:  # no ties: one more word of the drawn kind decides
            n_pos += 1 if n_pos < n_sent else -1
        n_neg = n_sent - n_pos
        tokens = torch.cat([pos[torch.randint(len(pos), (n_pos,), generator=gen)],
                            neg[torch.randint(len(neg), (n_neg,), generator=gen)],
                            neutral[torch.randint(len(neutral), (words - n_sent,), generator=gen)]])
        tokens = tokens[torch.randperm(words, generator=gen)]
        samples.append({"input_ids": torch.cat([torch.tensor([CLS_ID]), tokens]),
                        "labels": torch.tensor(int(n_pos > n_neg))})
    return samples


def pad_batch(samples: list[dict[str, torch.Tensor]], max_length: int = 12) -> dict[str, torch.Tensor]:
    """Collate like a tokenizer with ``padding="max_length"``: ``input_ids`` (B, max_length) padded with
    ``[PAD]`` (id 0), ``attention_mask`` (B, max_length) 1 on real tokens, ``labels`` (B,).

    Example:
        >>> batch = pad_batch(make_sentiment(2, seed=0))
        >>> batch["input_ids"].shape, batch["attention_mask"].sum(1).tolist() == [
        ...     int((row != 0).sum()) for row in batch["input_ids"]]
        (torch.Size([2, 12]), True)
    """
    ids = torch.full((len(samples), max_length), PAD_ID, dtype=torch.long)
    mask = torch.zeros((len(samples), max_length), dtype=torch.long)
    for row, sample in enumerate(samples):
        tokens = sample["input_ids"][:max_length]
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.stack([s["labels"] for s in samples])}


class _Samples(Dataset):
    """A map-style Dataset over a list of samples (so it can be passed as ``probe_data`` too)."""

    def __init__(self, samples: list) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Any:
        return self.samples[i]


class SentimentDataModule(pl.LightningDataModule):
    """A generated two-class text task (:func:`make_sentiment`) with batches like a tokenizer's: dicts of
    ``input_ids`` / ``attention_mask`` / ``labels``, padded to ``max_length`` (:func:`pad_batch`). For examples of
    a dict-batch model; ids: ``[PAD]`` 0, ``[CLS]`` 1, ``[MASK]`` 2.

    Example:
        >>> dm = SentimentDataModule(num_train=32, num_val=8)
        >>> dm.setup("fit")
        >>> batch = next(iter(dm.train_dataloader()))
        >>> sorted(batch), tuple(batch["input_ids"].shape)
        (['attention_mask', 'input_ids', 'labels'], (32, 12))
    """

    vocab_size = len(SENTIMENT_VOCAB)
    pad_token_id, cls_token_id, mask_token_id = PAD_ID, CLS_ID, MASK_ID

    def __init__(
        self, num_train: int = 2048, num_val: int = 256, max_length: int = 12, min_length: int = 8,
        batch_size: int = 64, seed: int = 0, num_workers: int = 0,
    ) -> None:
        super().__init__()
        if num_train < 1 or num_val < 1 or batch_size < 1:
            raise ValueError(f"num_train, num_val and batch_size must be positive, got {num_train}, {num_val}, "
                             f"{batch_size}.")
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "train_set"):
            return
        hp = self.hparams
        self.train_set = _Samples(make_sentiment(hp["num_train"], hp["max_length"], hp["min_length"], hp["seed"]))
        self.val_set = _Samples(make_sentiment(hp["num_val"], hp["max_length"], hp["min_length"], hp["seed"] + 1))

    def _collate(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return pad_batch(samples, self.hparams["max_length"])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.hparams["batch_size"], shuffle=True, collate_fn=self._collate,
                          num_workers=self.hparams["num_workers"])

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.hparams["batch_size"], collate_fn=self._collate,
                          num_workers=self.hparams["num_workers"])


class SentimentProbe(ConceptProbe):
    """Generated sentences (:func:`make_sentiment`, padded by :func:`pad_batch`) with per-token concepts (N, 5, T):
    ``positive`` / ``negative`` / ``neutral`` word, ``cls``, ``pad``. Inputs are the dict ``input_ids`` /
    ``attention_mask``; for :class:`~lightning_probes.ConceptMonitor` on a sequence layer (N, T, d).

    Example:
        >>> probe = SentimentProbe(num_samples=8)
        >>> sorted(probe.inputs), tuple(probe.concepts.shape), probe.concept_names[:2]
        (['attention_mask', 'input_ids'], (8, 5, 12), ('positive', 'negative'))
    """

    def __init__(self, num_samples: int = 128, max_length: int = 12, min_length: int = 8, seed: int = 12345) -> None:
        batch = pad_batch(make_sentiment(num_samples, max_length, min_length, seed), max_length)
        ids = batch["input_ids"]
        first_neg = len(SENTIMENT_SPECIALS) + len(SENTIMENT_POSITIVE)
        first_neutral = first_neg + len(SENTIMENT_NEGATIVE)
        concepts = torch.stack([(ids >= len(SENTIMENT_SPECIALS)) & (ids < first_neg),
                                (ids >= first_neg) & (ids < first_neutral), ids >= first_neutral, ids == CLS_ID,
                                ids == PAD_ID], 1)  # (N, 5, T)
        super().__init__({"input_ids": ids, "attention_mask": batch["attention_mask"]}, concepts,
                         ("positive", "negative", "neutral", "cls", "pad"), batch["labels"])
