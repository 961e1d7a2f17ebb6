"""The RabbitMQ producer against a real broker (tests/servers/rabbitmq.py): the conformance
suite, then what is RabbitMQ's own: requeue vs reject, the prefetch bound, redelivery after
the connection is lost, and its options.

Counts are the broker's (``RabbitMQServer.queue_counts``: ready and unacknowledged, as
``rabbitmqctl list_queues`` shows them).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import pytest
from conformance import (
    BrokerHarness,
    FailureMode,
    ProducerConformance,
    Subject,
    eventually,
)

from corral import Node
from corral.errors import StartError
from corral.pipeline import Message, Pipeline
from corral.pipeline.producers.rabbitmq import RabbitMQProducer, redact
from corral.testing import Gate
from servers.rabbitmq import RabbitMQServer

if TYPE_CHECKING:
    import aio_pika.abc

pytest.importorskip("aio_pika")

MODULE = "rabbitmq"


class RabbitMQHarness:
    """One queue (and its dead-letter queue) on the session's broker.

    The queue is declared by the first ``publish`` (or count), durable, with the arguments
    of the failure mode asked for: ``dead_letter`` gives it an ``x-dead-letter-exchange``
    (the default exchange, routing to ``<queue>.dlq``). The producer declares it with the
    same arguments (``create=True``).
    """

    name = "rabbitmq"
    failure_modes: frozenset[FailureMode] = frozenset({"drop", "dead_letter", "redeliver"})
    redelivers_abandoned = True

    def unreachable_options(self, url_host: str, timeout: float) -> dict[str, object]:
        url = f"amqp://user:secret@{url_host}/"
        return {"module": MODULE, "options": {"url": url, "queue": "q", "timeout": timeout}}

    async def lose_connections(self) -> bool:
        """The broker closes the producers' connections (named ``corral <pipeline>
        producer <i>``), as ``rabbitmqctl close_connection`` would."""
        closed = await asyncio.to_thread(self.server.close_connections, "corral ")
        return closed > 0

    def __init__(self, server: RabbitMQServer, queue: str) -> None:
        self.server = server
        self.queue = queue
        self.dlq = f"{queue}.dlq"
        self.mode: FailureMode | None = None
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._declared = False

    async def __aenter__(self) -> Self:
        import aio_pika

        self._connection = await aio_pika.connect(self.server.url)
        self._channel = await self._connection.channel()
        await self._channel.declare_queue(self.dlq, durable=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self._channel is not None and not self._channel.is_closed:
                await self._channel.queue_delete(self.queue)
                await self._channel.queue_delete(self.dlq)
        finally:
            await connection.close()

    def arguments(self) -> dict[str, object] | None:
        if self.mode != "dead_letter":
            return None
        return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": self.dlq}

    def pipeline_options(self, *, on_failure: FailureMode = "drop") -> dict[str, object]:
        declared_with = self.arguments()
        self.mode = on_failure
        if self._declared and self.arguments() != declared_with:
            raise AssertionError(f"queue {self.queue} was declared with {declared_with!r}")
        options: dict[str, object] = {
            "url": self.server.url,
            "queue": self.queue,
            "create": True,
            "on_failure": "requeue" if on_failure == "redeliver" else "reject",
        }
        arguments = self.arguments()
        if arguments is not None:
            options["queue_arguments"] = arguments
        return {"producer": {"module": MODULE, "options": options}}

    async def declare(self) -> None:
        if self._declared:
            return
        assert self._channel is not None
        await self._channel.declare_queue(
            self.queue,
            durable=True,
            arguments=self.arguments(),  # type: ignore[arg-type]
        )
        self._declared = True

    async def publish(self, payloads: Sequence[bytes]) -> None:
        import aio_pika

        await self.declare()
        assert self._channel is not None
        exchange = self._channel.default_exchange
        for start in range(0, len(payloads), 100):  # confirmed, 100 in flight at a time
            await asyncio.gather(
                *(
                    exchange.publish(aio_pika.Message(p), routing_key=self.queue)
                    for p in payloads[start : start + 100]
                )
            )

    def payload(self, message: Message) -> bytes:
        assert isinstance(message.data, bytes)
        return message.data

    async def counts(self) -> tuple[int, int]:
        await self.declare()
        return await asyncio.to_thread(self.server.queue_counts, self.queue)

    async def unacked(self) -> int:
        return (await self.counts())[1]

    async def outstanding(self) -> int:
        return sum(await self.counts())

    async def dead_letters(self) -> list[bytes]:
        assert self._channel is not None
        queue = await self._channel.get_queue(self.dlq)
        out = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            out.append(message.body)
        return out


@pytest.fixture
def harness(rabbitmq_server: RabbitMQServer, rabbitmq_queue: str) -> RabbitMQHarness:
    return RabbitMQHarness(rabbitmq_server, rabbitmq_queue)


@pytest.mark.realtime
class TestRabbitMQConformance(ProducerConformance):
    pass


# -- RabbitMQ's own ---------------------------------------------------------------------------


def subject(harness: BrokerHarness, *, processors: int = 1, **producer: object) -> Subject:
    options = harness.pipeline_options()
    options["producer"]["options"].update(producer)  # type: ignore[index]
    return Subject(
        harness,
        name="rabbitmq-own",
        processors={"default": {"concurrency": processors, "max_demand": 10}},
        **options,
    )


def payloads(n: int, prefix: bytes = b"m") -> list[bytes]:
    return [b"%s-%d" % (prefix, i) for i in range(n)]


class Redelivered(Subject):
    """Also records ``metadata['redelivered']`` per payload."""

    def __init__(self, harness: BrokerHarness, **options: object) -> None:
        super().__init__(harness, **options)
        self.redelivered: list[tuple[bytes, object]] = []

    async def handle_message(self, processor: str, message: Message, context: object) -> Message:
        self.redelivered.append((self.harness.payload(message), message.metadata["redelivered"]))
        return await super().handle_message(processor, message, context)


async def drained(harness: RabbitMQHarness) -> None:
    async def done() -> bool:
        return await harness.outstanding() == 0

    await eventually(done, f"queue {harness.queue} empty and acknowledged")


@pytest.mark.realtime
async def test_requeue_delivers_a_failed_message_again_marked_redelivered(
    harness: RabbitMQHarness,
) -> None:
    async with harness, Node() as node:
        await harness.publish([b"fail-once", *payloads(9)])
        pipeline = Redelivered(
            harness,
            name="rabbitmq-requeue",
            processors={"default": {"concurrency": 1, "max_demand": 10}},
            **harness.pipeline_options(on_failure="redeliver"),
        )
        pipeline.fail_once = True
        await pipeline.start(node)
        await drained(harness)
        await pipeline.stop()
    assert Counter(pipeline.handled)[b"fail-once"] == 2
    assert [r for p, r in pipeline.redelivered if p == b"fail-once"] == [False, True]
    assert sorted(set(pipeline.handled)) == sorted([b"fail-once", *payloads(9)])


@pytest.mark.realtime
async def test_reject_drops_a_failed_message_without_redelivery(harness: RabbitMQHarness) -> None:
    async with harness, Node() as node:
        await harness.publish([b"fail-always", *payloads(9)])
        pipeline = subject(harness, on_failure="reject")
        await pipeline.start(node)
        await drained(harness)
        await pipeline.stop()
        assert await harness.dead_letters() == []
    assert Counter(pipeline.handled)[b"fail-always"] == 1
    assert len(pipeline.handled) == 10


@pytest.mark.realtime
async def test_reject_dead_letters_through_the_queues_dead_letter_exchange(
    harness: RabbitMQHarness,
) -> None:
    async with harness, Node() as node:
        options = harness.pipeline_options(on_failure="dead_letter")
        await harness.publish([b"fail-a", *payloads(5), b"fail-b"])
        pipeline = Subject(harness, name="rabbitmq-dlx", **options)
        await pipeline.start(node)
        await drained(harness)
        await pipeline.stop()
        assert sorted(await harness.dead_letters()) == [b"fail-a", b"fail-b"]


@pytest.mark.realtime
async def test_the_broker_never_has_more_unacknowledged_deliveries_than_prefetch(
    harness: RabbitMQHarness,
) -> None:
    prefetch = 4
    async with harness, Node() as node:
        await harness.publish(payloads(40))
        pipeline = subject(harness, prefetch=prefetch)  # max_demand 10 > prefetch
        producers = capture_producers(pipeline)
        gate = pipeline.gate = Gate()
        await pipeline.start(node)
        seen = []
        for _ in range(12):
            await asyncio.wait_for(gate.wait_blocked(), 30)
            seen.append(await harness.unacked())
            gate.release()
        gate.open()
        await drained(harness)
        await pipeline.stop()
    assert max(seen) == prefetch, seen
    assert [p.prefetch for p in producers] == [[prefetch]]
    assert len(pipeline.handled) == 40


@pytest.mark.realtime
async def test_without_a_prefetch_option_the_allowance_follows_demand(
    harness: RabbitMQHarness,
) -> None:
    # Two processors asking 10 each, and a batcher holding up to 30 more: the stage starts
    # with one processor's demand and adds consumers as the pipeline asks for more.
    async with harness, Node() as node:
        await harness.publish(payloads(300))
        pipeline = Subject(
            harness,
            name="rabbitmq-allowance",
            processors={"default": {"concurrency": 2, "max_demand": 10}},
            batchers={"default": {"batch_size": 30, "batch_timeout": 0.05}},
            **harness.pipeline_options(),
        )
        producers = capture_producers(pipeline)
        await pipeline.start(node)
        await drained(harness)
        await pipeline.stop()
    (producer,) = producers
    assert producer.prefetch[0] == 10
    assert sum(producer.prefetch) > 10 and len(producer.prefetch) <= 32
    assert sorted(pipeline.handled) == sorted(payloads(300))


@pytest.mark.realtime
async def test_a_lost_connection_restarts_the_producer_and_the_broker_redelivers(
    harness: RabbitMQHarness, rabbitmq_server: RabbitMQServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with harness, Node() as node:
        await harness.publish(payloads(30))
        pipeline = Redelivered(
            harness,
            name="rabbitmq-lost",
            processors={"default": {"concurrency": 1, "max_demand": 10}},
            **harness.pipeline_options(),
        )
        producers = capture_producers(pipeline)
        gate = pipeline.gate = Gate()
        await pipeline.start(node)
        await asyncio.wait_for(gate.wait_blocked(), 30)

        async def taken() -> bool:
            return await harness.unacked() == 10

        await eventually(taken, "the first 10 messages delivered")
        with caplog.at_level(logging.WARNING, logger="corral.pipeline"):
            closed = await asyncio.to_thread(
                rabbitmq_server.close_connections, producers[0].connection_name
            )
            assert closed == 1

            async def restarted() -> bool:
                return len(producers) == 2

            # The processor is held at the gate, so the new stage consumes once it is open.
            await eventually(restarted, "a new producer stage connected")
            gate.open()
            await drained(harness)
            await pipeline.stop()
    handled = Counter(pipeline.handled)
    assert set(handled) == set(payloads(30))
    # The message held at the gate when the connection closed was handled, could not be
    # acknowledged on its closed channel, and came back marked redelivered.
    assert max(handled.values()) == 2
    assert any(redelivered for _, redelivered in pipeline.redelivered)
    assert "not acknowledged, their channel is closed" in caplog.text


@pytest.mark.realtime
async def test_a_consumer_the_broker_cancels_restarts_the_stage_which_declares_again(
    harness: RabbitMQHarness,
) -> None:
    async with harness, Node() as node:
        await harness.publish(payloads(5))
        pipeline = subject(harness)  # create=True
        producers = capture_producers(pipeline)
        await pipeline.start(node)
        await drained(harness)
        assert harness._channel is not None
        await harness._channel.queue_delete(harness.queue)  # the broker cancels the consumer

        async def consuming_again() -> bool:
            return len(producers) == 2 and bool(producers[1].prefetch)

        await eventually(consuming_again, "a new stage consuming the queue it declared again")
        await harness.publish(payloads(5, b"n"))
        await drained(harness)
        await pipeline.stop()
    assert sorted(pipeline.handled) == sorted(payloads(5) + payloads(5, b"n"))


@pytest.mark.realtime
async def test_a_queue_that_does_not_exist_fails_the_start_unless_created(
    harness: RabbitMQHarness,
) -> None:
    async with harness, Node() as node:
        pipeline = subject(harness, create=False)
        with pytest.raises(StartError) as info:
            await pipeline.start(node)
        # The stage's error, nested in the supervisors' StartErrors (whose texts quote it).
        assert (
            f"does not exist on {redact(harness.server.url)}; "
            "create it, or set producer.options.create=True"
        ) in str(info.value)
        assert harness.queue in str(info.value)


def capture_producers(pipeline: Pipeline) -> list[RabbitMQProducer]:
    """The producer instances the pipeline's stages make, in order (restarts included)."""
    import dataclasses

    made: list[RabbitMQProducer] = []
    base = pipeline.options.producer.module
    assert issubclass(base, RabbitMQProducer)

    class Captured(base):  # type: ignore[valid-type,misc]
        def __init__(self, options: object, context: object) -> None:
            super().__init__(options, context)
            made.append(self)

    pipeline.options = dataclasses.replace(
        pipeline.options,
        producer=dataclasses.replace(pipeline.options.producer, module=Captured),
    )
    return made


