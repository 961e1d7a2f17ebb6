"""The conformance suite every producer runs: the same behaviour, counted on the broker.

A producer's test module gives the suite a ``BrokerHarness`` (how to publish to its broker,
how to count what the broker still holds) and subclasses ``ProducerConformance``::

    from conformance import ProducerConformance

    @pytest.mark.realtime                       # a real broker: real time
    class TestRedisStreamsConformance(ProducerConformance):
        @pytest.fixture
        def harness(self, redis_url: str) -> RedisHarness:
            return RedisHarness(redis_url)

``tests/pipeline`` is on ``sys.path`` for the modules in ``tests/pipeline/brokers`` (that
directory is a package), so ``from conformance import ...`` works there as it does here.
The memory producer runs the suite too (``tests/pipeline/test_memory_conformance.py``), on
virtual time: the suite asks nothing of a producer beyond the ``Producer`` contract.

What it checks, counting on the broker's side (``outstanding``, ``unacked``):

- every published message is handled and acknowledged exactly once in the happy path, and
  the broker holds nothing afterwards;
- a message whose handler failed is treated as the harness's failure mode says: ``"drop"``
  (acknowledged and gone), ``"dead_letter"`` (moved to the harness's dead-letter target,
  then acknowledged) or ``"redeliver"`` (left unacknowledged; the broker delivers it again);
  a harness lists the modes its producer has in ``failure_modes``, the others skip;
- backpressure: the messages taken from the broker and not yet acknowledged never exceed
  what the processors demanded (2 x max_demand with one producer and one processor: one
  demand's worth buffered in the producer stage, one in the processor);
- stopping drains: what was fetched when the stop began is either handled and acknowledged
  or left on the broker for redelivery, none lost, and a new pipeline with the same
  group/consumer gets the rest;
- restart (``redelivers_abandoned`` only): messages a stopped pipeline took and never
  acknowledged (its handler never returned) come back to a new pipeline with the same
  group/consumer;
- the outage rule of every broker producer (``unreachable_options`` not None): a stage
  whose broker is not there keeps trying for ``timeout`` seconds, then fails its start with
  a ``ConnectionError`` naming the URL with the password masked.

Waiting is by polling the broker (every 10 ms of the loop's clock, bounded by ``TIMEOUT``):
the broker is another process, and its counts are the truth the suite checks.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import pytest

from corral import CrashReport, Node, StartError, telemetry
from corral.pipeline import Message, Pipeline
from corral.testing import Gate

__all__ = [
    "TIMEOUT",
    "BrokerHarness",
    "FailureMode",
    "ProducerConformance",
    "Subject",
    "eventually",
    "watch_draining",
]

FailureMode = Literal["drop", "dead_letter", "redeliver"]
"""What a producer does with a message whose handling finally failed."""

TIMEOUT = 30.0
"""Seconds (of the loop's clock) any one wait of the suite may take before it fails."""


class BrokerHarness(Protocol):
    """A broker as the conformance suite sees it; one per test, for one queue/stream.

    ``async with harness:`` connects it on the test's loop and closes everything after. Each
    call of ``pipeline_options`` names the same source and the same group/consumer, so a
    second pipeline built from it takes over from the first.
    """

    name: str
    """For messages: "redis_streams", "memory"..."""

    failure_modes: frozenset[FailureMode]
    """The failure modes the producer has (see ``FailureMode``)."""

    redelivers_abandoned: bool
    """Whether messages that a consumer took and never acknowledged (it stopped while its
    handler still ran) are delivered again to a new pipeline with the same group/consumer."""

    def unreachable_options(self, url_host: str, timeout: float) -> dict[str, object] | None:
        """``producer`` options for this broker's producer at ``<scheme>://user:secret@
        <url_host>`` (where nothing listens) with ``timeout``; None: no broker, no outage
        rule (the memory producer)."""
        ...

    async def lose_connections(self) -> bool:
        """Make the broker drop the connections of the pipelines reading from it (not the
        harness's own), as an outage would; False: there is no broker (memory)."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def pipeline_options(self, *, on_failure: FailureMode = "drop") -> dict[str, object]:
        """Keyword options for ``Pipeline(...)`` that read from this harness's source with
        ``on_failure`` as the failure policy: ``producer``, and ``dead_letter`` when the
        harness's dead-letter target is a pipeline option. Only modes in
        ``failure_modes`` are asked for."""
        ...

    async def publish(self, payloads: Sequence[bytes]) -> None:
        """Put one message per payload on the source, in order."""
        ...

    def payload(self, message: Message) -> bytes:
        """The published payload that ``message`` (as ``handle_message`` got it) carries."""
        ...

    async def unacked(self) -> int:
        """How many messages consumers took (were delivered) and have not acknowledged."""
        ...

    async def outstanding(self) -> int:
        """How many published messages are not acknowledged yet, taken or not: 0 when all
        are done."""
        ...

    async def dead_letters(self) -> list[bytes]:
        """The payloads on the dead-letter target, in the order they arrived."""
        ...


async def eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = TIMEOUT
) -> None:
    """Poll ``check`` every 10 ms until it returns True; ``AssertionError`` naming ``what``
    after ``timeout`` seconds (of the loop's clock)."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if await check():
                    return
                await asyncio.sleep(0.01)  # polling the broker, bounded by `timeout`
    except TimeoutError:
        raise AssertionError(f"not within {timeout:g} s: {what}") from None


async def _bounded(awaitable: Awaitable[None], what: str) -> None:
    try:
        async with asyncio.timeout(TIMEOUT):
            await awaitable
    except TimeoutError:
        raise AssertionError(f"not within {TIMEOUT:g} s: {what}") from None


class Subject(Pipeline):
    """The pipeline under test: records the payload of every ``handle_message``; fails the
    payloads that start with ``b"fail"`` (every time, or only on their first delivery with
    ``fail_once``); holds each message at ``gate`` first when one is set; routes every
    message to its only batcher when it has one."""

    def __init__(self, harness: BrokerHarness, **options: object) -> None:
        super().__init__(**options)
        self.harness = harness
        self.handled: list[bytes] = []
        self.gate: Gate | None = None
        self.fail_once = False
        self.route = next(iter(self.options.batchers), None)

    async def handle_message(self, processor: str, message: Message, context: object) -> Message:
        if self.gate is not None:
            await self.gate.enter()
        payload = self.harness.payload(message)
        first = payload not in self.handled
        self.handled.append(payload)
        if payload.startswith(b"fail") and (first or not self.fail_once):
            return message.mark_failed(f"{payload!r} fails")
        return message if self.route is None else message.put_batcher(self.route)


def watch_draining(pipeline: Pipeline) -> asyncio.Event:
    """An event set when a producer stage of ``pipeline`` (not started yet) is told to drain:
    from then on it pulls nothing more from the broker."""
    event = asyncio.Event()
    producer = pipeline.options.producer
    base = producer.module

    class Watched(base):  # type: ignore[valid-type,misc]
        def prepare_for_draining(self) -> Awaitable[None] | None:
            event.set()
            return super().prepare_for_draining()  # type: ignore[no-any-return]

    Watched.__name__ = base.__name__
    pipeline.options = dataclasses.replace(
        pipeline.options, producer=dataclasses.replace(producer, module=Watched)
    )
    return event


def _payloads(n: int, *, failing_every: int = 0) -> list[bytes]:
    return [
        b"fail-%d" % i if failing_every and i % failing_every == 0 else b"m-%d" % i
        for i in range(n)
    ]


class ProducerConformance:
    """The suite. Subclass it in a producer's test module, with a ``harness`` fixture that
    returns a fresh ``BrokerHarness`` (not entered) for each test; mark the class
    ``realtime`` when the broker is a real server."""

    def subject(
        self,
        harness: BrokerHarness,
        *,
        on_failure: FailureMode = "drop",
        batch: bool = True,
        processors: int = 2,
        max_demand: int = 10,
        **options: object,
    ) -> Subject:
        if on_failure not in harness.failure_modes:
            pytest.skip(f"the {harness.name} producer has no failure mode {on_failure!r}")
        batchers = {"default": {"batch_size": 10, "batch_timeout": 0.02}} if batch else {}
        return Subject(
            harness,
            name=f"conformance-{harness.name}",
            processors={"default": {"concurrency": processors, "max_demand": max_demand}},
            batchers=batchers,
            **harness.pipeline_options(on_failure=on_failure),
            **options,
        )

    async def all_acknowledged(self, harness: BrokerHarness) -> None:
        async def done() -> bool:
            return await harness.outstanding() == 0

        await eventually(done, f"every message acknowledged on {harness.name}")

    async def test_every_message_is_handled_and_acknowledged_exactly_once(
        self, harness: BrokerHarness
    ) -> None:
        payloads = _payloads(500)
        async with harness, Node() as node:
            await harness.publish(payloads)
            assert await harness.outstanding() == 500
            pipeline = self.subject(harness)
            await pipeline.start(node)
            await self.all_acknowledged(harness)
            await pipeline.stop()
            assert sorted(pipeline.handled) == sorted(payloads)
            assert (await harness.outstanding(), await harness.unacked()) == (0, 0)
            assert await harness.dead_letters() == []

    async def test_messages_without_a_batcher_are_acknowledged_by_their_processor(
        self, harness: BrokerHarness
    ) -> None:
        payloads = _payloads(120)
        async with harness, Node() as node:
            await harness.publish(payloads)
            pipeline = self.subject(harness, batch=False)
            await pipeline.start(node)
            await self.all_acknowledged(harness)
            await pipeline.stop()
            assert sorted(pipeline.handled) == sorted(payloads)

    async def test_a_failed_message_is_acknowledged_and_gone_when_the_policy_drops_it(
        self, harness: BrokerHarness
    ) -> None:
        payloads = _payloads(100, failing_every=10)
        async with harness, Node() as node:
            pipeline = self.subject(harness, on_failure="drop")
            await harness.publish(payloads)
            await pipeline.start(node)
            await self.all_acknowledged(harness)
            await pipeline.stop()
            assert sorted(pipeline.handled) == sorted(payloads)
            assert await harness.dead_letters() == []

    async def test_a_failed_message_moves_to_the_dead_letter_target(
        self, harness: BrokerHarness
    ) -> None:
        payloads = _payloads(100, failing_every=10)
        async with harness, Node() as node:
            pipeline = self.subject(harness, on_failure="dead_letter")
            await harness.publish(payloads)
            await pipeline.start(node)
            await self.all_acknowledged(harness)
            await pipeline.stop()
            assert sorted(pipeline.handled) == sorted(payloads)
            failing = [p for p in payloads if p.startswith(b"fail")]
            assert sorted(await harness.dead_letters()) == sorted(failing)

    async def test_a_failed_message_is_delivered_again_when_the_policy_redelivers_it(
        self, harness: BrokerHarness
    ) -> None:
        payloads = _payloads(100, failing_every=10)
        async with harness, Node() as node:
            pipeline = self.subject(harness, on_failure="redeliver")
            pipeline.fail_once = True
            await harness.publish(payloads)
            await pipeline.start(node)
            await self.all_acknowledged(harness)
            await pipeline.stop()
            counts = Counter(pipeline.handled)
            assert set(counts) == set(payloads)
            assert all(counts[p] >= 2 for p in payloads if p.startswith(b"fail"))
            assert await harness.dead_letters() == []

    async def test_the_producer_takes_no_more_than_the_processors_demanded(
        self, harness: BrokerHarness
    ) -> None:
        max_demand = 10
        bound = 2 * max_demand  # one producer: its buffer, plus the one processor's
        async with harness, Node() as node:
            await harness.publish(_payloads(200))
            pipeline = self.subject(harness, batch=False, processors=1, max_demand=max_demand)
            gate = pipeline.gate = Gate()
            await pipeline.start(node)
            seen = []
            for _ in range(3 * max_demand):  # through several rounds of demand
                await _bounded(gate.wait_blocked(), "a message held at the gate")
                seen.append(await harness.unacked())
                gate.release()
            assert 0 < max(seen) <= bound, seen
            gate.open()
            await self.all_acknowledged(harness)
            await pipeline.stop()
            assert len(pipeline.handled) == 200

    async def test_stop_finishes_or_leaves_every_fetched_message_and_a_restart_gets_the_rest(
        self, harness: BrokerHarness
    ) -> None:
        n = 300
        payloads = _payloads(n)
        async with harness, Node() as node:
            await harness.publish(payloads)
            first = self.subject(harness)
            draining = watch_draining(first)
            gate = first.gate = Gate()
            gate.release(25)
            await first.start(node)
            await _bounded(gate.wait_blocked(2), "both processors held at the gate")
            stopping = asyncio.ensure_future(first.stop())
            await _bounded(draining.wait(), "the producer told to drain")
            gate.open()
            await _bounded(stopping, "the first pipeline stopped")
            handled = set(first.handled)
            left = await harness.outstanding()
            # Everything handled was acknowledged; the rest is still on the broker.
            assert len(first.handled) == len(handled) and len(handled) == n - left
            assert left > 0 and await harness.unacked() <= left

            second = self.subject(harness)
            await second.start(node)
            await self.all_acknowledged(harness)
            await second.stop()
            assert handled | set(second.handled) == set(payloads)

    async def test_a_new_pipeline_gets_what_a_stopped_one_took_and_never_acknowledged(
        self, harness: BrokerHarness
    ) -> None:
        if not harness.redelivers_abandoned:
            pytest.skip(f"the {harness.name} producer does not redeliver abandoned messages")
        payloads = _payloads(50)
        async with harness, Node() as node:
            await harness.publish(payloads)
            stuck = self.subject(harness, shutdown_timeout=0.1)
            stuck.gate = Gate()  # never opened: the handler never returns
            await stuck.start(node)
            await _bounded(stuck.gate.wait_blocked(2), "both processors held at the gate")

            async def taken() -> bool:
                return await harness.unacked() > 0

            await eventually(taken, "messages taken by the stuck pipeline")
            await stuck.stop()  # the drain times out; the stages stop with messages in flight
            assert stuck.handled == [] and await harness.outstanding() == 50

            second = self.subject(harness)
            await second.start(node)
            await self.all_acknowledged(harness)
            await second.stop()
            assert sorted(second.handled) == sorted(payloads)

    async def test_a_lost_connection_ends_the_stage_its_supervisor_restarts_it_nothing_lost(
        self, harness: BrokerHarness
    ) -> None:
        # The outage rule's second half: a broker gone while the stage runs ends the stage
        # with ConnectionError; its supervisor starts it again, and every message is handled
        # (at least once: those taken but not acknowledged come back).
        exits: list[CrashReport] = []

        def record(event: object, measurements: object, metadata: Any, config: object) -> None:
            exits.append(metadata["report"])

        payloads = [b"lost-%d" % i for i in range(40)]
        async with harness, Node() as node:
            pipeline = self.subject(harness, processors=1)
            telemetry.attach("conformance-lost", ("corral", "supervisor", "child_exited"), record)
            try:
                await harness.publish(payloads[:20])
                await pipeline.start(node)

                async def some_handled() -> bool:
                    return len(pipeline.handled) >= 5

                await eventually(some_handled, "messages handled before the outage")
                if not await harness.lose_connections():
                    await pipeline.stop()
                    pytest.skip(f"the {harness.name} producer has no broker")

                async def restarted() -> bool:
                    return any(isinstance(r.reason, ConnectionError) for r in exits)

                await eventually(restarted, "the producer stage ended and restarted")
                await harness.publish(payloads[20:])
                await self.all_acknowledged(harness)
                await pipeline.stop()
            finally:
                telemetry.detach("conformance-lost")
        assert set(pipeline.handled) == set(payloads)
        reasons = [report.reason for report in exits]
        assert any(isinstance(r, ConnectionError) for r in reasons), reasons

    async def test_an_unreachable_broker_is_tried_for_timeout_then_fails_the_start_naming_it(
        self, harness: BrokerHarness
    ) -> None:
        from servers.common import free_port

        timeout = 1.0
        producer = harness.unreachable_options(f"127.0.0.1:{free_port()}", timeout)
        if producer is None:
            pytest.skip(f"the {harness.name} producer has no broker")
        pipeline = Pipeline(name=f"conformance-{harness.name}-unreachable", producer=producer)
        async with Node() as node:
            loop = asyncio.get_running_loop()
            began = loop.time()
            with pytest.raises(StartError) as info:
                await pipeline.start(node)
            took = loop.time() - began
        cause: BaseException | None = info.value
        while isinstance(cause, StartError):  # pipeline supervisor -> producers -> the stage
            cause = cause.__cause__
        assert isinstance(cause, ConnectionError), repr(cause)
        text = str(cause)
        assert "cannot connect to " in text and "://user:******@127.0.0.1:" in text, text
        assert "secret" not in text
        assert timeout <= took < timeout + 5.0, took
