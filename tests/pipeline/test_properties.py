"""Across random topologies and failures: every message ends exactly once with the outcome
its handlers gave it, and the messages in flight stay within the documented bound."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_helpers import memory, running

from corral.pipeline import BatchInfo, Message, Pipeline
from corral.pipeline.testing import Pushed, push


class Chaotic(Pipeline):
    """Fails n % 7 == 3 in handle_message (raising), n % 11 == 5 in handle_batch (marking);
    n % 13 == 0 succeeds only on its second attempt. Sleeps a little, by n."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.pushed: Pushed | None = None
        self.max_in_flight = 0

    def _watch(self) -> None:
        assert self.pushed is not None
        queue = self.options.producer.options.queue  # type: ignore[attr-defined]
        in_flight = len(self.pushed.messages) - len(queue) - self.pushed.acked
        self.max_in_flight = max(self.max_in_flight, in_flight)

    async def handle_message(self, processor: str, message: Message, context: object) -> Message:
        self._watch()
        n = message.data
        assert isinstance(n, int)
        if n % 3 == 0:
            await asyncio.sleep(0.01 * (n % 4))
        if n % 7 == 3:
            raise ValueError(n)
        if n % 13 == 0 and message.attempt == 1:
            raise ValueError("first attempt")
        return message.put_batch_key(n % 2).put_batcher("even" if n % 2 == 0 else "odd")

    async def handle_batch(
        self, batcher: str, messages: list[Message], info: BatchInfo, context: object
    ) -> Sequence[Message]:
        self._watch()
        await asyncio.sleep(0.05)
        return [m.mark_failed("batch") if m.data % 11 == 5 else m for m in messages]  # type: ignore[operator]


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(0, 300),
    producers=st.integers(1, 3),
    processors=st.integers(1, 4),
    max_demand=st.integers(1, 20),
    batch_size=st.integers(1, 30),
    concurrency=st.integers(1, 3),
    partitioned=st.booleans(),
    retry=st.booleans(),
)
async def test_every_message_ends_once_with_its_outcome_in_bounded_memory(
    n: int,
    producers: int,
    processors: int,
    max_demand: int,
    batch_size: int,
    concurrency: int,
    partitioned: bool,
    retry: bool,
) -> None:
    batcher = {"batch_size": batch_size, "batch_timeout": 0.2, "concurrency": concurrency}
    processor = {"concurrency": processors, "max_demand": max_demand}
    pipeline = Chaotic(
        name="chaos",
        producer={**memory(), "concurrency": producers},
        processors={"default": {**processor, "min_demand": max_demand // 3}},
        batchers={"even": batcher, "odd": batcher},
        partition_by=(lambda m: m.data % 5) if partitioned else None,
        retry={"max_attempts": 2, "backoff": {"initial": 0.1}} if retry else None,
    )
    async with running(pipeline):
        pushed = pipeline.pushed = push(pipeline, range(n))
        successful, failed = await pushed.wait_acked(timeout=3600)

    def fails(k: int) -> bool:
        return k % 7 == 3 or k % 11 == 5 or (k % 13 == 0 and not retry)

    assert [m.data for m in successful] == [k for k in range(n) if not fails(k)]
    assert [m.data for m in failed] == [k for k in range(n) if fails(k)]
    bound = producers * processors * max_demand  # producer buffers
    bound += processors * producers * max_demand  # processors
    bound += 2 * batch_size * (processors + 2 * concurrency)  # two batchers, their batches
    assert pipeline.max_in_flight <= bound


class Ordered(Pipeline):
    """Records, per partition key, the order messages reach handle_message and handle_batch."""

    def __init__(self, expected: int, **options: object) -> None:
        super().__init__(**options)
        self.expected = expected
        self.in_messages: dict[int, list[int]] = {}
        self.in_batches: dict[int, list[int]] = {}
        self.batched = 0
        self.done = asyncio.Event()

    async def handle_message(self, processor: str, message: Message, context: object) -> Message:
        n = message.data
        assert isinstance(n, int)
        self.in_messages.setdefault(n % 5, []).append(n)
        if n % 4 == 0:
            await asyncio.sleep(0.001 * (n % 3))
        return message.put_batcher("b")

    async def handle_batch(
        self, batcher: str, messages: list[Message], info: BatchInfo, context: object
    ) -> Sequence[Message]:
        for m in messages:
            n = m.data
            assert isinstance(n, int)
            self.in_batches.setdefault(n % 5, []).append(n)
        await asyncio.sleep(0.002 * len(messages) % 3)
        self.batched += len(messages)
        if self.batched == self.expected:
            self.done.set()
        return messages


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(1, 400),
    processors=st.integers(1, 4),
    max_demand=st.integers(1, 20),
    batch_size=st.integers(1, 30),
    concurrency=st.integers(1, 3),
    chunks=st.lists(st.integers(1, 12), min_size=1, max_size=20),
    yields=st.lists(st.integers(0, 3), min_size=1, max_size=20),
)
async def test_partition_by_keeps_each_keys_order_while_the_source_is_still_filling(
    n: int,
    processors: int,
    max_demand: int,
    batch_size: int,
    concurrency: int,
    chunks: list[int],
    yields: list[int],
) -> None:
    # Pushes arrive while the pipeline runs, in chunks, with task switches between them: the
    # producer hands messages out both from handle_demand and by late emits.
    from corral.pipeline.producers.memory import MemoryQueue

    queue = MemoryQueue(max_size=n)
    pipeline = Ordered(
        n,
        name="ordered",
        producer=memory(queue=queue),
        processors={"default": {"concurrency": processors, "max_demand": max_demand}},
        batchers={
            "b": {"batch_size": batch_size, "batch_timeout": 0.01, "concurrency": concurrency}
        },
        partition_by=lambda m: m.data % 5,  # type: ignore[operator]
    )
    async with running(pipeline):
        k = 0
        step = 0
        while k < n:
            size = min(chunks[step % len(chunks)], n - k)
            queue.push_nowait(range(k, k + size))
            k += size
            for _ in range(yields[step % len(yields)]):
                await asyncio.sleep(0)
            step += 1
        await pipeline.done.wait()
    for key in range(5):
        expected = list(range(key, n, 5))
        assert pipeline.in_messages.get(key, []) == expected
        assert pipeline.in_batches.get(key, []) == expected