# -- options -----------------------------------------------------------------------------------


def options_error(**options: object) -> str:
    with pytest.raises(ValueError) as info:
        Pipeline(name="p", producer={"module": MODULE, "options": options})
    return str(info.value)


def test_options_name_the_option_and_the_rule() -> None:
    prefix = "invalid options for pipeline: producer.options."
    assert options_error() == f"{prefix}queue is required (a non-empty str)"
    assert options_error(queue="") == f"{prefix}queue must be a non-empty str; got ''"
    assert options_error(queue="q", url="http://x") == (
        f"{prefix}url must be an amqp:// or amqps:// URL; got 'http://x'"
    )
    assert options_error(queue="q", prefetch=0) == (
        f"{prefix}prefetch must be None or an int from 1 to 65535; got 0"
    )
    assert options_error(queue="q", prefetch=65_536) == (
        f"{prefix}prefetch must be None or an int from 1 to 65535; got 65536"
    )
    assert options_error(queue="q", on_failure="drop") == (
        f"{prefix}on_failure must be 'reject' or 'requeue'; got 'drop'"
    )
    assert options_error(queue="q", create="yes") == f"{prefix}create must be a bool; got 'yes'"
    assert options_error(queue="q", timeout=0) == f"{prefix}timeout must be a number > 0; got 0"
    assert options_error(queue="q", consumer_tag="") == (
        f"{prefix}consumer_tag must be None or a non-empty str; got ''"
    )
    assert options_error(queue="q", queue_arguments={"x-max-length": 5}) == (
        f"{prefix}queue_arguments needs producer.options.create=True (a queue that exists "
        "keeps its own arguments); got {'x-max-length': 5}"
    )
    assert options_error(queue="q", prefech=5) == (
        "invalid options for pipeline: unknown option 'producer.options.prefech'; valid "
        "options: url, queue, prefetch, create, queue_arguments, on_failure, consumer_tag, "
        "timeout"
    )


