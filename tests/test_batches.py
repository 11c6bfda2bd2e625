"""Batches of any structure: the ProbeSet's sources and samples, the call and logits rules, the hooks, the fit-start
trial probe, name suggestions, and "trains exactly like one without" with all five monitors on every step."""

from __future__ import annotations

import collections
import dataclasses
import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset, default_collate

from lightning_probes import batches as structure
from lightning_probes.datasets import DigitsDataModule, DigitsProbe, load_digits_tensors
from lightning_probes.measures.interactions import FeatureGroups
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.concepts import ConceptMonitor
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.interaction_basis import InteractionBasisMonitor
from lightning_probes.monitors.interactions import InteractionMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.probe_set import ProbeSet, resolve_module
from lightning_probes.schedules import every

pytestmark = pytest.mark.usefixtures("one_thread")

X, Y = load_digits_tensors()
X, Y = X[:64], Y[:64]


def quiet_trainer(**kw) -> pl.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False)
    return pl.Trainer(**{**defaults, **kw})


# ----------------------------------------------------------------------------------------- structure utilities
def test_structure_keeps_mapping_types_and_slices_every_tensor_leaf():
    batch = collections.UserDict({"ids": torch.arange(6).view(3, 2), "meta": {"len": torch.tensor([2, 1, 2])},
                                  "name": "kept"})
    part = structure.index(batch, [2, 0])
    assert isinstance(part, collections.UserDict)
    assert part["ids"].tolist() == [[4, 5], [0, 1]] and part["meta"]["len"].tolist() == [2, 2]
    assert part["name"] == "kept"  # a non-tensor leaf is carried along
    assert structure.num_samples(batch) == 3
    joined = structure.concat([structure.index(batch, [0]), structure.index(batch, [1, 2])])
    assert torch.equal(joined["ids"], batch["ids"]) and torch.equal(joined["meta"]["len"], batch["meta"]["len"])
    replaced = structure.set_path(batch, ("meta", "len"), torch.zeros(3))
    assert replaced["meta"]["len"].sum() == 0 and batch["meta"]["len"].sum() == 5  # a copy along the path only
    with pytest.raises(ValueError, match="same number of samples"):
        structure.num_samples({"a": torch.zeros(3), "b": torch.zeros(4)})


def test_split_rule_tensor_tuple_mapping_and_target_key():
    x, y = torch.zeros(2, 3), torch.ones(2)
    assert structure.split_batch(x)[1] is None
    assert structure.split_batch((x, y))[1] is y and structure.split_batch((x,))[1] is None
    for key in structure.TARGET_KEYS:
        inputs, targets, _ = structure.split_batch({"input_ids": x, key: y})
        assert list(inputs) == ["input_ids"] and targets is y
    # "labels" wins over "y"; a configured key wins over both and must exist
    assert structure.split_batch({"y": x, "labels": y})[1] is y
    inputs, targets, _ = structure.split_batch({"y": x, "labels": y, "score": x}, target_key="score")
    assert targets is x and sorted(inputs) == ["labels", "y"]
    with pytest.raises(KeyError, match="target_key='score' is not a key"):
        structure.split_batch({"input_ids": x}, target_key="score")
    with pytest.raises(ValueError, match="forward=lambda module, batch"):
        structure.split_batch((x, y, y))


def test_logits_rule():
    @dataclasses.dataclass
    class Plain:
        scores: torch.Tensor
        extra: str = ""

    z = torch.randn(2, 3)
    assert structure.logits_of(z) is z
    assert structure.logits_of({"loss": None, "logits": z}) is z
    assert structure.logits_of({"scores": z}) is z  # a mapping without "logits": its first value
    assert structure.logits_of((z, "aux")) is z
    assert structure.logits_of(Plain(z)) is z  # a dataclass without .logits: its first field
    with pytest.raises(TypeError, match="cannot find the logits .* Pass forward="):
        structure.logits_of(("not a tensor", z))


def test_hooks_by_import_path_and_their_errors():
    assert structure.resolve_callable("text_models.logits_hook", "forward").__name__ == "logits_hook"
    assert structure.resolve_callable("text_models:labels_hook", "targets").__name__ == "labels_hook"
    with pytest.raises(ValueError, match="cannot import module 'no_such_module'"):
        structure.resolve_callable("no_such_module.fn", "forward")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        structure.resolve_callable("text_models.nope", "forward")
    with pytest.raises(TypeError, match="callable or an import path"):
        structure.resolve_callable(3, "targets")


