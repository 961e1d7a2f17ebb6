"""The Kafka producer against a real Kafka-protocol broker (Tansu, tests/servers/kafka.py):
the conformance suite, then what is Kafka's own: pausing without demand, a rebalance between
two pipeline nodes of one group, the default ``partition_by``, and its options.

The crash tests (out-of-order acks across a SIGKILL, the 100,000-message fault test) are in
test_kafka_fault.py; the pure commit rule in test_kafka_offsets.py.

Counts: ``outstanding`` is the broker's (the group's committed offsets against the offsets
the harness produced; Tansu's own end offsets are wrong after batched produces, see
tests/servers/kafka.py). ``unacked`` is the producers' own (``KafkaProducer.in_flight``):
Kafka has no broker-side count of delivered messages, a fetch position is the client's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import pytest
from conformance import FailureMode, ProducerConformance, Subject, eventually

from corral import Node
from corral.errors import StartError
from corral.pipeline import Message, Pipeline
from corral.pipeline.producers.kafka import KafkaProducer, kafka_partition
from corral.testing import Gate
from servers.kafka import KafkaProxy, KafkaServer, read_all

pytest.importorskip("aiokafka")

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

_names = itertools.count()
PARTITIONS = 3


def capturing(made: list[KafkaProducer]) -> type[KafkaProducer]:
    """A ``KafkaProducer`` subclass that records every instance the stages make."""

    class Captured(KafkaProducer):
        def __init__(self, options: object, context: Any) -> None:
            super().__init__(options, context)
            made.append(self)

    Captured.__name__ = KafkaProducer.__name__
    return Captured


class KafkaHarness:
    """A topic of ``PARTITIONS`` partitions (and a dead-letter topic) on the session's
    broker, read by the group ``<topic>-group``. The pipelines connect through the session's
    proxy (``lose_connections`` restarts it); the harness's own clients go to the broker."""

    name = "kafka"
    failure_modes: frozenset[FailureMode] = frozenset({"drop", "dead_letter"})
    redelivers_abandoned = True

    def unreachable_options(self, url_host: str, timeout: float) -> dict[str, object]:
        url = f"kafka://user:secret@{url_host}"
        return {
            "module": "kafka",
            "options": {"url": url, "topics": ["t"], "group": "g", "timeout": timeout},
        }

    async def lose_connections(self) -> bool:
        """Restart the proxy: every connection of the pipelines is cut."""
        await asyncio.to_thread(self.proxy.restart)
        return True

    def __init__(self, server: KafkaServer, proxy: KafkaProxy, *, partitions: int = PARTITIONS):
        n = next(_names)
        self.server, self.proxy = server, proxy
        self.topic = f"conformance-{n}"
        self.group = f"{self.topic}-group"
        self.dead_letter_topic = f"{self.topic}-dead"
        self.partitions = partitions
        self.ends = [0] * partitions
        self.producers: list[KafkaProducer] = []
        self._producer: AIOKafkaProducer | None = None
        self._reader: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Self:
        bootstrap = self.server.bootstrap
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(self.topic, self.partitions, 1),
                    NewTopic(self.dead_letter_topic, 1, 1),
                ]
            )
        finally:
            await admin.close()
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
        await self._producer.start()
        self._reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=self.group, enable_auto_commit=False
        )
        await self._reader.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for client in (self._reader, self._producer):
            if client is not None:
                await client.stop()
        self._producer = self._reader = None

    def producer_options(self, **options: object) -> dict[str, object]:
        return {
            "url": self.proxy.url,
            "topics": [self.topic],
            "group": self.group,
            "fetch_timeout": 0.1,
            "commit_interval": 0.02,
            # Tansu holds a join for half the session timeout, and lets a member that left
            # go only when its session expires: short sessions keep the tests quick.
            "session_timeout": 2.0,
            "heartbeat_interval": 0.2,
            **options,
        }

    def pipeline_options(self, *, on_failure: FailureMode = "drop") -> dict[str, object]:
        # ordered=False: the suite holds both processors at a gate at once, which the default
        # partition_by (one processor per Kafka partition) cannot promise; the ordered default
        # has tests of its own below.
        if on_failure == "dead_letter":
            options = self.producer_options(
                on_failure="dead_letter", dead_letter_topic=self.dead_letter_topic, ordered=False
            )
        else:
            options = self.producer_options(on_failure="commit", ordered=False)
        return {"producer": {"module": capturing(self.producers), "options": options}}

    async def publish(self, payloads: Sequence[bytes], keys: Sequence[bytes] | None = None) -> None:
        producer = self._producer
        assert producer is not None, "use the harness in `async with`"
        futures = [
            await producer.send(self.topic, p, key=None if keys is None else keys[i])
            for i, p in enumerate(payloads)
        ]
        for future in futures:
            meta = await future
            self.ends[meta.partition] = max(self.ends[meta.partition], meta.offset + 1)

    def payload(self, message: Message) -> bytes:
        assert isinstance(message.data, bytes)
        return message.data

    async def committed(self) -> list[int]:
        """The group's committed offset of each partition (0 when none)."""
        reader = self._reader
        assert reader is not None
        return [
            await reader.committed(TopicPartition(self.topic, p)) or 0
            for p in range(self.partitions)
        ]

    async def unacked(self) -> int:
        return sum(p.in_flight() for p in self.producers)

    async def outstanding(self) -> int:
        return sum(self.ends) - sum(await self.committed())

    async def dead_letters(self) -> list[bytes]:
        return [record.value for record in await read_all(self.server, self.dead_letter_topic)]


