"""The Kafka producer: a consumer group over one or more topics, offsets committed as
messages are acknowledged.

Select it with::

    producer={
        "module": "kafka",
        "options": {"url": "kafka://localhost:9092", "topics": ["events"], "group": "features"},
    }

This is the one module that imports ``aiokafka`` (``pip install 'corral[kafka]'``), lazily,
when a producer stage starts (or a ``KafkaWriter`` is entered).

How it maps Broadway's contract onto Kafka:

- **start** (``init``): one ``AIOKafkaConsumer`` per producer stage joins ``group``,
  subscribed to ``topics`` (which must exist), auto-commit off. Each stage is one member of
  the group, so ``producer.concurrency`` stages (and other processes with the same ``group``)
  share the partitions.
- **demand**: a fetch task the producer owns calls ``getmany(max_records=min(owed,
  max_batch))`` while the stage owes messages and emits what it got. When nothing is owed it
  **pauses** every assigned partition (``consumer.pause``), so no fetch request goes to the
  broker until demand comes back (records aiokafka had already fetched stay buffered and are
  used on resume). A partition with ``max_uncommitted`` offsets between its commit point and
  its newest fetched message (one slow message holds the commit back) is paused on its own
  until that drops to half.
- **ack = commit**: an acknowledged message marks its offset done; each partition commits
  **the lowest offset not acknowledged yet** (``corral.pipeline.producers.offsets``), so a
  message acknowledged out of order never lets an earlier unacknowledged one be skipped
  after a crash. Commits go out from a task of their own, at most one every
  ``commit_interval`` seconds, each covering every partition that moved; and at every
  rebalance and stop.
- **failures** (``on_failure``): ``"commit"`` counts a failed message as done (dropped; the
  pipeline's ``handle_failed`` and ``dead_letter`` callable still see it first);
  ``"dead_letter"`` produces it to ``dead_letter_topic`` (same key and value, its headers
  plus ``dead_letter_reason``, ``dead_letter_topic``, ``dead_letter_partition``,
  ``dead_letter_offset`` and ``attempts``), waits for the broker's ack, then counts it done.
  Kafka cannot deliver one message again without rewinding its whole partition, so there is
  no "redeliver" mode.
- **partition_by** defaults to the Kafka partition (``kafka_partition``): messages of one
  partition go to one processor and one batch processor, in offset order, so per-key order
  holds (and at most as many processors are busy as there are partitions; a processor held
  up holds its partitions up). A ``partition_by`` option given to the pipeline replaces it;
  ``ordered=False`` drops the default (any processor takes any message).
- **rebalance**: when partitions are revoked (another member joined or left), the producer
  stops emitting theirs, waits for their messages in flight to be acknowledged (at most
  ``revoke_timeout`` seconds), commits them, and only then lets them go. Messages still in
  flight after ``revoke_timeout`` are given up: their acks are ignored and the partition's
  new owner reads them again from the last commit (at-least-once). The group waits for the
  drain (Kafka's rebalance timeout, aiokafka's ``max_poll_interval_ms``, is 300 s).
- **drain** (``prepare_for_draining``): the fetch task stops (the fetch in progress ends
  within ``fetch_timeout``) and the partitions are paused; messages in flight finish and are
  committed; ``terminate`` commits what is left and leaves the group.

Each message's ``data`` is the record's value (bytes, or None); ``metadata`` is
``{"topic", "partition", "offset", "key", "timestamp", "headers"}``; ``ack_data`` is the
partition's ``OffsetTracker``, the ``ConsumerRecord`` and the partition's key (what
``kafka_partition`` returns).

The outage rule of every broker producer (``corral.pipeline.producers._broker``): a stage
connects within ``timeout`` seconds (trying every 0.25 s); a connection to the broker that
breaks or times out, a commit that fails or takes longer than ``timeout``, a fetch error or a
dead-letter produce that fails ends the stage with ``ConnectionError``; its supervisor
restarts it, and the new member reads again from the last commit. aiokafka itself would ride
out an outage in place: it has no public callback for a lost connection, so the producer
wraps its client's ``_on_connection_closed`` (aiokafka 0.10 to 0.14) to hear of one.

Delivery is at-least-once: after a crash or a rebalance, everything from a partition's
lowest unacknowledged offset on is delivered again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast
from urllib.parse import unquote, urlsplit

from corral._extras import require
from corral._options import Options, is_int, is_number, one_of, option
from corral.pipeline.message import Message
from corral.pipeline.producer import Producer, ProducerContext
from corral.pipeline.producers._broker import BrokerStage, Demand, connect_with_retry, redact
from corral.pipeline.producers.offsets import OffsetTracker
from corral.pipeline.producers.stopping import call_within, check_cancelled, stop_task

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

    from corral.runtime import ExitReason

__all__ = [
    "PRODUCER",
    "KafkaAcknowledger",
    "KafkaOptions",
    "KafkaProducer",
    "KafkaWriter",
    "kafka_partition",
    "parse_url",
]

logger = logging.getLogger("corral.pipeline")

OnFailure = Literal["commit", "dead_letter"]

_URL = re.compile(r"^kafka://([^/@]+@)?[^/@,\s]+(,[^/@,\s]+)*/?$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_FINAL_STEP: Final = 2.0
"""Seconds the final commit and the leave-group of ``terminate`` may each take (a stage's
shutdown is 5 s)."""


def parse_url(url: str) -> tuple[list[str], str | None, str | None]:
    """``kafka://[user:password@]host:port[,host:port...]`` -> (bootstrap servers, user,
    password). ``ValueError`` for anything else."""
    if type(url) is not str or _URL.match(url) is None:
        raise ValueError(f"not a kafka://[user:password@]host:port[,host:port...] URL: {url!r}")
    parts = urlsplit(url)
    hosts = parts.netloc.rsplit("@", 1)[-1]
    user = None if parts.username is None else unquote(parts.username)
    password = None if parts.password is None else unquote(parts.password)
    return hosts.split(","), user, password


def _client_options(url: str) -> dict[str, Any]:
    """aiokafka keyword arguments for ``url``: its bootstrap servers, and SASL/PLAIN when
    it carries credentials."""
    servers, user, password = parse_url(url)
    options: dict[str, Any] = {"bootstrap_servers": servers}
    if user is not None:
        options.update(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_plain_username=user,
            sasl_plain_password=password or "",
        )
    return options


def _is_topics(v: object) -> bool:
    return (
        isinstance(v, list | tuple)
        and len(v) > 0
        and all(type(t) is str and _TOPIC.match(t) is not None for t in v)
        and len(set(v)) == len(v)
    )


def _is_topic_or_none(v: object) -> bool:
    return v is None or (type(v) is str and _TOPIC.match(v) is not None)


def _is_name(v: object) -> bool:
    return type(v) is str and v != ""


@dataclass(frozen=True, kw_only=True)
class KafkaOptions(Options):
    """``producer.options`` of the Kafka producer."""

    _what = "pipeline"

    url: str = option(
        "kafka://localhost:9092",
        doc="The bootstrap brokers: kafka://[user:password@]host:port[,host:port...]; "
        "credentials mean SASL/PLAIN.",
        rule="a kafka://[user:password@]host:port[,host:port...] URL",
        check=lambda v: type(v) is str and _URL.match(v) is not None,
    )
    topics: Sequence[str] = option(
        None,
        doc="The topics the group reads (required); they must exist.",
        rule="a non-empty list of distinct topic names ([A-Za-z0-9._-], at most 249)",
        check=_is_topics,
    )
    group: str = option(
        None,
        doc="The consumer group (required): its members share the partitions, and its "
        "committed offsets are where a restart resumes.",
        rule="a non-empty str",
        check=_is_name,
    )
    client_id: str | None = option(
        None,
        doc="The client id the broker sees; default 'corral-<pipeline>-<producer index>'.",
        rule="None or a non-empty str",
        check=lambda v: v is None or _is_name(v),
    )
    ordered: bool = option(
        True,
        doc="True: the pipeline's partition_by defaults to the Kafka partition (each "
        "partition's messages to one processor, in offset order; as many busy processors as "
        "partitions). False: no default, any processor takes any message.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    auto_offset_reset: str = option(
        "earliest",
        doc="Where a partition without a committed offset starts: 'earliest' (the whole "
        "partition) or 'latest' (only what arrives from now on).",
        rule="'earliest' or 'latest'",
        check=one_of("earliest", "latest"),
    )
    on_failure: OnFailure = option(
        "commit",
        doc="What a failed message becomes: 'commit' (done, dropped) or 'dead_letter' "
        "(produced to dead_letter_topic, then done).",
        rule="'commit' or 'dead_letter'",
        check=one_of("commit", "dead_letter"),
    )
    dead_letter_topic: str | None = option(
        None,
        doc="The topic failed messages go to with on_failure='dead_letter' (it must exist).",
        rule="None or a topic name",
        check=_is_topic_or_none,
    )
    max_batch: int = option(
        500,
        doc="The most records one fetch hands over (each asks for the demand owed, up to this).",
        rule="an int >= 1",
        check=is_int(1),
    )
    fetch_timeout: float = option(
        0.5,
        doc="Seconds one fetch waits for records; also the longest a drain waits for the "
        "fetch in progress.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    commit_interval: float = option(
        1.0,
        doc="Seconds between two commits of a stage: acks in between are committed together "
        "(what a crash delivers again, at most).",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    revoke_timeout: float = option(
        5.0,
        doc="Seconds a revoked partition waits for its messages in flight before it is "
        "committed and released; those still in flight then are delivered again to its "
        "new owner.",
        rule="a number >= 0",
        check=is_number(0),
    )
    max_uncommitted: int = option(
        100_000,
        doc="The most offsets of one partition between its commit point and its newest "
        "fetched message; beyond, that partition is paused until half are committed.",
        rule="an int >= 1",
        check=is_int(1),
    )
    session_timeout: float = option(
        10.0,
        doc="Seconds the group waits for a silent member (a crashed process) before it "
        "gives its partitions to the others.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    heartbeat_interval: float = option(
        3.0,
        doc="Seconds between a member's heartbeats; below session_timeout / 3.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    timeout: float = option(
        10.0,
        doc="Seconds a stage may take to connect (it tries every 0.25 s, so a stage restarted "
        "while the broker restarts waits for it), and each commit or dead-letter produce.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "topics", tuple(self.topics))
        problem = _cross_check(self)
        if problem is not None:
            raise ValueError(f"invalid options for {self._what}: {problem}")


def _cross_check(o: KafkaOptions) -> str | None:
    if o.on_failure == "dead_letter" and o.dead_letter_topic is None:
        return "dead_letter_topic is required when on_failure is 'dead_letter'"
    if o.on_failure != "dead_letter" and o.dead_letter_topic is not None:
        return (
            "dead_letter_topic is only used when on_failure is 'dead_letter'; "
            f"on_failure is {o.on_failure!r}"
        )
    if o.dead_letter_topic in o.topics:
        return f"dead_letter_topic must not be one of topics; got {o.dead_letter_topic!r}"
    if o.heartbeat_interval >= o.session_timeout:
        return (
            f"heartbeat_interval must be below session_timeout ({o.session_timeout:g}); "
            f"got {o.heartbeat_interval:g}"
        )
    return None


@functools.lru_cache(maxsize=4096)
def _topic_hash(topic: str) -> int:
    return zlib.crc32(topic.encode())


def kafka_partition(message: Message) -> int:
    """The Kafka producer's default ``partition_by``: one int per (topic, partition) of the
    record the message came from, so a partition's messages keep their order."""
    try:
        key: int = message.ack_data[2]  # type: ignore[index]
    except (TypeError, IndexError, KeyError):
        raise TypeError(
            f"kafka_partition: the message did not come from the Kafka producer; "
            f"ack_data is {message.ack_data!r}"
        ) from None
    return key


