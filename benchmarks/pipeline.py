"""Benchmarks of corral.pipeline against plain asyncio doing the same handler calls.

    python benchmarks/pipeline.py [--quick] [--loop uvloop|asyncio] [--verbose]

Prints one JSON object per line (see ``_common.emit``); ``ratio`` is corral / baseline, both
measured in this run on the same event loop (default: uvloop when installed).

Cases
-----
``memory_end_to_end``
    Messages per second through a whole pipeline: the in-memory producer (concurrency 1)
    -> processors (concurrency 2, a ``handle_message`` that returns the message) -> one
    batcher (batch_size 100, concurrency 1, a ``handle_batch`` that returns the messages)
    -> ack, grouped per acknowledger. Timed from the moment N ready-made messages are pushed
    into the producer's ``MemoryQueue`` until the acknowledger has heard of all N; the
    pipeline is started before and stopped after. Higher is better.

``seed_shape``
    The same, in the seed's shape: processors concurrency 4; batcher ``ml_processing``
    with batch_size 100, batch_timeout 1 s, concurrency 2. The handlers are the trivial
    ones above, so that the pipeline's own cost is what is measured.

Baseline ``asyncio.Queue pipeline``: the same topology written directly with asyncio, as
one would without corral: a producer task feeding a bounded ``asyncio.Queue`` (maxsize
max_demand x processors), the processor tasks calling the same ``handle_message`` and
putting results on a second bounded queue, one batcher task cutting batches of 100 (with a
``batch_timeout`` deadline when its queue runs dry) onto a third, the batch tasks calling
the same ``handle_batch`` then ``ack`` on the same acknowledger. Per-message hand-offs take
the non-blocking path (``get_nowait``) whenever one is possible.

Each line also carries ``ceiling``: the same handler and ack calls made in one plain loop
with no tasks and no queues (the cost of the user's code alone), and ``ratio`` to it.

Method: one warm-up run of every side, then ``R`` repeats (5, or 3 with ``--quick``),
interleaved in rotating order; each number is the median of the repeats. The N messages are
created before the clock starts and, for both sides alike, moved out of the collector's
reach with ``gc.freeze()`` during the run: a streaming system holds only the messages in
flight, not N of them. ``cpu`` and ``cpu_share`` are as in ``runtime.py``.

Targets: >= 200,000 messages/s end to end and >= 0.5 x the asyncio baseline.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from _common import (
    Settings,
    Stopwatch,
    Timing,
    emit,
    interleaved,
    loop_factory,
    median,
    parse_settings,
    say,
)
from corral import Node
from corral.pipeline import BatchInfo, Message, Pipeline
from corral.pipeline.producers.memory import MemoryQueue

BENCH = "pipeline"


@dataclass(frozen=True, kw_only=True)
class Shape:
    """A pipeline topology to measure."""

    case: str
    processors: int
    batch_processors: int
    batch_size: int = 100
    batch_timeout: float = 1.0
    max_demand: int = 50  # corral's default


SHAPES = (
    Shape(case="memory_end_to_end", processors=2, batch_processors=1),
    Shape(case="seed_shape", processors=4, batch_processors=2),
)


@dataclass(frozen=True, kw_only=True)
class Sizes:
    """Messages per measurement (warm-ups use a tenth)."""

    messages: int


FULL = Sizes(messages=1_000_000)
QUICK = Sizes(messages=200_000)


class Trivial(Pipeline):
    """The user's code: returns what it is given."""

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        return message

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        return messages


class Counter:
    """An acknowledger that resolves ``done`` once it has heard of ``n`` messages."""

    def __init__(self, n: int, done: asyncio.Future[None]) -> None:
        self.n = n
        self.count = 0
        self.done = done

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        self.count += len(successful) + len(failed)
        if self.count >= self.n and not self.done.done():
            self.done.set_result(None)


def _messages(n: int, acknowledger: Counter) -> list[Message]:
    return [Message(i, acknowledger=acknowledger) for i in range(n)]


async def _timed(run: Callable[[], Awaitable[None]], n: int) -> Timing:
    watch = Stopwatch()
    gc.freeze()
    try:
        watch.start()
        await run()
        watch.stop()
    finally:
        gc.unfreeze()
    return Timing.of(n, watch)


# -- corral ----------------------------------------------------------------------------------


async def corral_side(node: Node, shape: Shape, n: int) -> Timing:
    loop = asyncio.get_running_loop()
    queue = MemoryQueue(max_size=n)
    pipeline = Trivial(
        name=f"bench-{shape.case}",
        producer={"module": "memory", "options": {"queue": queue}},
        processors={"default": {"concurrency": shape.processors}},
        batchers={
            "default": {
                "batch_size": shape.batch_size,
                "batch_timeout": shape.batch_timeout,
                "concurrency": shape.batch_processors,
            }
        },
    )
    done: asyncio.Future[None] = loop.create_future()
    messages = _messages(n, Counter(n, done))
    await pipeline.start(node)
    try:

        async def run() -> None:
            queue.push_messages_nowait(messages)
            await done

        return await _timed(run, n)
    finally:
        await pipeline.stop()


# -- asyncio baseline ------------------------------------------------------------------------


async def _take(queue: asyncio.Queue[Message]) -> Message:
    try:
        return queue.get_nowait()
    except asyncio.QueueEmpty:
        return await queue.get()


async def _put(queue: asyncio.Queue[object], item: object) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        await queue.put(item)