# ----------------------------------------------------------------------------------------- probe-set sources
class DictSamples(Dataset):
    """Samples like a tokenizer's (a UserDict, as transformers.BatchEncoding is), nested one level."""

    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return collections.UserDict({"inputs": {"input_ids": torch.full((5,), i), "attention_mask": torch.ones(5)},
                                     "labels": torch.tensor(i % 3)})


def test_dataset_of_nested_dict_samples_collated_once_and_sliced_by_sample():
    probe = ProbeSet(DictSamples(20), max_samples=12, batch_size=5)
    probe.materialise()
    assert len(probe) == 12 and probe.targets.tolist() == [i % 3 for i in range(12)]
    got = [(inputs["inputs"]["input_ids"][:, 0].tolist(), y.tolist()) for inputs, y in probe.batches("cpu")]
    assert got == [([0, 1, 2, 3, 4], [0, 1, 2, 0, 1]), ([5, 6, 7, 8, 9], [2, 0, 1, 2, 0]), ([10, 11], [1, 2])]
    assert "labels" not in next(probe.batches())[0]  # the target key is held out of the model inputs
    view = probe.select([3, 7])
    assert view.inputs["inputs"]["input_ids"][:, 0].tolist() == [3, 7] and len(probe) == 12


def test_dataloader_uses_its_own_collate_fn_once():
    calls = []

    def collate(samples):
        calls.append(len(samples))
        batch = default_collate(samples)
        return {"pixels": batch[0], "target": batch[1]}

    loader = DataLoader(TensorDataset(X, Y), batch_size=8, shuffle=True, collate_fn=collate)
    probe = ProbeSet(loader, max_samples=40)
    before = torch.get_rng_state()
    probe.materialise()
    assert calls == [40]  # one collate of the first 40 samples by index: the sampler's shuffling is not used
    assert torch.equal(probe.inputs["pixels"], X[:40]) and torch.equal(probe.targets, Y[:40])
    assert torch.equal(torch.get_rng_state(), before)


class Stream(IterableDataset):
    def __iter__(self):
        for i in range(100):
            yield {"x": X[i % 64], "label": Y[i % 64]}


def test_iterable_dataset_and_loader():
    for source in (Stream(), DataLoader(Stream(), batch_size=16)):
        probe = ProbeSet(source, max_samples=24)
        probe.materialise()
        assert len(probe) == 24 and torch.equal(probe.inputs["x"], X[:24]) and torch.equal(probe.targets, Y[:24])


class DigitsWithTest(DigitsDataModule):
    def test_dataloader(self):
        return DataLoader(TensorDataset(X[32:] * 0 + 0.5, Y[32:]), batch_size=8)


def test_probe_data_test_comes_from_the_fits_test_loader():
    monitor = FeatureSpectrumMonitor(probe_data="test", schedule=every(1000), at_end=False, images_every=0,
                                     max_samples=32)
    pl.seed_everything(0)
    quiet_trainer(max_steps=1, callbacks=[monitor]).fit(MLPClassifier(hidden=(16,)), DigitsWithTest())
    assert torch.equal(monitor.probe_set.targets, Y[32:64]) and bool((monitor.probe_set.inputs == 0.5).all())
    assert len(monitor.history) == 1  # the step-0 probe ran on it


def test_probe_data_test_without_a_test_loader_says_so():
    monitor = FeatureSpectrumMonitor(probe_data="test", images_every=0)
    with pytest.raises(ValueError, match="no test DataLoader.*define test_dataloader"):
        quiet_trainer(max_steps=1, callbacks=[monitor]).fit(MLPClassifier(hidden=(16,)),
                                                            DataLoader(TensorDataset(X, Y), batch_size=16))


def test_probe_set_is_kept_on_the_modules_device_and_plain_attributes_still_work():
    probe = ProbeSet((X, Y))
    probe.materialise(device="cpu")
    assert probe.device == torch.device("cpu") and torch.equal(probe.inputs, X) and torch.equal(probe.targets, Y)
    assert probe.input_path() == ()


