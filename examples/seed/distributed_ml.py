"""Seed sketch 6, "DistributedML": 4 workers, the data split into 4 chunks, each chunk
trained in its own worker from the same parameters, the results averaged.

The seed's GenServer starts 4 worker GenServers, sends each a chunk with ``Task.async`` and
averages what comes back; its ``train_model`` is a placeholder. Here ``corral.train.Trainer``
does the same for real: 4 supervised worker OS processes (ports), one shard each, every round
trained from the current parameters and averaged by shard size. The model is the seed's
linear regression ``x @ w + b`` (``corral.train:LinearRegression``), on synthetic data whose
true weights we know, so you can see the averaged model find them. A worker that dies
mid-round is restarted and its shard re-run (docs/training.md).

Run it::

    .venv/bin/python examples/seed/distributed_ml.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import numpy as np

from corral import Node
from corral.train import Trainer, split

FEATURES = 10  # the seed's 10x1 weights


W_TRUE = np.array([1.5, -2.0, 0.5, 0.0, 3.0, -1.0, 0.25, 2.0, -0.75, 1.0])
B_TRUE = 0.5


def synthetic(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Rows of ``y = x @ W_TRUE + B_TRUE + noise`` (columns ``x`` and ``y``)."""
    x = rng.normal(size=(rows, FEATURES))
    return {"x": x, "y": x @ W_TRUE + B_TRUE + rng.normal(0.0, 0.1, rows)}


async def train(rows: int, rounds: int) -> int:
    rng = np.random.default_rng(42)
    data, test = synthetic(rows, rng), synthetic(1000, rng)

    async with (
        Node(),
        Trainer(
            data,
            eval_data=test,
            model="corral.train:LinearRegression",
            model_args={"features": FEATURES, "lr": 0.05},
            workers=4,
            local_epochs=1,
            seed=0,
            port_options={"spares": 0},  # no warm spares: nothing is killed in this run
        ) as trainer,
    ):
        print(f"4 workers, shards of {[len(s['y']) for s in split(data, 4)]} rows")
        result = await trainer.fit(rounds=rounds)

    for stats in result.history:
        print(
            f"round {stats.round}: train loss {stats.loss:.5f}, "
            f"held-out rmse {stats.metrics['rmse']:.4f}, restarts {stats.restarts}"
        )
    w = np.asarray(result.parameters["w"], dtype=np.float64)
    b = float(result.parameters["b"][0])
    print(f"true    w: {W_TRUE.tolist()}  b: {B_TRUE}")
    print(f"learned w: {(np.round(w, 2) + 0.0).tolist()}  b: {b:.2f}")
    print(f"max |w - W_TRUE|: {float(np.max(np.abs(w - W_TRUE))):.4f}")
    print(f"|b - B_TRUE|: {abs(b - B_TRUE):.4f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The seed's DistributedML on corral.train.")
    parser.add_argument("--quick", action="store_true", help="fewer rows and rounds")
    args = parser.parse_args(argv)
    rows, rounds = (2000, 8) if args.quick else (8000, 12)
    return asyncio.run(train(rows, rounds))


if __name__ == "__main__":
    sys.exit(main())
