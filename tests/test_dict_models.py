"""The monitors on the models people train: dict batches (input_ids / attention_mask / labels) into a transformer
classifier whose forward takes keywords and returns a dataclass, token players, sequence layers, and (if
installed) a Hugging Face BertForSequenceClassification built from a tiny config (random weights, no download)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from text_models import ClassifierOutput, TextClassifier
from torch import nn

from lightning_probes import presets
from lightning_probes.datasets import (
    MASK_ID,
    SENTIMENT_VOCAB,
    ConceptProbe,
    SentimentDataModule,
    make_sentiment,
    pad_batch,
)
from lightning_probes.measures.interactions import TokenPositions
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor, _token_flattened
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.probe_set import probing
from lightning_probes.schedules import every

pytestmark = pytest.mark.usefixtures("one_thread")

PROBE = pad_batch(make_sentiment(48, seed=5))  # {"input_ids", "attention_mask", "labels"}, lengths 8..12
PLAYERS = TokenPositions([[1], [2], [3], [4], [5]], 12)  # inside every sample (min length 8)


def token_concepts(ids: torch.Tensor) -> torch.Tensor:
    """Per-token concepts (N, 4, T): positive word, negative word, [CLS], [PAD]."""
    return torch.stack([(ids >= 3) & (ids < 7), (ids >= 7) & (ids < 11), ids == 1, ids == 0], 1)


def concept_probe() -> ConceptProbe:
    inputs = {"input_ids": PROBE["input_ids"], "attention_mask": PROBE["attention_mask"]}
    return ConceptProbe(inputs, token_concepts(PROBE["input_ids"]), ["positive", "negative", "cls", "pad"],
                        PROBE["labels"])


def quiet_trainer(**kw) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
    return pl.Trainer(**{**defaults, **kw})


def data() -> SentimentDataModule:
    return SentimentDataModule(num_train=256, num_val=32, batch_size=32)


def measured(monitor, model):
    """Fit start (names, probe set, checks) and one measurement, through the monitor's own hooks."""
    trainer = quiet_trainer(max_steps=1)
    monitor.setup(trainer, model, "fit")
    monitor.on_train_start(trainer, model)
    with probing(model):
        return monitor.measure(trainer, model)


# ----------------------------------------------------------------------------------------- all five, one fit
@pytest.fixture(scope="session")
def standard_text_run():
    group = presets.standard(
        players=PLAYERS, lib_layers=["pre.0", "classifier"], concept_layer="encoder", concepts=concept_probe(),
        max_samples=96, monitor_args={"interactions": {"baseline": MASK_ID, "solver_iterations": 200},
                                      "concepts": {"max_units": 4, "num_clusters": 3, "search": "beam"}},
    )
    for monitor in group:
        monitor.schedule, monitor.images_every, monitor.on_error = every(15), 0, "raise"
    pl.seed_everything(0)
    trainer = quiet_trainer(max_steps=30, callbacks=[group])
    trainer.fit(TextClassifier(), data())
    return group


def test_all_five_monitors_run_on_a_dict_batch_transformer(standard_text_run):
    names = [m.name for m in standard_text_run]
    assert names == ["spectrum", "condensation", "interactions", "lib", "concepts"]
    for monitor in standard_text_run:
        assert [s for s, _ in monitor.history] == [0, 15, 30], monitor.name
        assert monitor.failures == 0
        assert all(math.isfinite(v) for _, scalars in monitor.history for k, v in scalars.items()
                   if not k.startswith("mean_iou"))
    spectrum, condensation, interactions, lib, concepts = standard_text_run
    assert "encoder.layers.0.linear1/n_directions" in condensation.history[-1][1]
    assert interactions.history[-1][1]["n_salient"] > 0
    assert set(lib.history[-1][1]) >= {"pre.0/n_directions", "classifier/n_directions"}
    assert concepts._units == [0, 5, 10, 15]  # d = 16 units of the (N, T, d) encoder output, 4 of them explained


# ----------------------------------------------------------------------------------------- the call rule
def spectrum(**kw) -> FeatureSpectrumMonitor:
    return FeatureSpectrumMonitor(**{"probe_data": dict(PROBE), "images_every": 0, "on_error": "raise", **kw})