# ----------------------------------------------------------------------------------------- names
def test_unknown_head_suggests_the_wrapped_name():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential()
            self.model.add_module("encoder", nn.Linear(4, 4))
            self.model.add_module("classifier", nn.Linear(4, 2))

    with pytest.raises(ValueError, match=r"No module named 'classifier' in Wrapper; did you mean 'model.classifier'\?"):
        resolve_module(Wrapper(), "classifier", nn.Linear)
    with pytest.raises(ValueError, match=r"did you mean 'model.classifier'\?"):
        resolve_module(Wrapper(), "model.clasifier", nn.Linear)  # a typo


def test_long_module_lists_are_cut_short():
    net = nn.Sequential(*[nn.Linear(2, 2) for _ in range(40)])
    with pytest.raises(ValueError) as info:
        resolve_module(net, "head", nn.Linear)
    assert "(28 more)" in str(info.value) and "'39'" not in str(info.value)


# ----------------------------------------------------------------------------------------- the trial probe
class FailsAlways(FeatureSpectrumMonitor):
    def measure(self, trainer, pl_module):
        raise RuntimeError("cannot read this output")


def test_a_monitor_that_cannot_run_fails_at_fit_start_not_behind_a_warning():
    monitor = FailsAlways(probe_data=(X, Y), on_error="warn", images_every=0)
    t = quiet_trainer(max_steps=5, callbacks=[monitor])
    with pytest.raises(RuntimeError, match="FailsAlways cannot run on this model .* trial probe at fit start failed "
                                           r"\(RuntimeError: cannot read this output\)"):
        t.fit(MLPClassifier(hidden=(16,)), DigitsDataModule())
    assert t.global_step == 0 and monitor.failures == 0


def test_the_trial_probe_leaves_no_trace():
    monitors = [FeatureSpectrumMonitor(probe_data=(X, Y), schedule=every(1000), at_start=False, at_end=False),
                InteractionMonitor(FeatureGroups([[0], [1], [2]], 64), probe_data=(X, Y), num_samples=4,
                                   schedule=every(1000), at_start=False, at_end=False)]
    pl.seed_everything(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = quiet_trainer(max_steps=2, callbacks=monitors)
        t.fit(MLPClassifier(hidden=(16,)), DigitsDataModule())
    for m in monitors:
        assert m.history == [] and m.clock.n_probes == 0 and m.clock.probe_seconds == 0 and m.failures == 0
    assert monitors[0].class_means is None and monitors[1]._previous is None
    assert not [k for k in t.callback_metrics if k.startswith("probes/")]
    assert not [w for w in caught if "lightning-probes" in str(w.message)]


# ----------------------------------------------------------------------------------------- trains exactly alike
class BatchNormNet(pl.LightningModule):
    """An MLP with BatchNorm and Dropout: training-mode state (running stats) and RNG use (dropout masks)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3),
                                      nn.Linear(32, 32), nn.ReLU())
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        return self.classifier(self.features(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def five_monitors() -> list:
    common = dict(schedule=every(1), images_every=3, on_error="raise")
    return [
        FeatureSpectrumMonitor(max_samples=128, **common),
        CondensationMonitor(**common),
        InteractionMonitor(FeatureGroups([list(range(16 * i, 16 * i + 16)) for i in range(4)], 64), num_samples=2,
                           max_samples=128, solver_iterations=100, **common),
        InteractionBasisMonitor(layers=["features.4", "classifier"], num_samples=64, **common),
        ConceptMonitor("features.5", DigitsProbe(64), num_clusters=2, max_length=1, search="beam", **common),
    ]


def test_trains_exactly_like_one_without_monitors():
    def run(callbacks):
        pl.seed_everything(0)
        model = BatchNormNet()
        quiet_trainer(max_steps=6, callbacks=callbacks).fit(model, DigitsDataModule(batch_size=32))
        return model, torch.get_rng_state()

    bare, bare_rng = run([])
    monitors = five_monitors()
    watched, watched_rng = run(monitors)
    assert all(len(m.history) == 7 for m in monitors)  # steps 0..6, every monitor, every step
    bare_state, watched_state = bare.state_dict(), watched.state_dict()
    assert bare_state.keys() == watched_state.keys()
    different = [k for k in bare_state if not torch.equal(bare_state[k], watched_state[k])]
    assert different == []  # parameters and BatchNorm buffers (running stats, num_batches_tracked)
    assert torch.equal(bare_rng, watched_rng)
