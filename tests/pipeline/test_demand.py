"""Demand and backpressure: producers emit only what processors ask for, and a slow
handle_batch holds the whole pipeline back with bounded memory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from pipeline_helpers import Recorder, memory, now, running

from corral import Node, telemetry
from corral.errors import Overloaded
from corral.pipeline import BatchInfo, Message, Pipeline, Producer, ProducerContext
from corral.pipeline.producers.memory import MemoryQueue
from corral.pipeline.testing import Pushed, push
from corral.testing import Gate, wait_all_tasks_blocked


class Gated(Pipeline):
    """handle_message waits at ``message_gate``; handle_batch at ``batch_gate``."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.message_gate: Gate | None = None
        self.batch_gate: Gate | None = None
        self.in_flight: list[int] = []
        self.pushed: Pushed | None = None

    async def handle_message(self, processor: str, message: Message, context: object) -> Message:
        if self.pushed is not None:
            queue = self.options.producer.options.queue  # type: ignore[attr-defined]
            taken = len(self.pushed.messages) - len(queue)
            self.in_flight.append(taken - self.pushed.acked)
        if self.message_gate is not None:
            await self.message_gate.enter()
        return message

    async def handle_batch(
        self, batcher: str, messages: list[Message], info: BatchInfo, context: object
    ) -> Sequence[Message]:
        if self.batch_gate is not None:
            await self.batch_gate.enter()
        return messages


def taken(pipeline: Pipeline, pushed: Pushed) -> int:
    queue = pipeline.options.producer.options.queue  # type: ignore[attr-defined]
    return len(pushed.messages) - len(queue)


async def test_each_processor_holds_at_most_max_demand_messages() -> None:
    pipeline = Gated(
        name="p", producer=memory(), processors={"default": {"concurrency": 2, "max_demand": 10}}
    )
    gate = pipeline.message_gate = Gate()
    async with running(pipeline):
        pushed = pipeline.pushed = push(pipeline, range(100))
        await wait_all_tasks_blocked()
        assert (gate.blocked, taken(pipeline, pushed)) == (2, 20)
        gate.open()
        successful, _ = await pushed.wait_acked()
    assert len(successful) == 100
    assert max(pipeline.in_flight) == 20


async def test_a_gated_handle_batch_stops_the_producer() -> None:
    pipeline = Gated(
        name="p",
        producer=memory(),
        processors={"default": {"max_demand": 10}},
        batchers={"default": {"batch_size": 10, "batch_timeout": 0.5}},
    )
    gate = pipeline.batch_gate = Gate()
    async with running(pipeline):
        pushed = push(pipeline, range(1000))
        await wait_all_tasks_blocked()
        # 10 in handle_batch; 20 cut and waiting for the batch processor (the batcher's room
        # is batch_size x (processors + concurrency)); 10 held by the processor for lack of
        # batcher credit. The producer is asked for nothing more.
        assert (gate.blocked, taken(pipeline, pushed), pushed.acked) == (1, 40, 0)
        await asyncio.sleep(60)
        assert taken(pipeline, pushed) == 40
        gate.open()
        successful, _ = await pushed.wait_acked()
    assert [m.data for m in successful] == list(range(1000))


async def test_a_slow_handle_batch_paces_the_source() -> None:
    class Slow(Recorder):
        async def handle_batch(  # type: ignore[override]
            self, batcher: str, messages: list[Message], info: BatchInfo, context: object
        ) -> Sequence[Message]:
            await asyncio.sleep(1.0)
            return messages

    pipeline = Slow(
        name="p",
        producer=memory(),
        processors={"default": {"max_demand": 10}},
        batchers={"default": {"batch_size": 10}},
    )
    acked_at: list[float] = []

    class Clocked(Pushed):
        def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
            acked_at.append(now())
            super().ack(successful, failed)

    queue = pipeline.options.producer.options.queue  # type: ignore[attr-defined]
    async with running(pipeline):
        pushed = Clocked()
        pushed.messages = [Message(i, acknowledger=pushed, ack_data=i) for i in range(100)]
        queue.push_messages_nowait(pushed.messages)
        await asyncio.sleep(4.5)
        assert len(queue) == 100 - 4 * 10 - 40  # acked, plus in flight as above
        await pushed.wait_acked(timeout=30)
    assert acked_at == [float(t) for t in range(1, 11)]


async def test_the_memory_queue_is_bounded() -> None:
    queue = MemoryQueue(max_size=3, name="q")
    queue.push_nowait([1, 2])
    with pytest.raises(Overloaded) as info:
        queue.push_nowait([3, 4])
    assert str(info.value) == (
        "MemoryQueue 'q' is full: 2 messages queued (max_size=3); 2 more do not fit; the "
        "pipeline is slower than its source: push less at a time or use `await queue.push`"
    )
    assert len(queue) == 2
    with pytest.raises(ValueError, match="4 messages can never fit"):
        await queue.push([1, 2, 3, 4])