def test_the_attention_mask_reaches_the_model_during_probes():
    torch.manual_seed(0)
    model = TextClassifier()
    model.seen_masks = []
    report = measured(spectrum(), model)
    seen = torch.cat(model.seen_masks[-1:])  # the measurement's pass (one batch of 48)
    assert torch.equal(seen, PROBE["attention_mask"]) and bool((seen == 0).any())
    ignored = measured(spectrum(forward=lambda m, b: m(b["input_ids"], torch.ones_like(b["attention_mask"]))),
                       model)
    assert report.scalars["top_eigenvalue"] != pytest.approx(ignored.scalars["top_eigenvalue"], rel=1e-3)


def test_forward_and_targets_hooks_as_callables_and_import_paths():
    torch.manual_seed(0)
    model = TextClassifier()
    default = measured(spectrum(), model).scalars
    hooked = measured(spectrum(forward=lambda m, b: m(**b).logits, targets=lambda b: b["labels"]), model).scalars
    by_path = measured(spectrum(forward="text_models.logits_hook", targets="text_models.labels_hook"), model).scalars
    assert hooked == pytest.approx(default, rel=1e-6) and by_path == pytest.approx(default, rel=1e-6)


def test_target_key_is_configurable_and_held_out_of_the_model():
    torch.manual_seed(0)
    model = TextClassifier()
    renamed = {"input_ids": PROBE["input_ids"], "attention_mask": PROBE["attention_mask"], "sentiment": PROBE["labels"]}
    got = measured(spectrum(probe_data=renamed, target_key="sentiment"), model).scalars
    assert got == pytest.approx(measured(spectrum(), model).scalars, rel=1e-6)


class NoLogits(TextClassifier):
    """Returns an object the logits rule cannot read."""

    def forward(self, input_ids, attention_mask, labels=None):
        out = super().forward(input_ids, attention_mask, labels)
        return {"loss": out.loss, "scores": ["not", "a", "tensor"], "hidden": out.logits}

    def training_step(self, batch, batch_idx):
        return self(**batch)["loss"]


def test_output_without_logits_fails_at_fit_start_not_per_probe():
    monitor = InteractionMonitor(PLAYERS, probe_data=dict(PROBE), baseline=MASK_ID, num_samples=2, on_error="warn")
    trainer = quiet_trainer(max_steps=3, callbacks=[monitor])
    with pytest.raises(TypeError, match="InteractionMonitor cannot run on this model .* cannot find the logits"):
        trainer.fit(NoLogits(), data())
    assert trainer.global_step == 0 and monitor.failures == 0
    # the forward hook says where they are
    monitor = InteractionMonitor(PLAYERS, probe_data=dict(PROBE), baseline=MASK_ID, num_samples=2, images_every=0,
                                 forward=lambda m, b: m(**b)["hidden"], schedule=every(2), solver_iterations=100)
    quiet_trainer(max_steps=2, callbacks=[monitor]).fit(NoLogits(), data())
    assert [s for s, _ in monitor.history] == [0, 2] and monitor.failures == 0


# ----------------------------------------------------------------------------------------- token players
def interactions(**kw) -> InteractionMonitor:
    defaults = {"probe_data": dict(PROBE), "num_samples": 3, "images_every": 0, "on_error": "raise",
                "solver_iterations": 300}
    return InteractionMonitor(kw.pop("players", PLAYERS), **{**defaults, **kw})


def test_token_ids_without_a_baseline_token_are_refused_with_what_to_pass():
    with pytest.raises(ValueError, match=r"torch.int64 \(token ids\?\).*baseline=tokenizer.mask_token_id.*mask_at="):
        measured(interactions(), TextClassifier())


def test_a_float_baseline_on_token_ids_is_refused():
    with pytest.raises(ValueError, match="non-integer values .* baseline token id"):
        measured(interactions(baseline=torch.full((12,), 2.5)), TextClassifier())


def test_players_over_padded_positions_are_refused():
    with pytest.raises(ValueError, match=r"players \[1\] cover padded positions \(attention_mask 0\)"):
        measured(interactions(players=TokenPositions([[1], [11]], 12), baseline=MASK_ID), TextClassifier())


