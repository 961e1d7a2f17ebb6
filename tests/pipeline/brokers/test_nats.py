"""The NATS JetStream producer against a real server (tests/servers/nats.py): the conformance
suite, then what is JetStream's own: nak with max_deliver and a delay, term, a durable
consumer that resumes after the server restarts, and its options.

Counts are the server's (consumer info: ``num_pending`` not delivered yet,
``num_ack_pending`` delivered and not acknowledged). What the server decided about one
message is read from its advisories (``$JS.EVENT.ADVISORY.CONSUMER.*``), not waited for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import logging
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import pytest
from conformance import FailureMode, ProducerConformance, Subject, eventually

from corral import Node
from corral.errors import StartError
from corral.pipeline import Message, Pipeline
from corral.pipeline.producers.nats import NatsProducer
from corral.testing import Gate
from servers.nats import NatsServer

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.subscription import Subscription
    from nats.js.client import JetStreamContext

pytest.importorskip("nats")

MODULE = "nats"
DURABLE = "corral"
_streams = itertools.count()


class NatsHarness:
    """One stream (``corral_<n>``, subject ``corral.<n>``) and its durable consumer
    ``corral``, made on entry and deleted on exit; ``ack_wait`` is long (30 s by default), so
    nothing comes back unless the producer naks it."""

    name = "nats"
    failure_modes: frozenset[FailureMode] = frozenset({"drop", "redeliver"})
    redelivers_abandoned = True

    def unreachable_options(self, url_host: str, timeout: float) -> dict[str, object]:
        url = f"nats://user:secret@{url_host}"
        return {
            "module": MODULE,
            "options": {"url": url, "stream": "s", "durable": "d", "timeout": timeout},
        }

    async def lose_connections(self) -> bool:
        """Restart the server (same port, same JetStream store): every client is cut off;
        the harness connects again after."""
        await self.disconnect()
        await asyncio.to_thread(self.server.restart)
        await self.connect()
        return True

    def __init__(
        self, server: NatsServer, *, create_consumer: bool = True, ack_wait: float = 30.0
    ) -> None:
        n = next(_streams)
        self.ack_wait = ack_wait
        self.server = server
        self.stream = f"corral_{n}"
        self.subject = f"corral.{n}"
        self.create_consumer = create_consumer
        self._client: Client | None = None
        self._js: JetStreamContext | None = None

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "enter the harness first"
        return self._js

    @property
    def client(self) -> Client:
        assert self._client is not None, "enter the harness first"
        return self._client

    async def connect(self) -> None:
        import nats

        self._client = await nats.connect(self.server.url, allow_reconnect=False)
        self._js = self._client.jetstream()

    async def disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def __aenter__(self) -> Self:
        from nats.js.api import AckPolicy, ConsumerConfig

        await self.connect()
        await self.js.add_stream(name=self.stream, subjects=[self.subject])
        if self.create_consumer:
            await self.js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=DURABLE,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait,
                    filter_subject=self.subject,
                ),
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if client.is_connected:
                await self.js.delete_stream(self.stream)
        finally:
            await client.close()

    def producer_options(self, **options: object) -> dict[str, object]:
        return {
            "url": self.server.url,
            "stream": self.stream,
            "durable": DURABLE,
            "subject": self.subject,
            "fetch_timeout": 0.25,
            **options,
        }

    def pipeline_options(self, *, on_failure: FailureMode = "drop") -> dict[str, object]:
        policy = "nak" if on_failure == "redeliver" else "term"
        return {"producer": {"module": MODULE, "options": self.producer_options(on_failure=policy)}}

    async def publish(self, payloads: Sequence[bytes]) -> None:
        for start in range(0, len(payloads), 100):  # acknowledged, 100 in flight at a time
            await asyncio.gather(
                *(self.js.publish(self.subject, p) for p in payloads[start : start + 100])
            )

    def payload(self, message: Message) -> bytes:
        assert isinstance(message.data, bytes)
        return message.data

    async def counts(self) -> tuple[int, int]:
        """``(num_pending, num_ack_pending)`` of the durable consumer."""
        info = await self.js.consumer_info(self.stream, DURABLE)
        return info.num_pending or 0, info.num_ack_pending or 0

    async def unacked(self) -> int:
        return (await self.counts())[1]

    async def outstanding(self) -> int:
        return sum(await self.counts())

    async def dead_letters(self) -> list[bytes]:
        return []

    async def advisories(self, kind: str) -> Subscription:
        """A subscription to the consumer's ``kind`` advisories (MAX_DELIVERIES...)."""
        subject = f"$JS.EVENT.ADVISORY.CONSUMER.{kind}.{self.stream}.{DURABLE}"
        subscription = await self.client.subscribe(subject)
        await self.client.flush()
        return subscription


