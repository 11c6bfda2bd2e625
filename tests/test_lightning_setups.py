"""Lightning set-ups the monitors must keep working in: gradient accumulation, manual optimisation, fast_dev_run,
evaluation after fit, max_time; the strategies they refuse; heads and layers that are not a plain Linear."""

import lightning.pytorch as pl
import pytest
import torch
from helpers import read_events, trainer
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from torch import nn
from torch.utils.data import DataLoader

from lightning_probes.datasets import DigitsDataModule, load_digits_tensors
from lightning_probes.models import MLPClassifier
from lightning_probes.monitors.condensation import CondensationMonitor
from lightning_probes.monitors.spectrum import FeatureSpectrumMonitor
from lightning_probes.schedules import every
from lightning_probes.weights import check_strategy, neuron_weights


def _monitors():
    return [FeatureSpectrumMonitor(schedule=every(2), images_every=0, max_samples=200),
            CondensationMonitor(schedule=every(2), images_every=0)]


def _fit(tmp_path, model=None, **kw):
    pl.seed_everything(0)
    monitors = kw.pop("callbacks", None) or _monitors()
    t = trainer(tmp_path, callbacks=list(monitors), **kw)  # a copy: Lightning appends its own (a Timer)
    t.fit(model or MLPClassifier(hidden=(32,)), DigitsDataModule(batch_size=32))
    return t, monitors


def _steps(monitor):
    return [s for s, _ in monitor.history]


def test_gradient_accumulation_probes_each_optimizer_step_once(tmp_path):
    t, monitors = _fit(tmp_path, max_steps=6, accumulate_grad_batches=3)
    assert t.global_step == 6  # 18 batches
    for m in monitors:  # on_train_batch_end sees every batch; a step is probed once, on the schedule of global_step
        assert _steps(m) == [0, 2, 4, 6]
        assert m.failures == 0


class ManualOptimisation(MLPClassifier):
    """Two optimizer steps per batch (global_step counts both), stepped by hand."""

    def __init__(self):
        super().__init__(hidden=(32,))
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        for _ in range(2):
            loss = self._loss_and_metrics(batch)[0]
            opt.zero_grad()
            self.manual_backward(loss)
            opt.step()


def test_manual_optimisation(tmp_path):
    t, monitors = _fit(tmp_path, ManualOptimisation(), max_steps=8)
    assert t.global_step == 8  # 4 batches of 2 steps
    for m in monitors:  # probed after the batches ending at steps 2, 4, 6, 8 (all on the every(2) grid)
        assert _steps(m) == [0, 2, 4, 6, 8]
        assert m.failures == 0


def test_fast_dev_run_checks_the_model_but_probes_nothing(tmp_path):
    t, monitors = _fit(tmp_path, fast_dev_run=2)
    assert t.global_step == 2
    for m in monitors:
        assert m.history == [] and m.clock.n_probes == 0
        assert not any(k.startswith("probes/") for k in t.callback_metrics)
    with pytest.raises(ValueError, match="No module named 'nope'"):  # but the model is still checked
        _fit(tmp_path, fast_dev_run=1, callbacks=[FeatureSpectrumMonitor(head="nope")])


def test_validate_test_and_predict_after_fit_are_silent(tmp_path):
    t, monitors = _fit(tmp_path, max_steps=4)
    before = [(list(m.history), m.clock.n_probes) for m in monitors]
    dm = DigitsDataModule(batch_size=32)
    t.validate(t.lightning_module, dm)
    t.test(t.lightning_module, dm)
    x, _ = load_digits_tensors()
    predictions = t.predict(t.lightning_module, DataLoader(x[:64], batch_size=32))
    assert len(predictions) == 2
    assert [(list(m.history), m.clock.n_probes) for m in monitors] == before
    events = read_events(str(tmp_path))
    for tag, points in events.scalars.items():
        if tag.startswith("probes/"):
            assert max(s for s, _ in points) <= 4, tag  # nothing was written outside the fit


def test_max_time_ends_with_a_final_probe(tmp_path):
    t, monitors = _fit(tmp_path, max_time={"seconds": 1}, max_epochs=1000)
    assert t.global_step > 0  # stopped by the clock
    for m in monitors:
        assert _steps(m)[-1] == t.global_step  # the end-of-training probe saw the final weights
        assert m.failures == 0


class FakeDeepSpeedStrategy(DDPStrategy):  # DeepSpeed is not installable here; the refusal goes by the class
    pass


FakeDeepSpeedStrategy.__name__ = "DeepSpeedStrategy"


class Unknown:  # a strategy of someone's own, of no class the weight reads know
    pass