def test_valid_options_are_kept_and_the_password_is_redacted_in_messages() -> None:
    pipeline = Pipeline(
        name="p",
        producer={
            "module": MODULE,
            "options": {"url": "amqps://u:pw@h:5671/v", "queue": "q", "prefetch": 7},
        },
    )
    options = pipeline.options.producer.options
    assert (options.url, options.queue, options.prefetch, options.on_failure) == (
        "amqps://u:pw@h:5671/v",
        "q",
        7,
        "reject",
    )
    assert redact("amqps://u:pw@h:5671/v") == "amqps://u:******@h:5671/v"
    assert redact("amqp://h/") == "amqp://h/"


@pytest.mark.realtime
async def test_a_connection_close_that_ignores_every_cancel_does_not_hang_the_stop(
    harness: RabbitMQHarness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # aiormq can lose a cancel (Python 3.11's wait_for); this close loses them all. Before,
    # asyncio.timeout's cancel and then the supervisor's kill were both lost: stop() hung.
    import aio_pika.connection

    from corral.pipeline.producers.stopping import STOP_TIMEOUT

    real_close = aio_pika.connection.Connection.close
    deaf, release = asyncio.Event(), asyncio.Event()
    closers: list[asyncio.Task[object]] = []

    async def deaf_close(self: aio_pika.connection.Connection, *args: object) -> None:
        if deaf.is_set():
            task = asyncio.current_task()
            assert task is not None
            closers.append(task)
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    pass
        await real_close(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(aio_pika.connection.Connection, "close", deaf_close)
    loop = asyncio.get_running_loop()
    async with harness, Node() as node:
        await harness.publish(payloads(5))
        pipeline = subject(harness, timeout=0.5)
        await pipeline.start(node)
        await drained(harness)
        deaf.set()
        began = loop.time()
        with caplog.at_level(logging.WARNING, logger="corral.pipeline"):
            async with asyncio.timeout(10):
                await pipeline.stop()
        took = loop.time() - began
        deaf.clear()
        release.set()
        done, _ = await asyncio.wait(closers, timeout=5)
    assert took < 0.5 + STOP_TIMEOUT + 1.0, took
    assert "gave up stopping task" in caplog.text
    assert "closing the connection failed: TimeoutError" in caplog.text
    assert len(done) == 1


def test_declare_still_reads_as_create_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"producer.options.declare is now producer"):
        pipeline = Pipeline(
            name="p", producer={"module": MODULE, "options": {"queue": "q", "declare": True}}
        )
    assert pipeline.options.producer.options.create is True  # type: ignore[attr-defined]
    assert options_error(queue="q", declare=True, create=True) == (
        "invalid options for pipeline: producer.options.declare is the old name of "
        "producer.options.create; give only create"
    )