async def baseline_side(shape: Shape, n: int) -> Timing:
    loop = asyncio.get_running_loop()
    pipeline = Trivial(name="baseline", producer={"module": "memory"})
    handle_message, handle_batch = pipeline.handle_message, pipeline.handle_batch
    done: asyncio.Future[None] = loop.create_future()
    messages = _messages(n, Counter(n, done))
    to_processors: asyncio.Queue[Message] = asyncio.Queue(shape.max_demand * shape.processors)
    to_batcher: asyncio.Queue[Message] = asyncio.Queue(
        shape.batch_size * (shape.processors + shape.batch_processors)
    )
    batches: asyncio.Queue[tuple[BatchInfo, list[Message]]] = asyncio.Queue(1)

    async def produce() -> None:
        put = to_processors.put_nowait
        for m in messages:
            try:
                put(m)
            except asyncio.QueueFull:
                await to_processors.put(m)

    async def process() -> None:
        while True:
            m = await _take(to_processors)
            r = handle_message("default", m, None)
            assert isinstance(r, Message)
            await _put(to_batcher, r)  # type: ignore[arg-type]

    async def batcher() -> None:
        size, timeout = shape.batch_size, shape.batch_timeout
        while True:
            batch = [await to_batcher.get()]
            deadline = loop.time() + timeout
            trigger = "size"
            while len(batch) < size:
                try:
                    batch.append(to_batcher.get_nowait())
                except asyncio.QueueEmpty:
                    try:
                        async with asyncio.timeout_at(deadline):
                            batch.append(await to_batcher.get())
                    except TimeoutError:
                        trigger = "timeout"
                        break
            info = BatchInfo("default", None, None, len(batch), trigger)
            await _put(batches, (info, batch))  # type: ignore[arg-type]

    async def batch_processor() -> None:
        while True:
            info, batch = await batches.get()
            result = handle_batch("default", batch, info, None)
            assert not isinstance(result, Awaitable)
            result[0].acknowledger.ack(result, [])

    tasks = [loop.create_task(produce()), loop.create_task(batcher())]
    tasks += [loop.create_task(process()) for _ in range(shape.processors)]
    tasks += [loop.create_task(batch_processor()) for _ in range(shape.batch_processors)]
    try:

        async def run() -> None:
            await done

        return await _timed(run, n)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- ceiling ---------------------------------------------------------------------------------


async def ceiling_side(shape: Shape, n: int) -> Timing:
    loop = asyncio.get_running_loop()
    pipeline = Trivial(name="ceiling", producer={"module": "memory"})
    handle_message, handle_batch = pipeline.handle_message, pipeline.handle_batch
    done: asyncio.Future[None] = loop.create_future()
    messages = _messages(n, Counter(n, done))

    async def run() -> None:
        size = shape.batch_size
        batch: list[Message] = []
        for m in messages:
            r = handle_message("default", m, None)
            assert isinstance(r, Message)
            batch.append(r)
            if len(batch) == size:
                info = BatchInfo("default", None, None, size, "size")
                result = handle_batch("default", batch, info, None)
                assert not isinstance(result, Awaitable)
                result[0].acknowledger.ack(result, [])
                batch = []
        if batch:
            batch[0].acknowledger.ack(batch, [])
        await done

    return await _timed(run, n)


# -- driver ----------------------------------------------------------------------------------


async def _case(settings: Settings, node: Node, shape: Shape, n: int) -> None:
    say(f"pipeline: {shape.case} ({n} messages x {settings.repeats} repeats, {settings.loop})")
    sides: list[Callable[[], Awaitable[Timing]]] = [
        lambda: corral_side(node, shape, n),
        lambda: baseline_side(shape, n),
        lambda: ceiling_side(shape, n),
    ]
    warm = max(1, n // 10)
    await corral_side(node, shape, warm)
    await baseline_side(shape, warm)
    await ceiling_side(shape, warm)
    corral_runs, baseline_runs, ceiling_runs = await interleaved(sides, settings.repeats)
    if settings.verbose:
        for side, runs in (
            ("corral", corral_runs),
            ("baseline", baseline_runs),
            ("ceiling", ceiling_runs),
        ):
            say(f"  {side:8} wall {[round(t.rate) for t in runs]}")
            say(f"  {side:8} cpu  {[round(t.cpu_rate) for t in runs]}")
    value = median([t.rate for t in corral_runs])
    baseline = median([t.rate for t in baseline_runs])
    ceiling = median([t.rate for t in ceiling_runs])
    cpu_value = median([t.cpu_rate for t in corral_runs])
    cpu_baseline = median([t.cpu_rate for t in baseline_runs])
    emit(
        bench=BENCH,
        case=shape.case,
        metric="throughput",
        value=value,
        unit="messages/s",
        baseline_name="asyncio.Queue pipeline",
        baseline_value=baseline,
        loop=settings.loop,
        cpu={"value": cpu_value, "baseline": cpu_baseline, "ratio": cpu_value / cpu_baseline},
        cpu_share=median([t.cpu_share for t in corral_runs + baseline_runs]),
        ceiling={"name": "direct calls", "value": ceiling, "ratio": value / ceiling},
    )


async def run(settings: Settings) -> None:
    """Run every case on the running loop and print the results."""
    sizes = QUICK if settings.quick else FULL
    async with Node(name="bench") as node:
        for shape in SHAPES:
            await _case(settings, node, shape, sizes.messages)


def main() -> None:
    settings = parse_settings("Benchmarks of corral.pipeline against plain asyncio.")
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(run(settings))


if __name__ == "__main__":
    main()
