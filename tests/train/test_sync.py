"""sync='gradients': gradients averaged every step (corral.train.sync)."""

from __future__ import annotations

import numpy as np
import pytest

from corral import Node
from corral.train import (
    LinearRegression,
    LogisticRegression,
    MatrixFactorization,
    Trainer,
    round_seed,
    split,
)
from corral.train.sync import (
    SparseRows,
    combine_gradients,
    decode_gradients,
    encode_gradients,
    epoch_order,
    gradient_step,
    steps_per_epoch,
)

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
    data = {"y": np.ones(4)}
    with pytest.raises(TypeError, match="sync='gradients' needs a model with batch_size"):
        Trainer(data, model="train_models:NoGradients", sync="gradients")


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


MF = "corral.train:MatrixFactorization"
MF_ARGS = {"users": 12, "items": 9, "factors": 3, "lr": 0.05, "batch_size": 8, "l2": 0.02}


def _ratings() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    user, item = rng.integers(0, 12, 150), rng.integers(0, 9, 150)
    return {
        "user": user,
        "item": item,
        "rating": np.clip(np.round(3 + rng.normal(0, 1, 150)), 1, 5),
    }


def test_sparse_gradients_concatenate_and_dense_ones_average_by_rows() -> None:
    a = {"P": SparseRows(np.array([0, 2]), np.array([1.0, 2.0])), "w": np.array([1.0])}
    b = {"P": SparseRows(np.array([2]), np.array([4.0])), "w": np.array([4.0])}
    out = combine_gradients([(a, 2), (b, 1)])
    assert isinstance(out["P"], SparseRows)
    assert (out["P"].rows.tolist(), out["P"].values.tolist()) == ([0, 2, 2], [1.0, 2.0, 4.0])
    assert out["w"].tolist() == [2.0]  # type: ignore[union-attr]
    assert combine_gradients([(a, 2)]) is a
    wire = encode_gradients(a)
    assert isinstance(wire["P"], dict) and sorted(wire["P"]) == ["rows", "values"]
    back = decode_gradients(wire)
    assert back["P"] == a["P"] and back["w"] is a["w"]
    with pytest.raises(
        ValueError, match=r"every part must have the names \['P', 'w'\] with \['P'\]"
    ):
        combine_gradients([(a, 1), ({"P": np.zeros(3), "w": np.zeros(1)}, 1)])
    with pytest.raises(TypeError, match="gradient 'P': sparse values must match its rows"):
        decode_gradients({"P": {"rows": np.array([1]), "values": np.zeros(2)}})


def test_matrix_factorization_steps_through_its_sparse_gradients_like_train() -> None:
    data = _ratings()
    plain = MatrixFactorization(**MF_ARGS)  # type: ignore[arg-type]
    plain.train(data, epochs=1, seed=3)
    split_steps = MatrixFactorization(**MF_ARGS)  # type: ignore[arg-type]
    order = epoch_order(150, 3, 0)
    for start in range(0, 150, 8):
        index = order[start : start + 8]
        _, grads = split_steps.batch_gradients({k: v[index] for k, v in data.items()})
        split_steps.apply_gradients(grads)
    assert _same(split_steps.get_parameters(), plain.get_parameters())


@pytest.mark.realtime
async def test_one_mf_worker_with_gradient_sync_equals_plain_training_bit_for_bit() -> None:
    data = _ratings()
    plain = MatrixFactorization(**MF_ARGS)  # type: ignore[arg-type]
    plain.train(data, epochs=2, seed=round_seed(3, 0, 0))
    async with (
        Node(),
        Trainer(
            data, model=MF, model_args=MF_ARGS, workers=1, local_epochs=2, seed=3, sync="gradients"
        ) as trainer,
    ):
        result = await trainer.fit(rounds=1)
    assert _same(result.parameters, plain.get_parameters())


@pytest.mark.realtime
async def test_two_mf_workers_with_gradient_sync_step_on_their_batches_end_to_end() -> None:
    # Each step is one plain SGD step on worker 0's batch followed by worker 1's, at once.
    data = _ratings()
    shards = split(data, 2)
    orders = [epoch_order(75, round_seed(3, 0, k), 0) for k in range(2)]
    expected = MatrixFactorization(**MF_ARGS)  # type: ignore[arg-type]
    for start in range(0, 75, 8):
        index = [order[start : start + 8] for order in orders]
        union = {
            c: np.concatenate([s[c][i] for s, i in zip(shards, index, strict=True)]) for c in data
        }
        expected.apply_gradients(expected.batch_gradients(union)[1])
    async with (
        Node(),
        Trainer(data, model=MF, model_args=MF_ARGS, workers=2, seed=3, sync="gradients") as trainer,
    ):
        result = await trainer.fit(rounds=1)
    assert result.history[0].samples == 150
    assert _same(result.parameters, expected.get_parameters())