def test_masking_at_the_embedding_with_the_mask_tokens_vector_equals_the_mask_token():
    """Replacing a token by [MASK] and replacing its embedding by the [MASK] embedding are the same computation."""
    torch.manual_seed(0)
    model = TextClassifier()
    by_token = interactions(baseline=MASK_ID)
    by_embedding = interactions(mask_at="embed", baseline=model.embed.weight[MASK_ID].detach())
    a, b = measured(by_token, model), measured(by_embedding, model)
    assert a.scalars == pytest.approx(b.scalars, abs=1e-6)
    torch.testing.assert_close(by_token._previous["i_and"], by_embedding._previous["i_and"], atol=1e-5, rtol=1e-5)
    # the default embedding baseline is the probe-set mean over real tokens, and the inputs stay untouched
    default = interactions(mask_at="embed")
    measured(default, model)
    with torch.no_grad():
        real = model.embed(PROBE["input_ids"])[PROBE["attention_mask"].bool()]
    torch.testing.assert_close(default._baseline(model, PROBE["input_ids"]), real.mean(0))


def test_player_key_names_the_input_the_players_partition():
    torch.manual_seed(0)
    model = TextClassifier()

    def forward(m, b):
        return m(b["tokens"], b["attention_mask"]).logits

    renamed = {"tokens": PROBE["input_ids"], "attention_mask": PROBE["attention_mask"], "labels": PROBE["labels"]}
    a = measured(interactions(baseline=MASK_ID), model).scalars
    renamed_monitor = interactions(probe_data=renamed, player_key="tokens", forward=forward, baseline=MASK_ID)
    b = measured(renamed_monitor, model).scalars
    assert a == pytest.approx(b, abs=1e-9)
    with pytest.raises(KeyError, match="without key 'input_ids'"):
        measured(interactions(probe_data=renamed, forward=forward, baseline=MASK_ID), model)


# ----------------------------------------------------------------------------------------- sequence layers
class TokenHead(TextClassifier):
    """The classifier applied to every position, the first position's logits returned: head input (B, T, d)."""

    def forward(self, input_ids, attention_mask, labels=None):
        h = self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        return ClassifierOutput(None, self.classifier(h)[:, 0])


class FirstTokenHead(TextClassifier):
    """The same computation with the head on the first position only: head input (B, d)."""

    def forward(self, input_ids, attention_mask, labels=None):
        h = self.encoder(self.embed(input_ids), src_key_padding_mask=attention_mask == 0)
        return ClassifierOutput(None, self.classifier(h[:, 0]))


def test_spectrum_on_a_per_token_head_refuses_without_pool_and_pools_with_it():
    torch.manual_seed(0)
    token = TokenHead()
    first = FirstTokenHead()
    first.load_state_dict(token.state_dict())
    with pytest.raises(ValueError, match=r"per-token features \(B, T, p\). Pass pool='first'"):
        measured(spectrum(), token)
    pooled = measured(spectrum(pool="first"), token).scalars
    assert pooled == pytest.approx(measured(spectrum(), first).scalars, rel=1e-5, abs=1e-9)
    monitor = spectrum()
    with pytest.raises(ValueError, match="cannot run on this model .* pool="):  # in a fit: at fit start
        quiet_trainer(max_steps=2, callbacks=[monitor]).fit(TokenHead(), data())
    with pytest.raises(ValueError, match="pool must be None, 'mean', 'first' or 'last'"):
        spectrum(pool="max")


def test_concepts_on_a_sequence_layer_use_per_token_masks():
    torch.manual_seed(0)
    model = TextClassifier()
    monitor = ConceptMonitor("encoder", concept_probe(), num_clusters=1, max_length=1, units=[0, 1], images_every=0)
    report = measured(monitor, model)
    assert report.scalars["n_inactive_units"] == 0 and "explanations" in report.texts
    # the units' activations are the d channels over the T positions: the same as the layer's output transposed
    with torch.no_grad():
        out = model.encoder(model.embed(PROBE["input_ids"]) + model.position(torch.arange(12)),
                            src_key_padding_mask=PROBE["attention_mask"] == 0)
    assert torch.equal(monitor._units_first(out)[:, :, :, 0], out.transpose(1, 2))


def test_concepts_range_importance_on_a_sequence_layer_ablates_the_unit_channel():
    """Range importance zeroes unit u's range in channel u of (N, T, d) (the axis the explanations read), not
    token position u: against a direct hook on the encoder's output."""
    torch.manual_seed(0)
    model = TextClassifier()
    monitor = ConceptMonitor("encoder", concept_probe(), num_clusters=2, max_length=1, units=[1], images_every=0)
    report = measured(monitor, model)
    low, high = -0.5, 0.25
    ablated = monitor._ablated_logits(model, 1, low, high)

    def direct(_mod, _args, out):
        out = out.clone()
        channel = out[..., 1]
        out[..., 1] = torch.where((channel >= low) & (channel <= high), torch.zeros_like(channel), channel)
        return out

    handle = model.encoder.register_forward_hook(direct)
    try:
        with torch.no_grad():
            expected = model(input_ids=PROBE["input_ids"], attention_mask=PROBE["attention_mask"]).logits
    finally:
        handle.remove()
    assert torch.allclose(ablated, expected.float(), atol=1e-6)
    assert any(k.startswith("range_importance_range_") for k in report.scalars)


