"""DataModules for data that ships with a package or is generated in code (no downloads)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DigitsDataModule", "load_digits_tensors"]


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
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams.seed))
        n_val = int(round(self.hparams.val_fraction * len(x)))
        n_test = int(round(self.hparams.test_fraction * len(x)))
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
        self.train_set = TensorDataset(x[train], y[train])
        self.val_set = TensorDataset(x[val], y[val])
        self.test_set = TensorDataset(x[test], y[test])

    def _loader(self, dataset: TensorDataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
