"""The NATS JetStream producer: pull from a durable consumer, ack / nak / term each message.

Select it with ``producer={"module": "nats", "options": {"url": ..., "stream": ...,
"durable": ...}}`` (or the module path ``corral.pipeline.producers.nats``); it needs the
``nats`` extra (``nats-py``). This module is the only one that imports ``nats``, and only
when a producer stage starts.

How it maps onto JetStream:

- Each producer stage opens one connection (no automatic reconnect) and binds a pull
  subscription to the durable consumer ``durable`` of ``stream``. With ``create=True`` it
  first creates the stream (subjects ``[subject]``) and the consumer (explicit acks,
  ``ack_wait``, ``max_deliver``, filter ``subject``) when they do not exist; without it, both
  must exist.
- Demand is pulled, never pushed: a fetch loop (a task the producer owns, started on the
  first demand) asks for ``fetch(batch=min(owed, max_batch), timeout=fetch_timeout)`` while
  the stage owes messages and waits otherwise. So the messages taken and not acknowledged are
  at most what the processors asked for.
- Each message carries its JetStream ``Msg`` as ``ack_data`` and the stage's
  ``NatsAcknowledger``: success is an ack; failure is ``nak`` (delivered again, after
  ``nak_delay`` seconds when set, up to the consumer's ``max_deliver`` deliveries) or
  ``term`` (never again), per ``on_failure``.
- Draining stops the fetch loop (after the fetch in progress, at most ``fetch_timeout``
  seconds; past ``fetch_timeout + timeout`` it is cancelled again and again, for at most
  ``STOP_TIMEOUT`` seconds, since nats-py can lose a cancel: see
  ``corral.pipeline.producers.stopping``) and naks what it fetched after the drain began, so
  that those come back at once;
  the connection stays open while the messages in flight are acknowledged. ``terminate``
  naks the messages still unacknowledged (a drain that timed out, a crash), then closes the
  connection: they come back without waiting for ``ack_wait``.
- A lost connection, or a fetch that fails, ends the stage with a ``ConnectionError``; its
  supervisor restarts it. JetStream delivers the unacknowledged messages again after
  ``ack_wait``: at-least-once. Acks of messages of a closed connection are dropped with a
  warning.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from corral._extras import require
from corral._options import Options, is_int, is_number, one_of, option
from corral.pipeline.message import Message
from corral.pipeline.producer import Producer, ProducerContext
from corral.pipeline.producers._broker import (
    CONNECT_RETRY,
    BrokerStage,
    Demand,
    connect_with_retry,
    redact,
)
from corral.pipeline.producers.stopping import call_within, check_cancelled, stop_task
from corral.runtime import ExitReason

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

__all__ = ["PRODUCER", "NatsAcknowledger", "NatsOptions", "NatsProducer"]

logger = logging.getLogger("corral.pipeline")

_NAME_CHARS = frozenset(".*> \t")


def _is_url(value: object) -> bool:
    return type(value) is str and value.startswith(("nats://", "tls://"))


def _is_name(value: object) -> bool:
    """A stream or consumer name: non-empty, no '.', '*', '>' or whitespace."""
    return type(value) is str and bool(value) and not (_NAME_CHARS & set(value))


def _is_subject(value: object) -> bool:
    return value is None or (type(value) is str and bool(value) and " " not in value)


def _is_seconds_or_none(value: object) -> bool:
    return value is None or is_number(0, strict=True)(value)


@dataclass(frozen=True, kw_only=True)
class NatsOptions(Options):
    """``producer.options`` of the NATS JetStream producer."""

    _what = "pipeline"

    url: str = option(
        "nats://localhost:4222",
        doc="The server's URL (nats:// or tls://, credentials in it if any).",
        rule="a nats:// or tls:// URL",
        check=_is_url,
    )
    stream: str = option(
        None,
        doc="The JetStream stream (required).",
        rule="a stream name (non-empty, without '.', '*', '>' or spaces)",
        check=_is_name,
    )
    durable: str = option(
        None,
        doc="The durable pull consumer's name (required); stages and restarts share it.",
        rule="a consumer name (non-empty, without '.', '*', '>' or spaces)",
        check=_is_name,
    )
    subject: str | None = option(
        None,
        doc="The consumer's filter subject, and the stream's subject when create=True makes "
        "the stream; None: the whole stream.",
        rule="None or a subject (non-empty, no spaces)",
        check=_is_subject,
    )
    create: bool = option(
        False,
        doc="Create the stream (file storage, subjects [subject]) and the consumer when they "
        "do not exist; otherwise both must exist.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    ack_wait: float | None = option(
        None,
        doc="Seconds JetStream waits for an ack before it delivers a message again (consumer "
        "config, when create=True makes the consumer); None: the server's default (30 s).",
        rule="None or a number > 0",
        check=_is_seconds_or_none,
    )
    max_deliver: int | None = option(
        None,
        doc="The most deliveries of one message (consumer config, when create=True makes "
        "the consumer); None: unlimited.",
        rule="None or an int >= 1",
        check=lambda v: v is None or is_int(1)(v),
    )
    on_failure: str = option(
        "term",
        doc="What a failed message becomes: 'nak' (delivered again, after nak_delay, until "
        "max_deliver) or 'term' (never delivered again).",
        rule="'nak' or 'term'",
        check=one_of("nak", "term"),
    )
    nak_delay: float | None = option(
        None,
        doc="Seconds JetStream waits before delivering a nak'd message again; None: at once. "
        "Only with on_failure='nak'.",
        rule="None or a number > 0",
        check=_is_seconds_or_none,
    )
    max_batch: int = option(
        256,
        doc="The most messages one fetch asks for (a fetch asks for what the stage owes, up "
        "to this).",
        rule="an int >= 1",
        check=is_int(1),
    )
    fetch_timeout: float = option(
        1.0,
        doc="Seconds one fetch waits for messages (a long poll); also the longest a drain "
        "waits for the fetch in progress.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    timeout: float = option(
        10.0,
        doc="Seconds a stage may take to connect (it tries every 0.25 s, so a stage restarted "
        "while its server restarts waits for it) and each JetStream API call may take.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )


class NatsAcknowledger:
    """Acks, naks or terms the JetStream messages (``ack_data``) of one stage's connection.

    ``ack`` publishes without waiting for the server (the connection flushes them); if the
    connection has closed, it logs a warning and returns: JetStream delivers those messages
    again after ``ack_wait``.
    """

    __slots__ = ("_nak_delay", "_term", "_unsettled", "_where")

    def __init__(self, *, term: bool, nak_delay: float | None, where: str) -> None:
        self._term = term
        self._nak_delay = nak_delay
        self._where = where
        self._unsettled: dict[int, Msg] = {}

    def __repr__(self) -> str:
        return f"<NatsAcknowledger {self._where}>"

    def delivered(self, msg: Msg) -> None:
        """Track ``msg`` until it is settled (``unsettled``)."""
        self._unsettled[id(msg)] = msg

    @property
    def unsettled(self) -> list[Msg]:
        """The messages delivered to this stage and not acked, nak'd or termed yet."""
        return list(self._unsettled.values())

    async def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        """Ack ``successful``; nak or term ``failed`` per ``on_failure``."""
        await self.settle(
            [_msg(m) for m in successful],
            [_msg(m) for m in failed],
            term=self._term,
            nak_delay=self._nak_delay,
        )

    async def settle(
        self, ok: Sequence[Msg], bad: Sequence[Msg], *, term: bool, nak_delay: float | None
    ) -> None:
        """Ack ``ok``; term ``bad``, or nak them (after ``nak_delay`` seconds)."""
        from nats.errors import Error as NatsError

        unsettled = self._unsettled
        for msg in (*ok, *bad):
            unsettled.pop(id(msg), None)
        try:
            for msg in ok:
                await msg.ack()
            for msg in bad:
                if term:
                    await msg.term()
                else:
                    await msg.nak(delay=nak_delay)
        except NatsError as exc:
            logger.warning(
                "%s: %d messages not acknowledged (%r); JetStream delivers them again "
                "after ack_wait",
                self._where,
                len(ok) + len(bad),
                exc,
            )