@pytest.fixture
def harness(kafka_server: KafkaServer, kafka_proxy: KafkaProxy) -> KafkaHarness:
    return KafkaHarness(kafka_server, kafka_proxy)


@pytest.mark.realtime
class TestKafkaConformance(ProducerConformance):
    pass


# -- Kafka's own ---------------------------------------------------------------------------------


def payloads(n: int, prefix: bytes = b"m") -> list[bytes]:
    return [b"%s-%d" % (prefix, i) for i in range(n)]


def subject(harness: KafkaHarness, name: str, **producer: object) -> Subject:
    return Subject(
        harness,
        name=name,
        processors={"default": {"concurrency": 1, "max_demand": 10}},
        producer={
            "module": capturing(harness.producers),
            "options": harness.producer_options(**producer),
        },
    )


async def drained(harness: KafkaHarness) -> None:
    async def done() -> bool:
        return await harness.outstanding() == 0

    await eventually(done, f"topic {harness.topic} consumed and committed")


@pytest.mark.realtime
async def test_without_demand_every_partition_is_paused_and_fetching_resumes_with_it(
    harness: KafkaHarness,
) -> None:
    async with harness, Node() as node:
        await harness.publish(payloads(100))
        pipeline = Subject(
            harness,
            name="kafka-pause",
            processors={"default": {"concurrency": 1, "max_demand": 10}},
            producer={"module": "kafka", "options": harness.producer_options()},
        )
        made = capturing(harness.producers)
        pipeline.options = dataclasses.replace(
            pipeline.options,
            producer=dataclasses.replace(pipeline.options.producer, module=made),
        )
        gate = pipeline.gate = Gate()
        await pipeline.start(node)
        (producer,) = harness.producers
        await asyncio.wait_for(gate.wait_blocked(), 30)

        async def paused() -> bool:
            return producer.paused and producer.in_flight() > 0

        await eventually(paused, "the producer paused, the processor's demand met")
        # One processor: its max_demand, plus as much buffered in the producer stage.
        assert 0 < producer.in_flight() <= 2 * 10
        gate.open()
        await drained(harness)
        await pipeline.stop()
    assert sorted(pipeline.handled) == sorted(payloads(100))


