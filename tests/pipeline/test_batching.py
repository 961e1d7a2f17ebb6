"""Batchers: cuts by size and by timeout on exact virtual timestamps, batch keys, batch
processor concurrency and per-key order with partition_by."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from pipeline_helpers import Recorder, memory, now, running

from corral.pipeline import BatchInfo, Message
from corral.pipeline.testing import push


async def test_batches_are_cut_by_size_and_by_timeout_at_exact_times() -> None:
    pipeline = Recorder(
        name="p",
        producer=memory(),
        batchers={"default": {"batch_size": 10, "batch_timeout": 0.25}},
    )
    async with running(pipeline):
        first = push(pipeline, range(3))
        await first.wait_acked()
        await asyncio.sleep(0.05)  # t = 0.3
        second = push(pipeline, range(3, 15))
        await second.wait_acked()
    assert [(t, b.size, b.trigger, data) for t, b, data in pipeline.batches] == [
        (0.25, 3, "timeout", [0, 1, 2]),
        (0.3, 10, "size", list(range(3, 13))),
        (0.55, 2, "timeout", [13, 14]),
    ]


async def test_each_batch_key_is_batched_separately() -> None:
    class Keyed(Recorder):
        def handle_message(self, processor: str, message: Message, context: object) -> Message:
            key = "even" if message.data % 2 == 0 else "odd"  # type: ignore[operator]
            return message.put_batch_key(key)

    pipeline = Keyed(name="p", producer=memory(), batchers={"default": {"batch_size": 3}})
    async with running(pipeline):
        await push(pipeline, range(8)).wait_acked()
    assert [(b.batch_key, b.trigger, data) for _, b, data in pipeline.batches] == [
        ("even", "size", [0, 2, 4]),
        ("odd", "size", [1, 3, 5]),
        ("even", "timeout", [6]),
        ("odd", "timeout", [7]),
    ]
    assert [t for t, _, _ in pipeline.batches] == [0.0, 0.0, 1.0, 1.0]


async def test_messages_go_to_the_batcher_their_handler_chose() -> None:
    class Router(Recorder):
        def handle_message(self, processor: str, message: Message, context: object) -> Message:
            return message.put_batcher("small" if message.data < 3 else "large")  # type: ignore[operator]

    pipeline = Router(
        name="p",
        producer=memory(),
        batchers={"small": {"batch_size": 3}, "large": {"batch_size": 2}},
    )
    async with running(pipeline):
        await push(pipeline, range(5)).wait_acked()
    assert sorted((b.batcher, data) for _, b, data in pipeline.batches) == [
        ("large", [3, 4]),
        ("small", [0, 1, 2]),
    ]


async def test_batch_processors_of_one_batcher_run_side_by_side() -> None:
    class Slow(Recorder):
        async def handle_batch(  # type: ignore[override]
            self, batcher: str, messages: list[Message], info: BatchInfo, context: object
        ) -> Sequence[Message]:
            super().handle_batch(batcher, messages, info, context)
            await asyncio.sleep(1.0)
            return messages

    pipeline = Slow(
        name="p",
        producer=memory(),
        batchers={"default": {"batch_size": 5, "concurrency": 2}},
    )
    async with running(pipeline):
        await push(pipeline, range(20)).wait_acked()
    assert [(t, data[0]) for t, _, data in pipeline.batches] == [
        (0.0, 0),
        (0.0, 5),
        (1.0, 10),
        (1.0, 15),
    ]


async def test_partition_by_keeps_per_key_order_through_processors_and_batchers() -> None:
    class Jittery(Recorder):
        async def handle_message(  # type: ignore[override]
            self, processor: str, message: Message, context: object
        ) -> Message:
            n = message.data
            assert isinstance(n, int)
            await asyncio.sleep((n * 7 % 5) * 0.01)  # processors finish out of order
            return message.put_batcher("default")

        async def handle_batch(  # type: ignore[override]
            self, batcher: str, messages: list[Message], info: BatchInfo, context: object
        ) -> Sequence[Message]:
            super().handle_batch(batcher, messages, info, context)
            await asyncio.sleep(0.03 if info.partition == 0 else 0.01)
            return messages

    key = lambda m: m.data // 100  # noqa: E731 - keys 0..5
    pipeline = Jittery(
        name="p",
        producer=memory(),
        processors={"default": {"concurrency": 3, "max_demand": 4}},
        batchers={"default": {"batch_size": 4, "batch_timeout": 0.1, "concurrency": 2}},
        partition_by=key,
    )
    data = [k * 100 + i for i in range(12) for k in range(6)]  # keys interleaved
    async with running(pipeline):
        await push(pipeline, data).wait_acked()
    seen: dict[int, list[int]] = {}
    partitions: dict[int, set[int | None]] = {}
    for _, info, batch in pipeline.batches:
        for n in batch:
            assert isinstance(n, int)
            seen.setdefault(n // 100, []).append(n)
            partitions.setdefault(n // 100, set()).add(info.partition)
    assert seen == {k: [k * 100 + i for i in range(12)] for k in range(6)}
    assert partitions == {k: {k % 2} for k in range(6)}
    # The interleaving is real: some batch holds keys of two processors.
    assert any(len({n // 100 for n in b}) > 1 for _, _, b in pipeline.batches)  # type: ignore[operator]


async def test_a_partition_by_that_raises_fails_that_message_only() -> None:
    def key(message: Message) -> int:
        if message.data == 2:
            raise KeyError("no key")
        return 0

    pipeline = Recorder(name="p", producer=memory(), partition_by=key)
    async with running(pipeline):
        successful, failed = await push(pipeline, range(4)).wait_acked()
    assert [m.data for m in successful] == [0, 1, 3]
    assert [(m.data, repr(m.failure.reason)) for m in failed if m.failure] == [
        (2, "KeyError('no key')")
    ]
    assert now() == 0.0