async def test_an_async_push_waits_for_room_in_the_queue() -> None:
    queue = MemoryQueue(max_size=20)
    pipeline = Gated(
        name="p", producer=memory(queue=queue), processors={"default": {"max_demand": 10}}
    )
    gate = pipeline.message_gate = Gate()
    async with running(pipeline):
        queue.push_nowait(range(20))
        await wait_all_tasks_blocked()  # the processor took 10
        waiting = asyncio.ensure_future(queue.push(range(15)))
        await wait_all_tasks_blocked()
        assert not waiting.done()
        gate.open()
        await waiting
        assert len(waiting.result()) == 15


class Ticker(Producer):
    """Emits up to 3 owed messages per virtual second, from a loop timer (a stand-in for a
    broker's fetch loop): demand is met late, through context.emit."""

    def __init__(self, options: object, context: ProducerContext) -> None:
        super().__init__(options, context)
        self.owed = 0
        self.next = 0
        self.timer: asyncio.TimerHandle | None = None

    def handle_demand(self, demand: int) -> list[Message]:
        self.owed += demand
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(1.0, self.tick)
        return []

    def tick(self) -> None:
        self.timer = None
        k = min(3, self.owed, 7 - self.next)
        self.owed -= k
        self.context.emit([Message(self.next + i) for i in range(k)])
        self.next += k
        if self.owed and self.next < 7:
            self.timer = asyncio.get_running_loop().call_later(1.0, self.tick)

    def terminate(self, reason: object) -> None:
        if self.timer is not None:
            self.timer.cancel()


async def test_a_producer_may_meet_demand_later_through_emit() -> None:
    pipeline = Recorder(name="p", producer={"module": Ticker})
    async with running(pipeline):
        await asyncio.sleep(10)
    assert pipeline.handled == [(1.0, 0), (1.0, 1), (1.0, 2), (2.0, 3), (2.0, 4), (2.0, 5),
                                (3.0, 6)]  # fmt: skip


class Greedy(Producer):
    def handle_demand(self, demand: int) -> list[Message]:
        return [Message(i) for i in range(demand + 2)]


async def test_a_producer_emitting_beyond_its_demand_crashes_its_stage_naming_it() -> None:
    reports: list[object] = []
    telemetry.attach(
        "test-greedy",
        ("corral", "supervisor", "child_exited"),
        lambda _e, _m, meta, _c: reports.append(meta["report"]),
    )
    try:
        async with Node() as node:
            pipeline = Recorder(
                name="g", producer={"module": Greedy}, processors={"default": {"max_demand": 4}}
            )
            await pipeline.start(node)
            await wait_all_tasks_blocked()
            await pipeline.stop()
    finally:
        telemetry.detach("test-greedy")
    first = reports[0]
    assert first.child_id == "producer.0"  # type: ignore[attr-defined]
    assert str(first.reason) == (  # type: ignore[attr-defined]
        "Greedy (pipeline 'g' producer 0) emitted 6 messages with demand for 4; a producer "
        "emits at most the demand it was asked for"
    )


# -- order: late emits and demand answered at once --------------------------------------------


class InOrder(Pipeline):
    def __init__(self, expected: int, **options: object) -> None:
        super().__init__(**options)
        self.seen: list[int] = []
        self.expected = expected
        self.done = asyncio.Event()

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        self.seen.append(message.data)  # type: ignore[arg-type]
        if len(self.seen) == self.expected:
            self.done.set()
        return message


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_pushes_racing_with_demand_keep_the_source_order(seed: int) -> None:
    # The memory producer hands out messages two ways: returned from handle_demand, and
    # emitted from the pusher's task when it owes demand. An emit reaches the stage as a
    # message in its mailbox; demand answered at once from the queue must not overtake it.
    import random

    rng = random.Random(seed)
    queue = MemoryQueue(max_size=10_000)
    pipeline = InOrder(
        2000,
        name="p",
        producer={"module": "memory", "options": {"queue": queue}},
        processors={"default": {"concurrency": 1, "max_demand": 10}},
    )
    async with Node() as node:
        await pipeline.start(node)
        n = 0
        while n < 2000:
            for _ in range(rng.randrange(1, 6)):
                if n < 2000:
                    queue.push_nowait([n])
                    n += 1
            for _ in range(rng.randrange(0, 3)):
                await asyncio.sleep(0)
        await pipeline.done.wait()
        await pipeline.stop()
    assert pipeline.seen == list(range(2000))