@pytest.mark.realtime
async def test_two_pipeline_nodes_share_the_group_through_a_rebalance_and_lose_nothing(
    harness: KafkaHarness,
) -> None:
    # Two nodes (two consumers of one group, as two processes would be), the second joining
    # mid-stream: the first's partitions are revoked, drained and committed, then shared.
    first_half, second_half = payloads(300, b"a"), payloads(300, b"b")
    async with harness, Node() as node_a, Node() as node_b:
        await harness.publish(first_half)
        a = subject(harness, "kafka-node-a")
        gate_a = a.gate = Gate()
        gate_a.release(60)
        await a.start(node_a)
        await asyncio.wait_for(gate_a.wait_blocked(), 30)  # 60 handled, 1 held in flight
        b = subject(harness, "kafka-node-b")
        await b.start(node_b)
        (producer_a, producer_b) = harness.producers
        gate_a.open()  # a's message in flight finishes: its revocation drains and commits it

        async def shared() -> bool:
            a_holds, b_holds = producer_a.assignment, producer_b.assignment
            return bool(a_holds and b_holds) and not a_holds & b_holds

        await eventually(shared, "the group rebalanced: both nodes hold partitions")
        await harness.publish(second_half)
        await drained(harness)
        await a.stop()
        await b.stop()
    handled = Counter(a.handled) + Counter(b.handled)
    assert set(handled) == set(first_half + second_half)  # every message at least once
    assert b.handled and a.handled
    assert producer_a.in_flight() == producer_b.in_flight() == 0