@pytest.fixture
def harness(nats_server: NatsServer) -> NatsHarness:
    return NatsHarness(nats_server)


@pytest.mark.realtime
class TestNatsConformance(ProducerConformance):
    pass


# -- JetStream's own ---------------------------------------------------------------------------


def payloads(n: int, prefix: bytes = b"m") -> list[bytes]:
    return [b"%s-%d" % (prefix, i) for i in range(n)]


class Deliveries(Subject):
    """Also records (payload, num_delivered, loop time) of every delivery."""

    def __init__(self, harness: NatsHarness, **options: object) -> None:
        super().__init__(harness, **options)
        self.deliveries: list[tuple[bytes, object, float]] = []

    async def handle_message(self, processor: str, message: Message, context: object) -> Message:
        now = asyncio.get_running_loop().time()
        payload = self.harness.payload(message)
        self.deliveries.append((payload, message.metadata["num_delivered"], now))
        return await super().handle_message(processor, message, context)


def pipeline(harness: NatsHarness, name: str, **producer: object) -> Deliveries:
    return Deliveries(
        harness,
        name=name,
        processors={"default": {"concurrency": 1, "max_demand": 10}},
        producer={"module": MODULE, "options": harness.producer_options(**producer)},
    )


async def drained(harness: NatsHarness) -> None:
    async def done() -> bool:
        return await harness.outstanding() == 0

    await eventually(done, f"stream {harness.stream} consumed and acknowledged")


async def next_advisory(subscription: Subscription, what: str) -> bytes:
    try:
        msg = await subscription.next_msg(timeout=30)
    except TimeoutError:
        raise AssertionError(f"no {what} advisory within 30 s") from None
    return msg.data


@pytest.mark.realtime
async def test_nak_delivers_again_after_the_delay_until_max_deliver(
    nats_server: NatsServer,
) -> None:
    harness = NatsHarness(nats_server, create_consumer=False)
    async with harness, Node() as node:
        subject = pipeline(
            harness,
            "nats-nak",
            create=True,
            max_deliver=3,
            on_failure="nak",
            nak_delay=0.2,
        )
        max_deliveries = await harness.advisories("MAX_DELIVERIES")
        await harness.publish([b"fail-always", *payloads(5)])
        await subject.start(node)
        await next_advisory(max_deliveries, "MAX_DELIVERIES")
        await drained(harness)
        await subject.stop()
        info = await harness.js.consumer_info(harness.stream, DURABLE)
        await max_deliveries.unsubscribe()
    assert (info.config.max_deliver, info.num_redelivered) == (3, 1)
    failing = [(n, t) for p, n, t in subject.deliveries if p == b"fail-always"]
    assert [n for n, _ in failing] == [1, 2, 3]
    # JetStream held each nak'd delivery back for nak_delay (a lower bound only).
    assert all(later - earlier >= 0.2 for (_, earlier), (_, later) in itertools.pairwise(failing))
    assert Counter(subject.handled) == Counter({b"fail-always": 3, **dict.fromkeys(payloads(5), 1)})


@pytest.mark.realtime
async def test_term_ends_a_failed_message_without_redelivery(harness: NatsHarness) -> None:
    async with harness, Node() as node:
        subject = pipeline(harness, "nats-term", on_failure="term")
        terminated = await harness.advisories("MSG_TERMINATED")
        await harness.publish([b"fail-now", *payloads(9)])
        await subject.start(node)
        await next_advisory(terminated, "MSG_TERMINATED")
        await drained(harness)
        await subject.stop()
        info = await harness.js.consumer_info(harness.stream, DURABLE)
        await terminated.unsubscribe()
    assert (info.num_redelivered, info.num_ack_pending, info.num_pending) == (0, 0, 0)
    assert Counter(subject.handled)[b"fail-now"] == 1
    assert sorted(subject.handled) == sorted([b"fail-now", *payloads(9)])