def _msg(message: Message) -> Msg:
    from nats.aio.msg import Msg

    msg = message.ack_data
    if not isinstance(msg, Msg):
        raise TypeError(f"NatsAcknowledger.ack: ack_data must be a nats Msg; got {msg!r}")
    return msg


class NatsProducer(Producer):
    """Pulls from a JetStream durable consumer; see the module docstring."""

    options_type = NatsOptions

    def __init__(self, options: object, context: ProducerContext) -> None:
        super().__init__(options, context)
        if not isinstance(options, NatsOptions):
            raise TypeError(f"NatsProducer: options must be NatsOptions; got {options!r}")
        self._opts = options
        self._where = (
            f"NATS producer (pipeline '{context.pipeline}' producer {context.index}, "
            f"stream '{options.stream}' consumer '{options.durable}')"
        )
        self._demand = Demand()
        self._stage = BrokerStage(
            self._where, "JetStream delivers its unacknowledged messages again"
        )
        self._client: Client | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._acknowledger = NatsAcknowledger(
            term=options.on_failure == "term", nak_delay=options.nak_delay, where=self._where
        )
        self._fetcher: asyncio.Task[None] | None = None
        self._connect_error: Exception | None = None
        self._spare: list[Msg] = []

    @classmethod
    def parse_options(cls, data: Mapping[str, object], path: str) -> object:
        options = super().parse_options(data, path)
        assert isinstance(options, NatsOptions)
        if options.nak_delay is not None and options.on_failure != "nak":
            raise ValueError(
                f"invalid options for pipeline: {path}nak_delay needs {path}on_failure='nak'; "
                f"got on_failure={options.on_failure!r}"
            )
        if options.create and options.subject is None:
            raise ValueError(
                f"invalid options for pipeline: {path}create=True needs {path}subject "
                "(the subject of the stream it creates)"
            )
        return options

    # -- hooks -------------------------------------------------------------------------------

    async def init(self) -> None:
        require("nats", extra="nats", by=self._where)
        import nats
        import nats.errors

        opts = self._opts
        self._stage.bind()

        async def connect() -> Client:
            return await nats.connect(
                opts.url,
                allow_reconnect=False,
                connect_timeout=opts.timeout,
                # nats-py tries every CONNECT_RETRY seconds itself (0 attempts would mean:
                # try forever); connect_with_retry bounds it by timeout and tries again.
                max_reconnect_attempts=max(1, int(opts.timeout / CONNECT_RETRY)),
                reconnect_time_wait=CONNECT_RETRY,
                closed_cb=self._on_closed,
                error_cb=self._on_error,
                name=f"corral {self.context.pipeline} producer {self.context.index}",
            )

        client = await connect_with_retry(
            connect,
            timeout=opts.timeout,
            retry_on=(OSError, nats.errors.Error),
            where=self._where,
            url=opts.url,
            last_error=lambda: self._connect_error,
        )
        self._client = client
        try:
            js = client.jetstream(timeout=opts.timeout)
            if opts.create:
                await self._create(js)
            await self._check_exists(js)
            self._subscription = await js.pull_subscribe_bind(
                durable=opts.durable, stream=opts.stream
            )
        except BaseException:
            await self.terminate("init failed")
            raise

    def handle_demand(self, demand: int) -> list[Message]:
        self._demand.add(demand)
        if self._fetcher is None and not self._demand.stopping:
            self._fetcher = asyncio.get_running_loop().create_task(
                self._fetch_loop(), name=f"{self._where} fetch"
            )
        return []

    async def prepare_for_draining(self) -> None:
        self._demand.stop()
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            # The fetch in progress ends within fetch_timeout; what it got is nak'd. A fetcher
            # that outlives the grace and STOP_TIMEOUT of cancels is left, logged.
            grace = self._opts.fetch_timeout + self._opts.timeout
            await stop_task(fetcher, where=self._where, grace=grace)
        spare, self._spare = self._spare, []
        await self._give_back(spare)

    async def terminate(self, reason: ExitReason) -> None:
        self._stage.closing = True
        self._demand.stop()
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            await stop_task(fetcher, where=self._where)
        client, self._client = self._client, None
        if client is None or client.is_closed:
            return
        await self._give_back(self._acknowledger.unsettled)
        try:
            await call_within(self._close(client), timeout=self._opts.timeout, where=self._where)
        except Exception as exc:
            logger.warning("%s: closing the connection failed: %r", self._where, exc)

    # -- internals ---------------------------------------------------------------------------

    @staticmethod
    async def _close(client: Client) -> None:
        await client.flush()
        await client.close()

    async def _create(self, js: JetStreamContext) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig
        from nats.js.errors import NotFoundError

        opts = self._opts
        assert opts.subject is not None
        try:
            await js.stream_info(opts.stream)
        except NotFoundError:
            await js.add_stream(name=opts.stream, subjects=[opts.subject])
        try:
            await js.consumer_info(opts.stream, opts.durable)
        except NotFoundError:
            await js.add_consumer(
                opts.stream,
                ConsumerConfig(
                    durable_name=opts.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=opts.ack_wait,
                    max_deliver=opts.max_deliver,
                    filter_subject=opts.subject,
                ),
            )

    async def _check_exists(self, js: JetStreamContext) -> None:
        from nats.js.errors import NotFoundError

        opts = self._opts
        try:
            await js.stream_info(opts.stream)
        except NotFoundError as exc:
            raise ValueError(
                f"{self._where}: stream '{opts.stream}' does not exist on "
                f"{redact(opts.url)}; create it, or set producer.options.create=True"
            ) from exc
        try:
            await js.consumer_info(opts.stream, opts.durable)
        except NotFoundError as exc:
            raise ValueError(
                f"{self._where}: consumer '{opts.durable}' of stream '{opts.stream}' does not "
                "exist; create it, or set producer.options.create=True"
            ) from exc

    async def _fetch_loop(self) -> None:
        """Fetch what the stage owes, emit it; wait while it owes nothing. Ends the stage
        when a fetch fails (in this task, which the producer owns)."""
        import nats.errors

        opts = self._opts
        subscription = self._subscription
        demand = self._demand
        assert subscription is not None
        try:
            while (owed := await demand.wanted()) > 0:
                if not self._spare:
                    try:
                        fetched = await subscription.fetch(
                            batch=min(owed, opts.max_batch), timeout=opts.fetch_timeout
                        )
                    except nats.errors.TimeoutError:
                        check_cancelled()
                        continue
                    for msg in fetched:
                        self._acknowledger.delivered(msg)  # terminate naks them if need be
                    check_cancelled()
                    if demand.stopping or not self.context.alive:
                        await self._give_back(fetched)
                        return
                    # A fetch also hands over what earlier fetches' pull requests brought
                    # after they timed out, possibly more than asked: keep the surplus.
                    self._spare.extend(fetched)
                msgs = self._spare[: demand.owed]
                del self._spare[: len(msgs)]
                demand.emitted(len(msgs))
                self.context.emit([self._message(m) for m in msgs])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stage.fail(f"a fetch failed: {exc!r} ({redact(opts.url)})")

    def _message(self, msg: Msg) -> Message:
        meta = msg.metadata
        metadata = MappingProxyType(
            {
                "subject": msg.subject,
                "headers": msg.headers,
                "stream_sequence": meta.sequence.stream,
                "consumer_sequence": meta.sequence.consumer,
                "num_delivered": meta.num_delivered,
                "num_pending": meta.num_pending,
                "timestamp": meta.timestamp,
            }
        )
        return Message(msg.data, metadata, self._acknowledger, msg)

    async def _give_back(self, msgs: Sequence[Msg]) -> None:
        """Nak (at once) messages no processor will finish: they come back right away."""
        if msgs:
            await self._acknowledger.settle([], msgs, term=False, nak_delay=None)

    async def _on_closed(self) -> None:
        """nats-py's closed callback: the connection is gone for good."""
        self._stage.fail(f"the connection closed ({redact(self._opts.url)})")

    async def _on_error(self, exc: Exception) -> None:
        """nats-py's error callback (a protocol or socket error; a close follows). While
        connecting, the failed attempts are not logged: init raises with the last one."""
        if self._client is not None:
            logger.warning("%s: %r", self._where, exc)
        else:
            self._connect_error = exc


PRODUCER: Final = NatsProducer
