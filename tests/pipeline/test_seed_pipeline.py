"""The seed's MLPipeline (example 7): producer concurrency 1; processors "default" with
concurrency 4; batcher "ml_processing" with batch_size 100, batch_timeout 1 s, concurrency 2."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pipeline_helpers import memory, now, running

from corral import telemetry
from corral.pipeline import BatchInfo, Message, Pipeline
from corral.pipeline.events import BATCH_STOP, PROCESSOR_STOP
from corral.pipeline.testing import push

WEIGHTS = (0.5, -0.25, 1.0)
CATEGORIES = ("click", "view", "buy")


def predict(numerical: list[float], categorical: list[int]) -> float:
    return round(sum(w * x for w, x in zip(WEIGHTS, numerical, strict=True)) + categorical[2], 6)


class MLPipeline(Pipeline):
    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        event = message.data
        assert isinstance(event, Mapping)
        values: list[float] = event["values"]
        # preprocess: clip outliers, then normalise to [0, 1]
        clipped = [min(max(v, 0.0), 100.0) for v in values]
        processed = [v / 100.0 for v in clipped]
        # features: numerical and one-hot categorical
        categorical = [int(event["category"] == c) for c in CATEGORIES]
        features = {"numerical": processed, "categorical": categorical}
        return message.put_data(
            {
                "original": event,
                "processed": processed,
                "features": features,
                "prediction": predict(processed, categorical),
            }
        ).put_batcher("ml_processing")

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        scores = [m.data["prediction"] for m in messages]  # type: ignore[index]
        mean = sum(scores) / len(scores)
        return [
            m.put_data({**m.data, "batch_prediction": round(s - mean, 6)})  # type: ignore[dict-item]
            for m, s in zip(messages, scores, strict=True)
        ]


def seed_pipeline() -> MLPipeline:
    return MLPipeline(
        name="ml_pipeline",
        producer={**memory(), "concurrency": 1},
        processors={"default": {"concurrency": 4}},
        batchers={"ml_processing": {"batch_size": 100, "batch_timeout": 1.0, "concurrency": 2}},
    )


async def test_the_seed_shape_processes_scores_and_batches_every_event() -> None:
    batches: list[tuple[float, int, int, str]] = []
    processors: set[object] = set()

    def on_batch(
        _e: object, m: Mapping[str, float], meta: Mapping[str, object], _c: object
    ) -> None:
        info = meta["batch_info"]
        assert isinstance(info, BatchInfo)
        batches.append((now(), int(m["successful"]), meta["index"], info.trigger))  # type: ignore[arg-type]

    telemetry.attach("seed-batches", BATCH_STOP, on_batch)
    telemetry.attach(
        "seed-processors", PROCESSOR_STOP, lambda _e, _m, meta, _c: processors.add(meta["index"])
    )
    events = [
        {"user": i, "values": [float(i % 120), 50.0, -5.0], "category": CATEGORIES[i % 3]}
        for i in range(250)
    ]
    try:
        pipeline = seed_pipeline()
        async with running(pipeline):
            successful, failed = await push(pipeline, events).wait_acked()
    finally:
        telemetry.detach("seed-batches")
        telemetry.detach("seed-processors")
    assert failed == [] and len(successful) == 250
    assert [m.data["original"] for m in successful] == events  # type: ignore[index]
    first = successful[1].data
    assert isinstance(first, dict)
    assert first["processed"] == [0.01, 0.5, 0.0]
    assert first["features"] == {"numerical": [0.01, 0.5, 0.0], "categorical": [0, 1, 0]}
    assert first["prediction"] == predict([0.01, 0.5, 0.0], [0, 1, 0])
    assert "batch_prediction" in first
    # Two full batches at once on the two batch processors; the rest by timeout at 1 s.
    assert batches == [(0.0, 100, 0, "size"), (0.0, 100, 1, "size"), (1.0, 50, 0, "timeout")]
    assert processors == {0, 1, 2, 3}