@pytest.mark.realtime
async def test_the_durable_consumer_resumes_where_it_was_after_the_server_restarts(
    nats_private_server: NatsServer,
) -> None:
    all_payloads = payloads(100)
    # A short ack_wait: the server keeps a consumer's pending messages across a restart but
    # not its redelivery queue, so the messages the first pipeline nak'd while stopping (the
    # ones its last fetch brought after the drain began) come back only after ack_wait.
    async with NatsHarness(nats_private_server, ack_wait=2.0) as harness:
        await harness.publish(all_payloads)
        async with Node() as node:
            first = pipeline(harness, "nats-durable-1")
            gate = first.gate = Gate()
            gate.release(30)
            await first.start(node)
            await asyncio.wait_for(gate.wait_blocked(), 30)
            stopping = asyncio.ensure_future(first.stop())
            gate.open()
            await asyncio.wait_for(stopping, 30)
        handled_first = set(first.handled)
        left = await harness.outstanding()
        assert len(handled_first) == len(first.handled) == 100 - left and left > 0

        await harness.disconnect()
        await asyncio.to_thread(nats_private_server.restart)
        await harness.connect()

        assert await harness.outstanding() == left
        async with Node() as node:
            second = pipeline(harness, "nats-durable-2")
            await second.start(node)
            await drained(harness)
            await second.stop()
    assert handled_first.isdisjoint(second.handled)
    assert handled_first | set(second.handled) == set(all_payloads)
    assert len(second.handled) == left