def _describe(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


class KafkaAcknowledger:
    """Marks the offsets of one stage's messages done; the stage's commit task commits
    them. With on_failure='dead_letter' it first produces the failed ones to the
    dead-letter topic (and waits for the broker): if that fails, the stage ends with
    ``ConnectionError`` and those messages are not marked (delivered again after the
    restart). Acks of a revoked partition's messages are ignored."""

    __slots__ = ("_producer",)

    def __init__(self, producer: KafkaProducer) -> None:
        self._producer = producer

    def __repr__(self) -> str:
        return f"<KafkaAcknowledger {self._producer.where}>"

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> Any:
        producer = self._producer
        if failed and producer.dead_letters:
            return self._dead_letter_then_ack(successful, failed)
        _settle(successful)
        _settle(failed)
        producer.acked()
        return None

    async def _dead_letter_then_ack(
        self, successful: Sequence[Message], failed: Sequence[Message]
    ) -> None:
        producer = self._producer
        _settle(successful)
        if await producer.dead_letter(failed):
            _settle(failed)
        producer.acked()


def _settle(messages: Sequence[Message]) -> None:
    for m in messages:
        tracker: OffsetTracker
        record: Any
        tracker, record, _ = m.ack_data  # type: ignore[misc]
        if not tracker.revoked:
            tracker.acked(record.offset)


class KafkaProducer(Producer):
    """Reads topics as a member of a consumer group; see the module docstring."""

    options_type = KafkaOptions

    def __init__(self, options: object, context: ProducerContext) -> None:
        super().__init__(options, context)
        if not isinstance(options, KafkaOptions):
            raise TypeError(f"KafkaProducer: options must be KafkaOptions; got {options!r}")
        self._opts = options
        self.where = (
            f"kafka producer (pipeline '{context.pipeline}' {context.index}, "
            f"group '{options.group}')"
        )
        self.dead_letters = options.on_failure == "dead_letter"
        self._demand = Demand()
        self._stage = BrokerStage(
            self.where, "the group delivers again from the last committed offsets"
        )
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._acknowledger = KafkaAcknowledger(self)
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._held: set[TopicPartition] = set()  # paused for max_uncommitted
        self._paused = True  # every partition paused (no demand owed)
        self._closing = False
        self._fetcher: asyncio.Task[None] | None = None
        self._committer: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()
        self._progress = asyncio.Event()  # an ack arrived (revocations wait on it)
        self._commit_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<KafkaProducer {self.where}>"

    @classmethod
    def default_partition_by(cls, options: object) -> Callable[[Message], int] | None:
        ordered = not isinstance(options, KafkaOptions) or options.ordered
        return kafka_partition if ordered else None

    # -- hooks -------------------------------------------------------------------------------

    async def init(self) -> None:
        """Connect and join the group (the broker tried every 0.25 s for up to
        ``timeout`` seconds), check the topics exist, start the fetch and commit tasks."""
        require("aiokafka", extra="kafka", by=self.where)
        from aiokafka.errors import KafkaError

        opts = self._opts
        self._stage.bind()
        self._consumer = await connect_with_retry(
            self._connect,
            timeout=opts.timeout,
            retry_on=(KafkaError, OSError),
            where=self.where,
            url=opts.url,
        )
        try:
            await self._check_topics(self._consumer)
            if self.dead_letters:
                self._dlq = await self._start_dead_letter_producer()
        except BaseException:
            await self.terminate("init failed")
            raise
        loop = asyncio.get_running_loop()
        self._fetcher = loop.create_task(self._fetch_loop(), name=f"{self.where} fetch")
        self._committer = loop.create_task(self._commit_loop(), name=f"{self.where} commit")

    def handle_demand(self, demand: int) -> list[Message]:
        """Owe ``demand`` more and wake the fetch task; never blocks, returns nothing."""
        self._demand.add(demand)
        return []

    async def prepare_for_draining(self) -> None:
        """Stop fetching (the fetch in progress ends within ``fetch_timeout``) and pause
        every partition; messages in flight are still committed as they are acknowledged."""
        await self._stop_fetching(grace=self._opts.fetch_timeout)
        self._pause_all()

    async def terminate(self, reason: ExitReason) -> None:
        """Stop fetching and committing, commit what was acknowledged (unless the broker is
        gone), leave the group. Each broker step is bounded (2 s)."""
        self._stage.closing = True
        self._closing = True
        await self._stop_fetching()
        committer, self._committer = self._committer, None
        if committer is not None:
            await stop_task(committer, where=self.where)
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not isinstance(reason, ConnectionError):
            await self._commit(None, consumer=consumer, timeout=_FINAL_STEP)
        for tracker in self._trackers.values():
            tracker.revoked = True
        self._trackers.clear()
        for client in (self._dlq, consumer):
            if client is not None:
                try:
                    await call_within(client.stop(), timeout=_FINAL_STEP, where=self.where)
                except Exception as exc:
                    logger.warning("%s: closing a client failed: %r", self.where, exc)
        self._dlq = None

    # -- what tests and statistics read ------------------------------------------------------

    def in_flight(self) -> int:
        """Messages this stage emitted and that are not acknowledged yet, over the
        partitions it holds (Kafka itself has no such count: fetch positions are the
        client's)."""
        return sum(t.in_flight for t in self._trackers.values())

    @property
    def assignment(self) -> frozenset[tuple[str, int]]:
        """The (topic, partition) pairs this stage holds now."""
        return frozenset((tp.topic, tp.partition) for tp in self._trackers)

    @property
    def paused(self) -> bool:
        """Whether every partition is paused because the stage owes no demand."""
        return self._paused

    # -- what the acknowledger calls -------------------------------------------------------

    def acked(self) -> None:
        """Offsets were marked done: the commit task commits them at its next turn."""
        self._dirty.set()
        self._progress.set()

    async def dead_letter(self, failed: Sequence[Message]) -> bool:
        """Produce ``failed`` to the dead-letter topic and wait for the broker's acks
        (``timeout``); False (and the stage ends) if that fails."""
        producer = self._dlq
        topic = self._opts.dead_letter_topic
        assert topic is not None
        if producer is None:
            return False
        try:
            futures = []
            for m in failed:
                record = cast("ConsumerRecord[Any, Any]", m.ack_data[1])  # type: ignore[index]
                failure = m.failure
                headers = [
                    *record.headers,
                    ("dead_letter_reason", _describe(failure and failure.reason).encode()),
                    ("dead_letter_topic", record.topic.encode()),
                    ("dead_letter_partition", b"%d" % record.partition),
                    ("dead_letter_offset", b"%d" % record.offset),
                    ("attempts", b"%d" % m.attempt),
                ]
                futures.append(
                    await producer.send(topic, value=record.value, key=record.key, headers=headers)
                )
            await call_within(_all(futures), timeout=self._opts.timeout, where=self.where)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stage.fail(f"producing to dead_letter_topic '{topic}' failed: {_describe(exc)}")
            return False
        return True

    # -- connecting --------------------------------------------------------------------------

    async def _connect(self) -> AIOKafkaConsumer:
        from aiokafka import AIOKafkaConsumer

        opts = self._opts
        consumer = AIOKafkaConsumer(
            **_client_options(opts.url),
            group_id=opts.group,
            client_id=opts.client_id or f"corral-{self.context.pipeline}-{self.context.index}",
            enable_auto_commit=False,
            auto_offset_reset=opts.auto_offset_reset,
            session_timeout_ms=round(opts.session_timeout * 1000),
            heartbeat_interval_ms=round(opts.heartbeat_interval * 1000),
            fetch_max_wait_ms=min(500, round(opts.fetch_timeout * 1000)),
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        # Subscribed after start, so that start does not wait for the group's assignment
        # (the fetch task does): joining may take a rebalance.
        self._consumer = consumer  # the rebalance listener may run from now on
        consumer.subscribe(list(opts.topics), listener=self._listener())
        self._watch_connections(consumer)
        return consumer

    def _watch_connections(self, consumer: AIOKafkaConsumer) -> None:
        """End the stage when a connection to the broker breaks or times out (see the
        module docstring: aiokafka has no public callback for it)."""
        from aiokafka.conn import CloseReason

        client: Any = getattr(consumer, "_client", None)
        original = getattr(client, "_on_connection_closed", None)
        if original is None:
            logger.warning(
                "%s: this aiokafka has no _on_connection_closed; a lost connection is noticed "
                "only when a commit fails",
                self.where,
            )
            return
        lost = {CloseReason.CONNECTION_BROKEN, CloseReason.CONNECTION_TIMEOUT}
        stage = self._stage
        url = redact(self._opts.url)

        def closed(conn: object, reason: object) -> None:
            original(conn, reason)
            if reason in lost:
                stage.fail(f"a connection to the broker was lost ({reason!r}, {url})")

        client._on_connection_closed = closed

    async def _check_topics(self, consumer: AIOKafkaConsumer) -> None:
        opts = self._opts
        wanted = [*opts.topics, *([opts.dead_letter_topic] if opts.dead_letter_topic else [])]
        existing = await call_within(consumer.topics(), timeout=opts.timeout, where=self.where)
        missing = [t for t in wanted if t not in existing]
        if missing:
            raise ValueError(
                f"{self.where}: topics {missing} do not exist on {redact(opts.url)}; "
                "create them first"
            )

    async def _start_dead_letter_producer(self) -> AIOKafkaProducer:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            **_client_options(self._opts.url),
            client_id=f"corral-{self.context.pipeline}-{self.context.index}-dead-letter",
            acks="all",
        )
        try:
            await call_within(producer.start(), timeout=self._opts.timeout, where=self.where)
        except BaseException:
            await producer.stop()
            raise
        return producer

    def _listener(self) -> Any:
        from aiokafka import ConsumerRebalanceListener

        owner = self

        class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
                await owner._revoke(set(revoked))

            async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
                owner._assign(set(assigned))

        return Rebalance()

    # -- rebalancing (in aiokafka's coordinator task) ---------------------------------------

    def _assign(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._trackers:
                self._trackers[tp] = OffsetTracker()
        if assigned and self._paused and self._consumer is not None:
            self._consumer.pause(*assigned)
        logger.debug("%s: assigned %s", self.where, sorted(map(str, assigned)))

    async def _revoke(self, revoked: set[TopicPartition]) -> None:
        """Wait (``revoke_timeout``) for the revoked partitions' messages in flight, commit
        them, forget them. Nothing of theirs is emitted from now on: aiokafka's fetch returns
        no records while a rebalance goes on."""
        trackers = {tp: t for tp, t in self._trackers.items() if tp in revoked}
        if not trackers:
            return
        if not self._closing:
            await self._wait_acked(trackers.values())
        await self._commit(set(trackers))
        late = sum(t.in_flight for t in trackers.values())
        if late:
            logger.warning(
                "%s: %d messages of revoked partitions were still in flight after "
                "revoke_timeout (%g s); their new owner reads them again",
                self.where,
                late,
                self._opts.revoke_timeout,
            )
        for tp, tracker in trackers.items():
            tracker.revoked = True
            del self._trackers[tp]
            self._held.discard(tp)

    async def _wait_acked(self, trackers: Iterable[OffsetTracker]) -> None:
        waiting = list(trackers)
        try:
            async with asyncio.timeout(self._opts.revoke_timeout):
                while any(t.in_flight for t in waiting):
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            pass

    # -- the fetch task ---------------------------------------------------------------------

    async def _stop_fetching(self, grace: float = 0.0) -> None:
        self._demand.stop()
        task, self._fetcher = self._fetcher, None
        if task is not None:
            await stop_task(task, where=self.where, grace=grace)

    def _pause_all(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.pause(*consumer.assignment())
        self._paused = True

    def _resume(self, consumer: AIOKafkaConsumer) -> None:
        held = self._held
        if held:
            half = self._opts.max_uncommitted // 2
            for tp in list(held):
                tracker = self._trackers.get(tp)
                if tracker is None or tracker.uncommitted <= half:
                    held.discard(tp)
                    if tracker is not None and not self._paused:
                        consumer.resume(tp)
        if self._paused:
            consumer.resume(*(tp for tp in consumer.assignment() if tp not in held))
            self._paused = False

    async def _fetch_loop(self) -> None:
        """Fetch what the stage owes and emit it; pause every partition while it owes
        nothing. A fetch that fails ends the stage (the outage rule)."""
        from aiokafka.errors import KafkaError

        consumer = self._consumer
        assert consumer is not None
        demand = self._demand
        opts = self._opts
        timeout_ms = round(opts.fetch_timeout * 1000)
        try:
            while (owed := await demand.wanted()) > 0:
                self._resume(consumer)
                batch = await consumer.getmany(
                    timeout_ms=timeout_ms, max_records=min(owed, opts.max_batch)
                )
                check_cancelled()
                if demand.stopping or not self.context.alive:
                    return  # not emitted, so never committed: read again after a restart
                if batch:
                    self._emit(consumer, batch)
                if demand.owed <= 0:
                    self._pause_all()
        except (KafkaError, OSError) as exc:
            self._stage.fail(f"a fetch failed: {_describe(exc)} ({redact(opts.url)})")

    def _emit(
        self,
        consumer: AIOKafkaConsumer,
        batch: Mapping[TopicPartition, list[ConsumerRecord[Any, Any]]],
    ) -> None:
        acknowledger = self._acknowledger
        limit = self._opts.max_uncommitted
        messages: list[Message] = []
        append = messages.append
        for tp, records in batch.items():
            tracker = self._trackers.get(tp)
            if tracker is None:  # not ours any more; the position is aiokafka's to reset
                continue
            key = _topic_hash(tp.topic) + tp.partition
            emitted = tracker.emitted
            for record in records:
                emitted(record.offset)
                metadata = {
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "key": record.key,
                    "timestamp": record.timestamp,
                    "headers": record.headers,
                }
                append(Message(record.value, metadata, acknowledger, (tracker, record, key)))
            if tracker.uncommitted >= limit and tp not in self._held:
                self._held.add(tp)
                consumer.pause(tp)
        if messages:
            self._demand.emitted(len(messages))
            self.context.emit(messages)

    # -- commits ------------------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        """Commit the partitions whose commit point moved, at most once every
        ``commit_interval`` seconds (cadence, not a wait for something)."""
        interval = self._opts.commit_interval
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            await self._commit(None)
            await asyncio.sleep(interval)

    async def _commit(
        self,
        partitions: set[TopicPartition] | None,
        *,
        consumer: AIOKafkaConsumer | None = None,
        timeout: float | None = None,
    ) -> None:
        """Commit the committable offsets of ``partitions`` (None: all) that moved. A
        rebalance that took them first is logged; a broker that fails or does not answer
        within ``timeout`` ends the stage."""
        from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

        consumer = consumer or self._consumer
        if consumer is None:
            return
        async with self._commit_lock:
            moved = {
                tp: t
                for tp, t in self._trackers.items()
                if t.dirty and (partitions is None or tp in partitions)
            }
            offsets = {tp: t.committable for tp, t in moved.items()}
            if not offsets:
                return
            try:
                await call_within(
                    consumer.commit(offsets),
                    timeout=self._opts.timeout if timeout is None else timeout,
                    where=self.where,
                )
            except (CommitFailedError, IllegalStateError) as exc:
                logger.warning(
                    "%s: a commit lost to a rebalance (%s); the new owners read from the "
                    "last commit",
                    self.where,
                    _describe(exc),
                )
                return
            except (KafkaError, TimeoutError, OSError) as exc:
                self._stage.fail(f"a commit failed: {_describe(exc)} ({redact(self._opts.url)})")
                return
            for tracker, offset in zip(moved.values(), offsets.values(), strict=True):
                tracker.committed = offset


async def _all(futures: Sequence[asyncio.Future[Any]]) -> None:
    for future in futures:
        await future


class KafkaWriter:
    """The other end of a topic, for the code that feeds a Kafka producer's pipeline (a
    demo, a test, a bridge): ``async with KafkaWriter(url, "events", partitions=3) as w:
    await w.send([b"...", ...])``.

    On entry it connects and creates the topic (``partitions``) when it is missing;
    ``send`` produces values (with optional keys) and waits for the broker's acks;
    ``delete_topic`` removes the topic. Not a producer (it imports aiokafka, as this module does).
    """

    def __init__(self, url: str, topic: str, *, partitions: int = 1) -> None:
        parse_url(url)
        if not _is_topic_or_none(topic) or topic is None:
            raise ValueError(f"KafkaWriter: topic must be a topic name; got {topic!r}")
        if type(partitions) is not int or partitions < 1:
            raise ValueError(f"KafkaWriter: partitions must be an int >= 1; got {partitions!r}")
        self.url, self.topic, self.partitions = url, topic, partitions
        self._producer: AIOKafkaProducer | None = None

    async def __aenter__(self) -> KafkaWriter:
        require("aiokafka", extra="kafka", by="corral's KafkaWriter")
        from aiokafka import AIOKafkaProducer

        try:
            await self.create_topic()
            producer = AIOKafkaProducer(**_client_options(self.url), linger_ms=5)
            try:
                await producer.start()
            except BaseException:
                await producer.stop()
                raise
        except Exception as exc:
            raise ConnectionError(f"KafkaWriter: cannot reach {redact(self.url)}: {exc}") from exc
        self._producer = producer
        return self

    async def __aexit__(self, *exc: object) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def create_topic(self) -> None:
        """Create the topic with ``partitions`` partitions, unless it exists."""
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(**_client_options(self.url))
        await admin.start()
        try:
            if self.topic not in await admin.list_topics():
                await admin.create_topics([NewTopic(self.topic, self.partitions, 1)])
        finally:
            await admin.close()

    async def delete_topic(self) -> None:
        """Delete the topic (and what it holds)."""
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(**_client_options(self.url))
        await admin.start()
        try:
            await admin.delete_topics([self.topic])
        finally:
            await admin.close()

    async def send(
        self, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> list[tuple[int, int]]:
        """Produce ``values`` (``keys[i]`` picks the partition by hash; None: round robin)
        and wait for the broker; return each record's (partition, offset)."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("KafkaWriter.send: use the writer in `async with` first")
        futures = []
        for i, value in enumerate(values):
            key = None if keys is None else keys[i]
            futures.append(await producer.send(self.topic, value=value, key=key))
        out = []
        for future in futures:
            meta = await future
            out.append((meta.partition, meta.offset))
        check_cancelled()
        return out


PRODUCER: Final = KafkaProducer
