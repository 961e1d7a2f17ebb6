"""Seed sketch 7, "MLPipeline with Broadway", with the seed's exact knobs: producer
concurrency 1; processors ``default`` with concurrency 4; batcher ``ml_processing`` with
batch_size 100, batch_timeout 1000 ms, concurrency 2.

``handle_message`` preprocesses each event (normalizes it, drops outliers), extracts
numerical and categorical features, predicts with a loaded model and keeps original,
processed, features and prediction on the message. ``handle_batch`` runs one batch
prediction over its messages and attaches it to each. Events come from the in-memory
producer (a broker stand-in: Redis Streams, RabbitMQ and NATS producers take the same
options, see docs/pipeline.md), and the acknowledger hears how every message ended.

Run it (the last, partial batch waits for the 1 s batch_timeout)::

    .venv/bin/python examples/seed/ml_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import numpy as np

from corral import Node
from corral.pipeline import BatchInfo, Message, Pipeline
from corral.pipeline.producers.memory import MemoryQueue

CATEGORIES = ("click", "view", "buy")
OUTLIER_Z = 4.0  # a value further than this many standard deviations is an outlier


class Model:
    """A logistic model 'loaded' at start: the mean/std it was trained with and its weights."""

    mean = np.array([50.0, 2.0, 300.0])
    std = np.array([10.0, 0.5, 80.0])
    w = np.array([0.8, -0.5, 1.2, 0.0, 0.3, 1.5])  # 3 numerical + 3 one-hot categorical
    b = -0.7

    def predict(self, features: np.ndarray) -> np.ndarray:
        """P(conversion) for one row or a matrix of rows of features."""
        p: np.ndarray = 1.0 / (1.0 + np.exp(-(features @ self.w + self.b)))
        return p


class MLPipeline(Pipeline):
    def __init__(self, model: Model, **options: object) -> None:
        super().__init__(**options)
        self.model = model
        self.batches: list[tuple[int, str]] = []  # (size, trigger); all stages share one loop

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        event = message.data
        assert isinstance(event, dict)
        z = (np.asarray(event["values"], dtype=float) - self.model.mean) / self.model.std
        if np.any(np.abs(z) > OUTLIER_Z):  # remove outliers: fail the message, no retry
            return message.mark_failed(f"outlier: {event['values']}", retry=False)
        numerical = np.round(z, 6)  # normalized
        categorical = np.array([float(event["category"] == c) for c in CATEGORIES])
        features = np.concatenate([numerical, categorical])
        prediction = float(self.model.predict(features))
        data = {
            "original": event,
            "processed": numerical.tolist(),
            "features": {"numerical": numerical.tolist(), "categorical": categorical.tolist()},
            "prediction": prediction,
        }
        return message.put_data(data).put_batcher("ml_processing")

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        self.batches.append((batch_info.size, batch_info.trigger))
        rows = [m.data["features"] for m in messages]  # type: ignore[index]
        matrix = np.array([r["numerical"] + r["categorical"] for r in rows])
        scores = self.model.predict(matrix)  # one vectorized call for the whole batch
        return [
            m.put_data({**m.data, "batch_prediction": float(s)})  # type: ignore[dict-item]
            for m, s in zip(messages, scores, strict=True)
        ]


class Tally:
    """The acknowledger: told once per chunk or batch which messages succeeded or failed."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.successful: list[Message] = []
        self.failed: list[Message] = []
        self.all_acked = asyncio.Event()

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        self.successful += successful
        self.failed += failed
        if len(self.successful) + len(self.failed) >= self.expected:
            self.all_acked.set()


def make_events(n: int, seed: int = 7) -> tuple[list[dict[str, object]], int]:
    """n synthetic events; every 40th (from the 8th) carries an outlier. Returns (events,
    outliers injected)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(Model.mean, Model.std, size=(n, 3))
    injected = 0
    for i in range(7, n, 40):
        values[i, i % 3] = Model.mean[i % 3] + 10 * Model.std[i % 3]
        injected += 1
    events = [
        {"id": i, "values": np.round(values[i], 3).tolist(), "category": CATEGORIES[i % 3]}
        for i in range(n)
    ]
    return events, injected


async def run(n: int) -> int:
    events, injected = make_events(n)
    queue = MemoryQueue()
    pipeline = MLPipeline(
        Model(),
        name="ml_pipeline",
        producer={"module": "memory", "options": {"queue": queue}, "concurrency": 1},
        processors={"default": {"concurrency": 4}},
        batchers={"ml_processing": {"batch_size": 100, "batch_timeout": 1.0, "concurrency": 2}},
    )
    tally = Tally(len(events))
    async with Node() as node:
        await pipeline.start(node)
        await queue.push(events, acknowledger=tally)
        await tally.all_acked.wait()
        await pipeline.stop()  # drains (nothing is left in flight here) and stops the stages

    ok = [m.data for m in tally.successful if isinstance(m.data, dict)]
    agree = all(abs(d["prediction"] - d["batch_prediction"]) < 1e-9 for d in ok)
    sample = ok[0]
    print(f"messages handled: {len(ok) + len(tally.failed)} of {n}")
    print(f"successful: {len(ok)}; failed as outliers: {len(tally.failed)} (injected {injected})")
    reasons = [m.failure.reason for m in tally.failed if m.failure is not None]
    print(f"first failure: {reasons[0] if reasons else None}")
    print(f"batches: {len(pipeline.batches)}; sizes: {[s for s, _ in pipeline.batches]}")
    print(f"batch triggers: {[t for _, t in pipeline.batches]}")
    print(f"per-message and batch predictions agree: {agree}")
    print(f"sample message: original={sample['original']}")
    print(f"  processed={sample['processed']} categorical={sample['features']['categorical']}")
    print(
        f"  prediction={sample['prediction']:.4f} batch_prediction={sample['batch_prediction']:.4f}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The seed's Broadway MLPipeline on corral.")
    parser.add_argument("--quick", action="store_true", help="250 events instead of 1000")
    args = parser.parse_args(argv)
    return asyncio.run(run(250 if args.quick else 1000))


if __name__ == "__main__":
    sys.exit(main())
