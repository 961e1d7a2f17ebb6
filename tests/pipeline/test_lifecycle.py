"""Stopping drains; stage crashes restart what the tree says; telemetry events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from pipeline_helpers import Recorder, memory, running

from corral import KILL, Node, Pid, Supervisor, telemetry
from corral.pipeline import BatchInfo, Message, Pipeline
from corral.pipeline.events import (
    BATCH_EXCEPTION,
    BATCH_START,
    BATCH_STOP,
    PROCESSOR_EXCEPTION,
    PROCESSOR_START,
    PROCESSOR_STOP,
)
from corral.pipeline.testing import push
from corral.testing import Gate, wait_all_tasks_blocked


class GatedBatch(Recorder):
    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.gate = Gate()

    async def handle_batch(  # type: ignore[override]
        self, batcher: str, messages: list[Message], info: BatchInfo, context: object
    ) -> Sequence[Message]:
        super().handle_batch(batcher, messages, info, context)
        await self.gate.enter()
        return messages


def gated(**options: object) -> GatedBatch:
    return GatedBatch(
        name="p",
        producer=memory(),
        processors={"default": {"max_demand": 10}},
        batchers={"default": {"batch_size": 10}},
        **options,
    )


async def test_stop_drains_in_flight_messages_and_leaves_the_rest_in_the_source() -> None:
    pipeline = gated()
    queue = pipeline.options.producer.options.queue  # type: ignore[attr-defined]
    async with Node() as node:
        await pipeline.start(node)
        pushed = push(pipeline, range(1000))
        await wait_all_tasks_blocked()
        stopping = asyncio.ensure_future(pipeline.stop())
        await wait_all_tasks_blocked()
        assert not stopping.done()  # waiting for handle_batch
        assert pipeline.whereis("producer.0") is not None
        pipeline.gate.open()
        await stopping
        assert node.whereis("p") is None and node.whereis("p.producer.0") is None
    assert pushed.acked == 40 and len(queue) == 960
    successful = [m.data for ok, _ in pushed.ack_calls for m in ok]
    assert successful == list(range(40))


async def test_stop_flushes_open_batches_at_once() -> None:
    pipeline = Recorder(name="p", producer=memory(), batchers={"default": {"batch_size": 10}})
    async with running(pipeline):
        pushed = push(pipeline, range(25))
        await wait_all_tasks_blocked()
    assert pushed.acked == 25
    assert [(t, b.trigger, b.size) for t, b, _ in pipeline.batches] == [
        (0.0, "size", 10),
        (0.0, "size", 10),
        (0.0, "flush", 5),
    ]


async def test_a_node_stopping_drains_its_pipelines() -> None:
    pipeline = Recorder(name="p", producer=memory(), batchers={"default": {"batch_size": 10}})
    async with Node([pipeline.child_spec()]):
        pushed = push(pipeline, range(5))
        await wait_all_tasks_blocked()
        assert pushed.acked == 0
    assert pushed.acked == 5


async def test_a_drain_that_outlasts_the_shutdown_timeout_is_cut_short(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline = gated(shutdown_timeout=2.0)
    async with Node() as node:
        await pipeline.start(node)
        pushed = push(pipeline, range(15))
        await wait_all_tasks_blocked()
        await pipeline.stop()
        assert asyncio.get_running_loop().time() == 2.0
        assert node.processes() == [node.root]
    assert pushed.acked == 0
    assert "pipeline 'p' did not drain within 2 s (shutdown_timeout)" in caplog.text


def stage_pids(pipeline: Pipeline) -> dict[str, Pid | None]:
    stages = ["producer.0", "processor.default.0", "processor.default.1", "batcher.a"]
    stages += ["batch_processor.a.0", "batcher.b", "batch_processor.b.0"]
    return {stage: pipeline.whereis(stage) for stage in stages}


@pytest.mark.parametrize(
    ("killed", "restarted"),
    [
        ("producer.0", {"producer.0"}),
        (
            "processor.default.1",
            {"processor.default.0", "processor.default.1", "batcher.a", "batch_processor.a.0"}
            | {"batcher.b", "batch_processor.b.0"},
        ),
        ("batcher.a", {"batcher.a", "batch_processor.a.0"}),
        ("batch_processor.b.0", {"batch_processor.b.0"}),
    ],
)
async def test_a_stage_crash_restarts_what_the_tree_says_and_the_pipeline_goes_on(
    killed: str, restarted: set[str]
) -> None:
    class TwoWays(Recorder):
        def handle_message(self, processor: str, message: Message, context: object) -> Message:
            return message.put_batcher("a" if message.data % 2 else "b")  # type: ignore[operator]

    pipeline = TwoWays(
        name="p",
        producer=memory(),
        processors={"default": {"concurrency": 2}},
        batchers={"a": {"batch_size": 2}, "b": {"batch_size": 2}},
    )
    async with running(pipeline):
        await push(pipeline, range(4)).wait_acked()
        before = stage_pids(pipeline)
        victim = before[killed]
        assert victim is not None
        victim.exit(KILL)
        await wait_all_tasks_blocked()
        after = stage_pids(pipeline)
        assert {s for s in before if after[s] is not before[s]} == restarted
        assert all(pid is not None and pid.alive for pid in after.values())
        successful, failed = await push(pipeline, range(4, 12)).wait_acked()
    assert [m.data for m in successful] == list(range(4, 12)) and failed == []


async def test_a_crashed_batch_processor_loses_only_its_batch_unacknowledged() -> None:
    pipeline = gated()
    async with running(pipeline):
        pushed = push(pipeline, range(30))
        await wait_all_tasks_blocked()
        bp = pipeline.whereis("batch_processor.default.0")
        assert bp is not None
        bp.exit(KILL)
        await wait_all_tasks_blocked()
        pipeline.gate.open()
        await wait_all_tasks_blocked()
        acked = sorted(m.data for ok, _ in pushed.ack_calls for m in ok)  # type: ignore[type-var]
        assert acked == list(range(10, 30))


async def test_the_supervision_tree_has_the_documented_shape() -> None:
    pipeline = Recorder(
        name="p", producer={"module": "memory", "concurrency": 2}, batchers={"x": {}}
    )
    async with running(pipeline) as node:
        top = node.lookup("p")

        async def tree(pid: Pid) -> list[object]:
            out: list[object] = []
            for child in await Supervisor.which_children(pid):
                assert child.pid is not None
                if child.type == "supervisor":
                    out.append((child.id, await tree(child.pid)))
                else:
                    out.append(child.id)
            return out

        assert await tree(top) == [
            ("producers", ["producer.0", "producer.1"]),
            ("processors", ["processor.0"]),
            ("batchers", [("batcher.x", ["batcher", ("batch_processors", ["batch_processor.0"])])]),
        ]
        assert pipeline.whereis("batch_processor.x.0") is not None


async def test_processor_and_batch_telemetry_events_carry_exact_virtual_measurements() -> None:
    events: list[tuple[tuple[str, ...], dict[str, float], dict[str, object]]] = []

    def handler(
        event: tuple[str, ...],
        measurements: Mapping[str, float],
        meta: Mapping[str, object],
        _: object,
    ) -> None:
        keep = {k: v for k, v in meta.items() if k in ("processor", "index", "batcher", "kind")}
        if "message" in meta:
            keep["data"] = meta["message"].data  # type: ignore[attr-defined]
        if "batch_info" in meta:
            keep["trigger"] = meta["batch_info"].trigger  # type: ignore[attr-defined]
        events.append((event, dict(measurements), keep))

    class Timed(Pipeline):
        async def handle_message(
            self, processor: str, message: Message, context: object
        ) -> Message:
            await asyncio.sleep(0.5)
            if message.data == 2:
                raise ValueError("two")
            return message.put_data(message.data * 10)  # type: ignore[operator]

        async def handle_batch(
            self, batcher: str, messages: list[Message], info: BatchInfo, context: object
        ) -> Sequence[Message]:
            await asyncio.sleep(1.0)
            raise RuntimeError("batch")

    names = [PROCESSOR_START, PROCESSOR_STOP, PROCESSOR_EXCEPTION]
    names += [BATCH_START, BATCH_STOP, BATCH_EXCEPTION]
    telemetry.attach_many("test-pipeline-events", names, handler)
    try:
        pipeline = Timed(name="t", producer=memory(), batchers={"default": {"batch_size": 1}})
        async with running(pipeline):
            await push(pipeline, [1, 2]).wait_acked()
    finally:
        telemetry.detach("test-pipeline-events")
    proc = {"processor": "default", "index": 0}
    batch = {"batcher": "default", "index": 0, "trigger": "size"}
    # Messages leave a processor for their batcher once its whole chunk is handled.
    assert events == [
        (PROCESSOR_START, {"monotonic_time": 0.0}, {**proc, "data": 1}),
        (PROCESSOR_STOP, {"duration": 0.5, "monotonic_time": 0.5}, {**proc, "data": 10}),
        (PROCESSOR_START, {"monotonic_time": 0.5}, {**proc, "data": 2}),
        (
            PROCESSOR_EXCEPTION,
            {"duration": 0.5, "monotonic_time": 1.0},
            {**proc, "data": 2, "kind": ValueError},
        ),
        (BATCH_START, {"monotonic_time": 1.0, "size": 1}, batch),
        (
            BATCH_EXCEPTION,
            {"duration": 1.0, "monotonic_time": 2.0, "size": 1},
            {**batch, "kind": RuntimeError},
        ),
    ]


async def test_stop_without_batchers_waits_for_the_processors_to_finish() -> None:
    class GatedMessages(Recorder):
        gate = Gate()

        async def handle_message(  # type: ignore[override]
            self, processor: str, message: Message, context: object
        ) -> Message:
            await self.gate.enter()
            return message

    pipeline = GatedMessages(
        name="p", producer=memory(), processors={"default": {"max_demand": 10}}
    )
    queue = pipeline.options.producer.options.queue  # type: ignore[attr-defined]
    async with Node() as node:
        await pipeline.start(node)
        pushed = push(pipeline, range(100))
        await wait_all_tasks_blocked()
        stopping = asyncio.ensure_future(pipeline.stop())
        await wait_all_tasks_blocked()
        assert not stopping.done() and pushed.acked == 0
        pipeline.gate.open()
        await stopping
    assert (pushed.acked, len(queue)) == (10, 90)


async def test_a_pipeline_starts_once_and_stopping_it_twice_is_harmless() -> None:
    pipeline = Recorder(name="p", producer=memory())
    await pipeline.stop()  # never started: nothing to do
    async with running(pipeline) as node:
        with pytest.raises(ValueError, match="a child with id 'p' already exists"):
            await pipeline.start(node)
        assert isinstance(node.lookup("p"), Pid)
    await pipeline.stop()
