"""ThreeLayerNet, scale_init_, ThreeLayerRegressor and the generated regression data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_probes.datasets import RegressionDataModule, make_regression_tensors
from lightning_probes.models import ThreeLayerNet, ThreeLayerRegressor, scale_init_


def test_three_layer_net_computes_the_formula() -> None:
    torch.manual_seed(0)
    net = ThreeLayerNet(3, 8, 2, activation="tanh", init_std=0.5)
    x = torch.randn(5, 3)
    w1, b1, w2, b2 = net.layer1.weight, net.layer1.bias, net.layer2.weight, net.layer2.bias
    a, c = net.output.weight, net.output.bias
    expected = torch.tanh(torch.tanh(x @ w1.T + b1) @ w2.T + b2) @ a.T + c
    assert torch.allclose(net(x), expected)
    assert [name for name, _ in net.named_children()][:3] == ["layer1", "layer2", "output"]


@pytest.mark.parametrize("gamma", [0.5, 1.5])
def test_init_gamma_sets_every_parameter_std(gamma: float) -> None:
    torch.manual_seed(1)
    net = ThreeLayerNet(1, 400, 1, init_gamma=gamma)
    std = 400 ** (-gamma)
    assert float(net.layer2.weight.detach().std()) == pytest.approx(std, rel=0.02)  # 160 000 draws
    params = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert float(params.std()) == pytest.approx(std, rel=0.02)
    assert float(params.mean()) == pytest.approx(0.0, abs=5 * std / params.numel() ** 0.5)


def test_default_init_is_pytorchs_and_bias_can_be_dropped() -> None:
    torch.manual_seed(2)
    net = ThreeLayerNet(1, 50, 1)
    bound = 1 / 50**0.5  # kaiming-uniform bound of nn.Linear(50, 50)
    assert float(net.layer2.weight.detach().abs().max()) <= bound
    assert ThreeLayerNet(2, 4, 1, bias=False).layer1.bias is None


def test_scale_init_on_any_model() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(10, 200), nn.ReLU(), nn.Linear(200, 5))
    scale_init_(model, gamma=1.0)  # width = largest out_features = 200
    w = model[0].weight.detach()
    assert float(w.std()) == pytest.approx(1 / 200, rel=0.05)
    scale_init_(model, std=0.0)
    assert all(bool((p == 0).all()) for p in model.parameters())
    assert float(scale_init_(nn.Linear(10, 10), gamma=1.0, width=10000).weight.detach().std()) < 1e-3


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="not both"):
        ThreeLayerNet(1, 10, 1, init_gamma=1.0, init_std=0.1)
    with pytest.raises(ValueError, match="exactly one"):
        scale_init_(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no nn.Linear"):
        scale_init_(nn.Conv1d(1, 1, 1), gamma=1.0)
    with pytest.raises(ValueError, match="Unknown activation"):
        ThreeLayerNet(1, 10, 1, activation="swish")
    with pytest.raises(ValueError, match="positive"):
        ThreeLayerNet(1, 0, 1)
    with pytest.raises(ValueError, match="lr"):
        ThreeLayerRegressor(lr=0.0)
    with pytest.raises(ValueError, match="Unknown target"):
        make_regression_tensors(10, target="cubic")
    with pytest.raises(ValueError, match="positive"):
        RegressionDataModule(batch_size=0)


def test_regressor_trains_one_step_on_the_generated_data() -> None:
    torch.manual_seed(4)
    model = ThreeLayerRegressor(width=16, init_gamma=0.5, lr=0.1)
    dm = RegressionDataModule(num_train=64, num_val=16, batch_size=64)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    optimizer = model.configure_optimizers()
    before = float(torch.nn.functional.mse_loss(model(x), y).detach())
    for _ in range(20):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
    assert float(torch.nn.functional.mse_loss(model(x), y).detach()) < before
    assert [n for n, m in model.named_modules() if isinstance(m, nn.Linear)] == ["layer1", "layer2", "output"]


def test_regression_data_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.get_rng_state()
    x1, y1 = make_regression_tensors(50, in_features=3, target="tanh", frequency=2.0, seed=5)
    x2, y2 = make_regression_tensors(50, in_features=3, target="tanh", frequency=2.0, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert bool((x1.abs() <= 1).all()) and torch.allclose(y1, torch.tanh(2.0 * x1.mean(1, keepdim=True)))
    _, noisy = make_regression_tensors(50, in_features=3, target="tanh", frequency=2.0, noise=0.1, seed=5)
    assert 0.05 < float((noisy - y1).std()) < 0.15