def test_lib_flattens_tokens_when_every_node_is_per_token_and_refuses_otherwise():
    acts = [torch.randn(4, 3, 5), torch.randn(4, 3, 2)]
    flat, targets = _token_flattened(["a"], acts, torch.zeros(4, 3, dtype=torch.long))
    assert [tuple(a.shape) for a in flat] == [(12, 5), (12, 2)] and tuple(targets.shape) == (12,)
    assert torch.equal(flat[0][4], acts[0][1, 1])  # row b·T + t is token t of sample b
    with pytest.raises(ValueError, match=r"a: \(4, 3, 5\), output: \(4, 2\).*choose layers after the pooling"):
        _token_flattened(["a"], [torch.randn(4, 3, 5), torch.randn(4, 2)], None)


class EncodeAndPool(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, h):
        return self.encoder(h).mean(1)


def test_lib_from_a_sequence_layer_to_a_per_sample_node_fails_at_fit_start():
    model = TextClassifier()
    monitor = InteractionBasisMonitor(layers=["encoder", "pre.0"], sections=[EncodeAndPool(model.encoder),
                                                                            ["pre.0", "pre.1", "classifier"]],
                                      probe_data=dict(PROBE), num_samples=32, images_every=0)
    trainer = quiet_trainer(max_steps=2, callbacks=[monitor])
    with pytest.raises(ValueError, match=r"cannot run on this model .*encoder: \(\d+, 12, 16\), pre.0: \(\d+, 16\)"):
        trainer.fit(model, data())
    assert trainer.global_step == 0


# ----------------------------------------------------------------------------------------- names
class Wrapped(pl.LightningModule):
    """A model held as self.model, as people wrap Hugging Face models."""

    def __init__(self) -> None:
        super().__init__()
        self.model = TextClassifier()

    def forward(self, **batch):
        return self.model(**batch)

    def training_step(self, batch, batch_idx):
        return self(**batch).loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_unknown_head_on_a_wrapped_model_suggests_the_full_name():
    with pytest.raises(ValueError, match=r"No module named 'classifier' in Wrapped; did you mean 'model.classifier'\?"):
        quiet_trainer(max_steps=1, callbacks=[spectrum()]).fit(Wrapped(), data())


# ----------------------------------------------------------------------------------------- Hugging Face
class Bert(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        transformers = pytest.importorskip("transformers")
        config = transformers.BertConfig(vocab_size=len(SENTIMENT_VOCAB), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=16,
                                         num_labels=2, pad_token_id=0)
        self.model = transformers.BertForSequenceClassification(config)  # random weights: nothing downloaded

    def forward(self, **batch):
        return self.model(**batch)  # a SequenceClassifierOutput

    def training_step(self, batch, batch_idx):
        return self(**batch).loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_bert_for_sequence_classification_end_to_end():
    pytest.importorskip("transformers")
    common = dict(schedule=every(10), images_every=0, on_error="raise")
    monitors = [
        FeatureSpectrumMonitor(head="model.classifier", max_samples=64, **common),
        InteractionMonitor(TokenPositions([[1], [2], [3], [4]], 12), mask_at="model.bert.embeddings.word_embeddings",
                           num_samples=2, max_samples=64, solver_iterations=200, **common),
        InteractionBasisMonitor(layers=["model.classifier"], sections=["model.classifier"], num_samples=64, **common),
        ConceptMonitor("model.bert.encoder.layer.1.output", concept_probe(), num_clusters=2, max_length=1,
                       search="beam", max_units=4, **common),
    ]
    pl.seed_everything(0)
    quiet_trainer(max_steps=20, callbacks=monitors).fit(Bert(), data())
    for monitor in monitors:
        assert [s for s, _ in monitor.history] == [0, 10, 20] and monitor.failures == 0, monitor.name
    assert monitors[1].history[-1][1]["n_salient"] > 0