@pytest.mark.realtime
async def test_a_revoked_partition_is_released_after_revoke_timeout_and_read_again_elsewhere(
    kafka_server: KafkaServer, kafka_proxy: KafkaProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # Node a holds a message at its gate for good; node b joins. a's revocation waits
    # revoke_timeout (0.3 s) for it, gives up (logged), commits what it can and lets the
    # partitions go: nothing is lost, the held message is read again from the commit.
    harness = KafkaHarness(kafka_server, kafka_proxy, partitions=2)
    all_payloads = payloads(40)
    async with harness, Node() as node_a, Node() as node_b:
        await harness.publish(all_payloads, [b"k%d" % (i % 4) for i in range(40)])
        a = subject(harness, "kafka-revoke-a", revoke_timeout=0.3)
        gate = a.gate = Gate()
        await a.start(node_a)
        await asyncio.wait_for(gate.wait_blocked(), 30)
        b = subject(harness, "kafka-revoke-b", revoke_timeout=0.3)
        with caplog.at_level(logging.WARNING, logger="corral.pipeline"):
            await b.start(node_b)

            async def gave_up() -> bool:
                return "still in flight after revoke_timeout" in caplog.text

            await eventually(gave_up, "node a gave up waiting for its held message")
            gate.open()
            await drained(harness)
        await a.stop()
        await b.stop()
    handled = Counter(a.handled) + Counter(b.handled)
    assert set(handled) == set(all_payloads)
    assert handled[a.handled[0]] >= 2  # the held message: its ack was ignored, read again


@pytest.mark.realtime
async def test_the_default_partition_by_keeps_each_partitions_messages_in_offset_order(
    harness: KafkaHarness,
) -> None:
    class Ordered(Subject):
        def __init__(self, harness: KafkaHarness, **options: object) -> None:
            super().__init__(harness, **options)
            self.seen: list[tuple[int, int]] = []

        async def handle_message(
            self, processor: str, message: Message, context: object
        ) -> Message:
            meta: Any = message.metadata
            self.seen.append((meta["partition"], meta["offset"]))
            await asyncio.sleep(0)  # let the other processors interleave
            return await super().handle_message(processor, message, context)

    keys = [b"k%d" % (i % 7) for i in range(300)]
    async with harness, Node() as node:
        await harness.publish(payloads(300), keys)
        pipeline = Ordered(
            harness,
            name="kafka-order",
            processors={"default": {"concurrency": 4, "max_demand": 5}},
            producer={"module": "kafka", "options": harness.producer_options()},
        )
        assert pipeline.options.partition_by is kafka_partition
        await pipeline.start(node)
        await drained(harness)
        await pipeline.stop()
    for p in range(PARTITIONS):
        offsets = [o for q, o in pipeline.seen if q == p]
        assert offsets == sorted(offsets) and len(offsets) == harness.ends[p]


@pytest.mark.realtime
async def test_a_missing_topic_fails_the_start_naming_it(harness: KafkaHarness) -> None:
    async with harness, Node() as node:
        pipeline = Pipeline(
            name="kafka-missing",
            producer={
                "module": "kafka",
                "options": {**harness.producer_options(), "topics": ["no-such-topic"]},
            },
        )
        with pytest.raises(StartError) as info:
            await pipeline.start(node)
    assert "topics ['no-such-topic'] do not exist on kafka://127.0.0.1:" in str(info.value)
    assert "create them first" in str(info.value)


# -- options -------------------------------------------------------------------------------------


def options_error(**options: object) -> str:
    with pytest.raises(ValueError) as info:
        Pipeline(name="p", producer={"module": "kafka", "options": options})
    return str(info.value)


def test_options_name_the_option_and_the_rule() -> None:
    prefix = "invalid options for pipeline: producer.options."
    base: dict[str, object] = {"topics": ["t"], "group": "g"}
    topics_rule = "a non-empty list of distinct topic names ([A-Za-z0-9._-], at most 249)"
    assert options_error(group="g") == f"{prefix}topics is required ({topics_rule})"
    assert options_error(topics=[], group="g") == f"{prefix}topics must be {topics_rule}; got []"
    assert options_error(topics=["a b"], group="g") == (
        f"{prefix}topics must be {topics_rule}; got ['a b']"
    )
    assert options_error(topics=["t"]) == f"{prefix}group is required (a non-empty str)"
    assert options_error(**base, url="redis://x") == (
        f"{prefix}url must be a kafka://[user:password@]host:port[,host:port...] URL; "
        "got 'redis://x'"
    )
    assert options_error(**base, on_failure="nak") == (
        f"{prefix}on_failure must be 'commit' or 'dead_letter'; got 'nak'"
    )
    assert options_error(**base, max_batch=0) == f"{prefix}max_batch must be an int >= 1; got 0"
    assert options_error(**base, commit_interval=0) == (
        f"{prefix}commit_interval must be a number > 0; got 0"
    )
    assert options_error(**base, on_failure="dead_letter") == (
        "invalid options for pipeline: dead_letter_topic is required when on_failure is "
        "'dead_letter'"
    )
    assert options_error(**base, dead_letter_topic="d") == (
        "invalid options for pipeline: dead_letter_topic is only used when on_failure is "
        "'dead_letter'; on_failure is 'commit'"
    )
    assert options_error(**base, heartbeat_interval=10.0) == (
        "invalid options for pipeline: heartbeat_interval must be below session_timeout (10); "
        "got 10"
    )
    assert options_error(**base, topic="t") == (
        "invalid options for pipeline: unknown option 'producer.options.topic'; valid "
        "options: url, topics, group, client_id, ordered, auto_offset_reset, on_failure, "
        "dead_letter_topic, max_batch, fetch_timeout, commit_interval, revoke_timeout, "
        "max_uncommitted, session_timeout, heartbeat_interval, timeout"
    )


def test_valid_options_are_kept_and_partition_by_defaults_to_the_kafka_partition() -> None:
    pipeline = Pipeline(
        name="p",
        producer={
            "module": "kafka",
            "options": {
                "url": "kafka://a:9092,b:9092",
                "topics": ["t1", "t2"],
                "group": "g",
                "on_failure": "dead_letter",
                "dead_letter_topic": "t-dead",
            },
        },
    )
    options = pipeline.options.producer.options
    assert (options.url, options.topics, options.dead_letter_topic) == (
        "kafka://a:9092,b:9092",
        ("t1", "t2"),
        "t-dead",
    )
    assert pipeline.options.partition_by is kafka_partition

    def mine(message: Message) -> int:
        return 0

    chosen = Pipeline(
        name="p",
        partition_by=mine,
        producer={"module": "kafka", "options": {"topics": ["t"], "group": "g"}},
    )
    assert chosen.options.partition_by is mine


def test_kafka_partition_refuses_a_message_of_another_producer() -> None:
    with pytest.raises(TypeError) as info:
        kafka_partition(Message(b"x", ack_data=(b"1-0", {})))
    assert str(info.value) == (
        "kafka_partition: the message did not come from the Kafka producer; "
        "ack_data is (b'1-0', {})"
    )
