"""Models of the shape real users train, written here: a dict-batch transformer classifier like a Hugging Face one.

Imported by the tests (``from text_models import ...``); its hooks are also reached by import path
(``"text_models.logits_hook"``), as a YAML config would name them.
"""

from __future__ import annotations

from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from lightning_probes.datasets import SENTIMENT_VOCAB


@dataclass
class ClassifierOutput:
    """Like transformers' SequenceClassifierOutput: loss first (None without labels), then the logits."""

    loss: Tensor | None
    logits: Tensor


class TextClassifier(pl.LightningModule):
    """Token embedding + position embedding -> nn.TransformerEncoder -> masked mean over tokens -> a hidden
    Linear + tanh (``pre``) -> ``classifier``. ``forward(input_ids, attention_mask, labels=None)`` returns a
    :class:`ClassifierOutput`; the padding mask reaches the encoder and the pooling."""

    def __init__(self, vocab_size: int = len(SENTIMENT_VOCAB), d: int = 16, max_length: int = 12,
                 num_classes: int = 2, lr: float = 3e-3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.position = nn.Embedding(max_length, d)
        layer = nn.TransformerEncoderLayer(d, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.pre = nn.Sequential(nn.Linear(d, d), nn.Tanh())
        self.classifier = nn.Linear(d, num_classes)
        self.lr = lr
        self.seen_masks: list[Tensor] | None = None  # set to [] to record the attention masks of eval forwards

    def forward(self, input_ids: Tensor, attention_mask: Tensor, labels: Tensor | None = None) -> ClassifierOutput:
        if self.seen_masks is not None and not self.training:
            self.seen_masks.append(attention_mask.detach())
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.embed(input_ids) + self.position(positions)  # (B, T, d)
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1)  # (B, d): mean over real tokens
        logits = self.classifier(self.pre(pooled))
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return ClassifierOutput(loss, logits)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self(**batch).loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def logits_hook(module: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    """A forward= hook, reached by import path in a test."""
    return module(**inputs).logits


def labels_hook(batch: dict[str, Tensor]) -> Tensor:
    """A targets= hook, reached by import path in a test."""
    return batch["labels"]
