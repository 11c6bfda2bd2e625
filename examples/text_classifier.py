"""Your own model: a dict-batch transformer text classifier with all the monitors that read data, token players
masked with the [MASK] token, and the progress bar on.

    python examples/text_classifier.py [--max-epochs 4] [--logdir runs]
    tensorboard --logdir runs

The same run as ``lightning-probes fit --config configs/text_classifier.yaml`` plus LIB. The model is shaped like a
Hugging Face classifier: its batches are dicts ``input_ids`` / ``attention_mask`` / ``labels`` padded like a
tokenizer's, its ``forward(input_ids, attention_mask, labels=None)`` takes them by keyword and returns an object
with ``.logits``. Nothing tells the monitors so: by the call rule they run ``model(**inputs)`` with ``"labels"``
held out (the attention mask reaches the model, as in training) and read the logits from ``.logits``. A model that
needs something else takes ``forward=lambda model, inputs: ...`` and ``targets=lambda batch: ...``.

Token ids are not features: a masked token is replaced by the ``[MASK]`` token (``baseline=mask_token_id``);
``mask_at="embed"`` would instead replace the embedding of masked positions by the probe-set mean embedding.
"""

from __future__ import annotations

import argparse

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_probes import presets
from lightning_probes.datasets import SentimentDataModule, SentimentProbe
from lightning_probes.measures.interactions import TokenPositions
from lightning_probes.models import TextClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-epochs", type=int, default=4)
    parser.add_argument("--logdir", default="runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    data = SentimentDataModule(num_train=2048, batch_size=64)  # sentences of 8..12 tokens, padded to 12
    model = TextClassifier(vocab_size=SentimentDataModule.vocab_size, d=32, max_length=12)
    monitors = presets.standard(
        head="classifier",  # the spectrum's head: its input is the pooled feature vector (B, d)
        players=TokenPositions([[1], [2], [3], [4], [5], [6]], seq_len=12),  # positions inside every sentence
        lib_layers=["pre.0", "classifier"],  # node points after the pooling: one vector per sample
        concept_layer="encoder", concepts=SentimentProbe(128),  # (N, T, d) with per-token concepts (N, K, T)
        monitor_args={"interactions": {"baseline": SentimentDataModule.mask_token_id}},
    )
    logger = TensorBoardLogger(args.logdir, name="text_classifier")
    trainer = pl.Trainer(max_epochs=args.max_epochs, callbacks=[monitors], logger=logger, log_every_n_steps=10,
                         enable_progress_bar=True)
    trainer.fit(model, data)
    print()
    for monitor in monitors:
        print(monitor.summary())
    print(f"val accuracy: {float(trainer.callback_metrics['val/acc']):.3f}")
    print(f"TensorBoard logs: {logger.log_dir}   ->   tensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()
