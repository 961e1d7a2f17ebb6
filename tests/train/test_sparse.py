"""Embedding tables averaged row by row (SparseModel.row_counts) and shards by key."""

from __future__ import annotations

import numpy as np
import pytest

from corral import Node
from corral.train import (
    MatrixFactorization,
    SparseModel,
    Trainer,
    round_seed,
    split,
    train_locally,
    weighted_average,
)
from corral.train.rounds import parse_reply, train_round

MF = "corral.train:MatrixFactorization"
ARGS = {"users": 12, "items": 9, "factors": 3, "lr": 0.05, "batch_size": 8, "global_mean": 3.0}


@pytest.fixture
def ratings() -> dict[str, np.ndarray]:
    """150 ratings of 12 users x 9 items, drawn at random (so shards by item are unequal)."""
    rng = np.random.default_rng(5)
    user, item = rng.integers(0, 12, 150), rng.integers(0, 9, 150)
    rating = np.clip(np.round(3.0 + rng.normal(0, 1, 150)), 1, 5)
    return {"user": user, "item": item, "rating": rating}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_matrix_factorization_counts_the_rows_of_each_user_and_item() -> None:
    model = MatrixFactorization(3, 4)
    assert isinstance(model, SparseModel)
    counts = model.row_counts({"user": np.array([0, 2, 2]), "item": np.array([3, 3, 1])})
    assert {k: v.tolist() for k, v in counts.items()} == {
        "P": [1, 0, 2],
        "bu": [1, 0, 2],
        "Q": [0, 1, 0, 2],
        "bi": [0, 1, 0, 2],
    }


@pytest.mark.realtime
async def test_two_workers_sharded_by_item_average_each_row_over_its_shards(
    ratings: dict[str, np.ndarray],
) -> None:
    # The same two rounds in this process: train each shard, average with row counts.
    model = MatrixFactorization(**ARGS)  # type: ignore[arg-type]
    params = model.get_parameters()
    shards = split(ratings, 2, by="item")
    counts = [model.row_counts(shard) for shard in shards]
    for r in range(2):
        replies = [
            parse_reply(
                train_round(
                    model,
                    shard,
                    {"params": params, "state": None, "epochs": 1, "seed": round_seed(4, r, k)},
                )
            )
            for k, shard in enumerate(shards)
        ]
        params = weighted_average([(x.params, x.samples) for x in replies], row_counts=counts)
    assert all(len(set(s["item"]) & set(shards[0]["item"])) == 0 for s in shards[1:])
    async with (
        Node(),
        Trainer(ratings, model=MF, model_args=ARGS, workers=2, seed=4, shard_by="item") as trainer,
    ):
        result = await trainer.fit(rounds=2)
    assert [s.samples for s in result.history] == [150, 150]
    assert _same(result.parameters, params)


@pytest.mark.realtime
async def test_one_worker_sharded_by_key_equals_plain_training_bit_for_bit(
    ratings: dict[str, np.ndarray],
) -> None:
    expected = train_locally(MatrixFactorization(**ARGS), ratings, rounds=2, seed=6)  # type: ignore[arg-type]
    async with (
        Node(),
        Trainer(ratings, model=MF, model_args=ARGS, workers=1, seed=6, shard_by="user") as trainer,
    ):
        result = await trainer.fit(rounds=2)
    assert _same(result.parameters, expected)


def test_shard_by_must_name_a_column(ratings: dict[str, np.ndarray]) -> None:
    with pytest.raises(
        ValueError,
        match=r"^invalid options for trainer 'trainer': shard_by must be a column of the data "
        r"\(user, item, rating\); got 'usr'$",
    ):
        Trainer(ratings, model=MF, model_args=ARGS, shard_by="usr")