def test_deepspeed_and_unreadable_strategies_are_refused():
    deepspeed = type("T", (), {"strategy": FakeDeepSpeedStrategy()})()
    with pytest.raises(ValueError, match="does not support DeepSpeed strategies"):
        check_strategy(deepspeed, "FeatureSpectrumMonitor")
    unknown = type("T", (), {"strategy": Unknown()})()
    check_strategy(unknown, "FeatureSpectrumMonitor")  # forward-only monitors go through the wrapped module
    with pytest.raises(ValueError, match="cannot tell whether Unknown holds them in full"):
        check_strategy(unknown, "CondensationMonitor", reads_weights=True)
    single = type("T", (), {"strategy": SingleDeviceStrategy(torch.device("cpu"))})()
    check_strategy(single, "CondensationMonitor", reads_weights=True)


class WrappedHead(MLPClassifier):
    """An HF-style head: ``classifier = Sequential(Dropout, Linear)``."""

    def __init__(self):
        super().__init__(hidden=(32,))
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(32, 10))


def test_a_head_wrapping_a_linear_resolves_to_it(tmp_path, caplog):
    spectrum = FeatureSpectrumMonitor(schedule=every(2), images_every=0, max_samples=200)
    with caplog.at_level("INFO"):
        _fit(tmp_path, WrappedHead(), max_steps=2, callbacks=[spectrum])
    assert "head 'classifier' is a Sequential, not a Linear; using the Linear that makes its output, " \
           "'classifier.1'" in caplog.text
    assert _steps(spectrum) == [0, 2] and spectrum.failures == 0
    assert spectrum.history[-1][1]["rank"] <= 32  # Φ is the 32-wide input of classifier.1


def test_a_head_without_a_linear_gets_the_list_of_linear_modules(tmp_path):
    with pytest.raises(TypeError, match=r"'features.1' is a ReLU, not a Linear; did you mean 'features.0'\? "
                                        r"Linear modules: 'features.0', 'classifier'"):
        _fit(tmp_path, max_steps=1, callbacks=[FeatureSpectrumMonitor(head="features.1")])


class CustomHead(nn.Module):  # like HF's RobertaClassificationHead: what forward does is not in the structure
    def __init__(self):
        super().__init__()
        self.dense, self.out_proj = nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x):
        return self.out_proj(torch.tanh(self.dense(x)))


class CustomHeadModel(MLPClassifier):
    def __init__(self):
        super().__init__(hidden=(32,))
        self.classifier = CustomHead()


def test_a_head_of_unknown_structure_is_refused_with_a_suggestion(tmp_path):
    with pytest.raises(TypeError, match=r"cannot be read off its structure; name the Linear whose input is Φ, e.g. "
                                        r"head='classifier.out_proj'"):
        _fit(tmp_path, CustomHeadModel(), max_steps=1, callbacks=[FeatureSpectrumMonitor()])


def test_conv_and_attention_layers_are_neurons():
    conv = nn.Conv1d(4, 6, kernel_size=3, groups=2)
    w, b = neuron_weights(conv)
    assert w.shape == (6, 2 * 3) and torch.equal(w[5], conv.weight[5].flatten()) and torch.equal(b, conv.bias)
    attention = nn.MultiheadAttention(8, 2)
    w, b = neuron_weights(attention)  # the query, key and value units: rows of in_proj_weight
    assert torch.equal(w, attention.in_proj_weight) and torch.equal(b, attention.in_proj_bias)
    with pytest.raises(TypeError, match="name its out_proj"):
        neuron_weights(nn.MultiheadAttention(8, 2, kdim=4))
    with pytest.raises(TypeError, match="a ReLU is not a neuron layer"):
        neuron_weights(nn.ReLU())


class Attention(MLPClassifier):
    """The 8x8 digit as 4 tokens of 16 pixels through self-attention, then the MLP."""

    def __init__(self):
        super().__init__(hidden=(32,))
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x):
        tokens = x.reshape(len(x), 4, 16)
        return super().forward(self.attn(tokens, tokens, tokens, need_weights=False)[0].flatten(1))


def test_condensation_on_an_attention_layer_named_explicitly(tmp_path):
    monitor = CondensationMonitor(layers=["attn", "attn.out_proj"], schedule=every(2), images_every=0)
    model = Attention()
    _fit(tmp_path, model, max_steps=2, callbacks=[monitor])
    assert [s for s, _ in monitor.history] == [0, 2] and monitor.failures == 0
    assert monitor.last_stats["attn"].n_neurons == 48  # query, key and value units
    assert monitor.initial_weights["attn"].shape == (48, 16)
    assert monitor.last_stats["attn.out_proj"].n_neurons == 16
    assert monitor.history[-1][1]["attn/weight_norm"] == pytest.approx(float(model.attn.in_proj_weight.norm()))
