"""sync='gradients': gradients averaged every step (corral.train.sync)."""

from __future__ import annotations

import numpy as np
import pytest

from corral import Node
from corral.train import LinearRegression, LogisticRegression, Trainer, round_seed
from corral.train.sync import epoch_order, gradient_step, steps_per_epoch

LINEAR = "corral.train:LinearRegression"


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_epoch_order_is_the_permutation_sequence_of_the_seed() -> None:
    rng = np.random.default_rng(9)
    first, second = rng.permutation(10), rng.permutation(10)
    assert epoch_order(10, 9, 0).tolist() == first.tolist()
    assert epoch_order(10, 9, 1).tolist() == second.tolist()


def test_steps_per_epoch_follows_the_largest_shard() -> None:
    assert steps_per_epoch([51, 50, 50, 50], 10) == 6
    assert steps_per_epoch([50, 50], 50) == 1


def test_a_step_past_the_end_of_a_shard_contributes_nothing(
    regression: dict[str, np.ndarray],
) -> None:
    model = LinearRegression(features=4, batch_size=100)
    request = {"params": model.get_parameters(), "seed": 1, "epoch": 0, "step": 3}
    assert gradient_step(model, regression, request) == {"grads": {}, "samples": 0, "loss": 0.0}


def test_a_trainer_rejects_sync_gradients_for_a_model_without_gradients() -> None:
    data = {"user": np.zeros(4, np.int64), "item": np.zeros(4, np.int64), "rating": np.ones(4)}
    with pytest.raises(TypeError, match="sync='gradients' needs a model with batch_size"):
        Trainer(
            data,
            model="corral.train:MatrixFactorization",
            model_args={"users": 1, "items": 1},
            sync="gradients",
        )


def test_sync_must_be_parameters_or_gradients() -> None:
    with pytest.raises(ValueError, match="sync must be 'parameters' or 'gradients'"):
        Trainer({"x": np.zeros((2, 1)), "y": np.zeros(2)}, model=LINEAR, sync="params")


@pytest.mark.realtime
async def test_one_worker_with_gradient_sync_equals_plain_sgd_bit_for_bit(
    regression: dict[str, np.ndarray],
) -> None:
    args = {"features": 4, "lr": 0.05, "seed": 1, "momentum": 0.5, "l2": 0.01, "batch_size": 16}
    plain = LinearRegression(**args)  # type: ignore[arg-type]
    plain.train(regression, epochs=2, seed=round_seed(3, 0, 0))
    async with (
        Node(),
        Trainer(
            regression,
            model=LINEAR,
            model_args=args,
            workers=1,
            local_epochs=2,
            seed=3,
            sync="gradients",
        ) as trainer,
    ):
        result = await trainer.fit(rounds=1)
    assert _same(result.parameters, plain.get_parameters())
    assert result.history[0].samples == 2 * 203


@pytest.mark.realtime
async def test_n_workers_on_equal_whole_shard_batches_equal_full_batch_gradient_descent() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 3))
    data = {"x": x, "y": (x @ np.array([1.0, -1.0, 0.5]) > 0).astype(np.float64)}
    args = {"features": 3, "lr": 0.5, "seed": 2}
    full = LogisticRegression(**args, batch_size=120)  # type: ignore[arg-type]
    full.train(data, epochs=5, seed=0)
    async with (
        Node(),
        Trainer(
            data,
            model="corral.train:LogisticRegression",
            model_args={**args, "batch_size": 40},
            workers=3,
            local_epochs=5,
            sync="gradients",
        ) as trainer,
    ):
        result = await trainer.fit(rounds=1)
    expected = full.get_parameters()
    for name in expected:
        np.testing.assert_allclose(result.parameters[name], expected[name], rtol=1e-12, atol=1e-14)
