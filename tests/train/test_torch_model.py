"""The torch wrapper, where torch is installed."""

from __future__ import annotations

import numpy as np
import pytest

from corral.train import Model, train_locally

pytest.importorskip("torch")

from corral.train.torch_model import TorchModel

MLP = "corral.train.torch_model:mlp"


def test_a_torch_mlp_follows_the_protocol_and_learns_deterministically() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    data = {"x": x, "y": (x[:, 0] - x[:, 2] > 0).astype(np.int64)}

    def fit() -> dict[str, np.ndarray]:
        model = TorchModel(MLP, module_args={"inputs": 3, "hidden": 16, "outputs": 2}, lr=0.3)
        assert isinstance(model, Model)
        params = train_locally(model, data, rounds=30, seed=2)
        model.set_parameters(params)
        assert model.evaluate(data)["accuracy"] > 0.9
        return params

    one, two = fit(), fit()
    assert all(one[k].tobytes() == two[k].tobytes() for k in one)


def test_torch_model_rejects_an_unknown_loss() -> None:
    with pytest.raises(ValueError, match="loss must be one of cross_entropy, mse; got 'l1'"):
        TorchModel(MLP, loss="l1")


def test_the_optimizer_built_once_trains_set_parameters_like_a_fresh_model() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 3)).astype(np.float32)
    data = {"x": x, "y": (x[:, 1] > 0).astype(np.int64)}
    args = {"inputs": 3, "hidden": 8, "outputs": 2}
    reused = TorchModel(MLP, module_args=args, seed=3)
    start = reused.get_parameters()
    reused.train(data, epochs=1, seed=0)
    reused.set_parameters(start)
    reused.train(data, epochs=2, seed=5)
    fresh = TorchModel(MLP, module_args=args, seed=4)
    fresh.set_parameters(start)
    fresh.train(data, epochs=2, seed=5)
    a, b = reused.get_parameters(), fresh.get_parameters()
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_the_hand_written_sgd_step_is_torch_optim_sgd_bit_for_bit() -> None:
    import torch

    rng = np.random.default_rng(2)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    data = {"x": x, "y": (x[:, 0] * x[:, 3] > 0).astype(np.int64)}
    args = {"inputs": 4, "hidden": 8, "outputs": 2}
    ours = TorchModel(MLP, module_args=args, lr=0.2, batch_size=16, seed=7)
    start = ours.get_parameters()
    ours.train(data, epochs=3, seed=1)

    reference = TorchModel(MLP, module_args=args, lr=0.2, batch_size=16, seed=7)
    reference.set_parameters(start)
    net = reference.net
    optimizer = torch.optim.SGD(net.parameters(), lr=0.2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(data["y"])
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        order = torch.randperm(96, generator=generator)
        for start_row in range(0, 96, 16):
            index = order[start_row : start_row + 16]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[index]), yt[index]).backward()
            optimizer.step()
    a, b = ours.get_parameters(), reference.get_parameters()
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