@pytest.mark.realtime
async def test_a_lost_connection_restarts_the_producer_and_jetstream_redelivers(
    nats_private_server: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    # ack_wait 2 s: the messages in flight when the server went away cannot be acked or nak'd
    # on the dead connection; JetStream delivers them again after ack_wait.
    async with NatsHarness(nats_private_server, ack_wait=2.0) as harness:
        await harness.publish(payloads(30))
        async with Node() as node:
            subject = pipeline(harness, "nats-lost")
            producers = capture_producers(subject)
            gate = subject.gate = Gate()
            await subject.start(node)
            await asyncio.wait_for(gate.wait_blocked(), 30)

            await harness.disconnect()
            await asyncio.to_thread(nats_private_server.restart)
            await harness.connect()

            async def restarted() -> bool:
                return len(producers) == 2

            await eventually(restarted, "a new producer stage connected")
            with caplog.at_level(logging.WARNING, logger="corral.pipeline"):
                gate.open()
                await drained(harness)
            await subject.stop()
    handled = Counter(subject.handled)
    assert set(handled) == set(payloads(30))
    assert max(handled.values()) == 2  # those in flight when the connection was lost
    assert "messages not acknowledged" in caplog.text


def capture_producers(subject: Pipeline) -> list[NatsProducer]:
    """The producer instances the pipeline's stages make, in order (restarts included)."""
    made: list[NatsProducer] = []
    base = subject.options.producer.module
    assert issubclass(base, NatsProducer)

    class Captured(base):  # type: ignore[valid-type,misc]
        def __init__(self, options: object, context: object) -> None:
            super().__init__(options, context)
            made.append(self)

    subject.options = dataclasses.replace(
        subject.options, producer=dataclasses.replace(subject.options.producer, module=Captured)
    )
    return made


@pytest.mark.realtime
async def test_a_missing_stream_or_consumer_fails_the_start_unless_created(
    nats_server: NatsServer,
) -> None:
    harness = NatsHarness(nats_server, create_consumer=False)
    async with harness, Node() as node:
        missing_consumer = pipeline(harness, "nats-missing-consumer")
        with pytest.raises(StartError) as info:
            await missing_consumer.start(node)
        # The stage's error, nested in the supervisors' StartErrors (whose texts quote it).
        text = str(info.value)
        assert "does not exist; create it, or set producer.options.create=True" in text
        assert f"stream '{harness.stream}' consumer '{DURABLE}'" in text.replace("\\", "")

        missing_stream = Pipeline(
            name="nats-missing-stream",
            producer={
                "module": MODULE,
                "options": {**harness.producer_options(), "stream": "no_such_stream"},
            },
        )
        with pytest.raises(StartError) as info:
            await missing_stream.start(node)
        assert "no_such_stream" in str(info.value)
        assert "create it, or set producer.options.create=True" in str(info.value)


# -- options -----------------------------------------------------------------------------------


def options_error(**options: object) -> str:
    with pytest.raises(ValueError) as info:
        Pipeline(name="p", producer={"module": MODULE, "options": options})
    return str(info.value)


def test_options_name_the_option_and_the_rule() -> None:
    prefix = "invalid options for pipeline: producer.options."
    base = {"stream": "s", "durable": "d"}
    name_rule = "a stream name (non-empty, without '.', '*', '>' or spaces)"
    assert options_error(durable="d") == f"{prefix}stream is required ({name_rule})"
    assert options_error(stream="a.b", durable="d") == (
        f"{prefix}stream must be {name_rule}; got 'a.b'"
    )
    assert options_error(stream="s") == (
        f"{prefix}durable is required (a consumer name (non-empty, without '.', '*', '>' or "
        "spaces))"
    )
    assert options_error(**base, url="amqp://x") == (
        f"{prefix}url must be a nats:// or tls:// URL; got 'amqp://x'"
    )
    assert options_error(**base, on_failure="drop") == (
        f"{prefix}on_failure must be 'nak' or 'term'; got 'drop'"
    )
    assert options_error(**base, max_deliver=0) == (
        f"{prefix}max_deliver must be None or an int >= 1; got 0"
    )
    assert options_error(**base, ack_wait=0) == (
        f"{prefix}ack_wait must be None or a number > 0; got 0"
    )
    assert options_error(**base, max_batch=0) == f"{prefix}max_batch must be an int >= 1; got 0"
    assert options_error(**base, fetch_timeout=-1) == (
        f"{prefix}fetch_timeout must be a number > 0; got -1"
    )
    assert options_error(**base, nak_delay=1.0) == (
        f"{prefix}nak_delay needs producer.options.on_failure='nak'; got on_failure='term'"
    )
    assert options_error(**base, create=True) == (
        f"{prefix}create=True needs producer.options.subject (the subject of the stream it creates)"
    )
    assert options_error(**base, subject="a b") == (
        f"{prefix}subject must be None or a subject (non-empty, no spaces); got 'a b'"
    )
    assert options_error(**base, max_delivery=3) == (
        "invalid options for pipeline: unknown option 'producer.options.max_delivery'; valid "
        "options: url, stream, durable, subject, create, ack_wait, max_deliver, on_failure, "
        "nak_delay, max_batch, fetch_timeout, timeout"
    )


def test_valid_options_are_kept() -> None:
    subject = Pipeline(
        name="p",
        producer={
            "module": MODULE,
            "options": {
                "stream": "s",
                "durable": "d",
                "on_failure": "nak",
                "nak_delay": 0.5,
                "max_deliver": 5,
            },
        },
    )
    options = subject.options.producer.options
    assert (options.url, options.on_failure, options.nak_delay, options.max_deliver) == (
        "nats://localhost:4222",
        "nak",
        0.5,
        5,
    )


@pytest.mark.realtime
async def test_a_fetch_that_ignores_every_cancel_does_not_hang_the_stop(
    harness: NatsHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # nats-py can lose a cancel (Python 3.11's wait_for); this fetch loses them all. The stop
    # waits the drain's grace (fetch_timeout + timeout), cancels for STOP_TIMEOUT, then gives
    # up on the task with an error, well within the stage's 5 s shutdown. Before, terminate
    # awaited the fetcher without limit: the stop took until the supervisor's kill.
    from nats.js.client import JetStreamContext

    from corral.pipeline.producers.stopping import STOP_TIMEOUT

    entered, release = asyncio.Event(), asyncio.Event()
    fetchers: list[asyncio.Task[object]] = []

    async def deaf_fetch(self: object, *args: object, **kwargs: object) -> list[object]:
        task = asyncio.current_task()
        assert task is not None
        fetchers.append(task)
        entered.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                pass
        return []

    monkeypatch.setattr(JetStreamContext.PullSubscription, "fetch", deaf_fetch)
    loop = asyncio.get_running_loop()
    async with harness, Node() as node:
        subject = pipeline(harness, "nats-deaf", fetch_timeout=0.25, timeout=0.5)
        await subject.start(node)
        await asyncio.wait_for(entered.wait(), 10)
        began = loop.time()
        with caplog.at_level(logging.ERROR, logger="corral.pipeline"):
            async with asyncio.timeout(10):
                await subject.stop()
        took = loop.time() - began
        release.set()
        done, _ = await asyncio.wait(fetchers, timeout=5)
    assert took < 0.25 + 0.5 + STOP_TIMEOUT + 1.0, took
    assert "gave up stopping task" in caplog.text
    assert len(done) == 1  # released, the abandoned fetch task ended at its next check
