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
