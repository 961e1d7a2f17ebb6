"""The RabbitMQ producer: consume one queue with aio-pika, ack or reject each message.

Select it with ``producer={"module": "rabbitmq", "options": {"url": ..., "queue": ...}}``
(or the module path ``corral.pipeline.producers.rabbitmq``); it needs the ``rabbitmq``
extra (``aio-pika``). This module is the only one that imports ``aio_pika``, and only when
a producer stage starts.

How it maps onto AMQP 0-9-1:

- Each producer stage opens one connection and one channel, then (``create=True``)
  declares the queue durable, or checks passively that it exists.
- On its first demand it sets ``basic.qos(prefetch_count=...)`` and starts consuming
  (``basic.consume``, manual acks). The broker pushes at most that many unacknowledged
  messages; the stage buffers those that arrive before processors ask for them, so its
  memory is bounded by the prefetch. With ``prefetch`` set, that is the one consumer's
  limit. Without it, the limit follows demand: RabbitMQ applies a consumer's prefetch
  when it starts consuming and never changes it, so the stage adds a consumer (with the
  shortfall as its prefetch) when the unacknowledged messages plus those it owes outgrow
  the sum of its consumers' prefetch. The broker then never holds more unacknowledged for
  the stage than the pipeline asked for, plus less than one first demand.
- Each message carries the delivery tag as ``ack_data`` and the channel's
  ``RabbitMQAcknowledger``: success is ``basic.ack``, failure ``basic.reject`` with
  ``requeue`` false (``on_failure="reject"``: dropped, or dead-lettered when the queue has
  an ``x-dead-letter-exchange``) or true (``on_failure="requeue"``: delivered again).
- Draining cancels the consumers (``basic.cancel``), gives back the buffered messages that
  no processor asked for (``basic.reject`` with requeue), and keeps the channel open so
  that the messages in flight are acknowledged; ``terminate`` closes the connection. Each of
  those broker calls runs within ``timeout`` through ``stopping.call_within``, which does not
  rely on aiormq heeding a cancel (it can lose one: see ``corral.pipeline.producers.stopping``).
- A connection or channel the broker closes (or that is lost) ends the stage with a
  ``ConnectionError``; its supervisor restarts it with a new connection. The broker
  delivers the unacknowledged messages again: at-least-once. Acks for messages of a
  closed channel are dropped with a warning (delivery tags belong to their channel).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from corral._extras import require
from corral._options import Options, is_number, one_of, option
from corral.pipeline.message import Message
from corral.pipeline.producer import Producer, ProducerContext
from corral.pipeline.producers._broker import BrokerStage, connect_with_retry, redact
from corral.pipeline.producers.stopping import call_within
from corral.runtime import ExitReason

if TYPE_CHECKING:
    import aio_pika
    import aio_pika.abc
    import aiormq.abc

__all__ = ["PRODUCER", "RabbitMQAcknowledger", "RabbitMQOptions", "RabbitMQProducer", "redact"]

logger = logging.getLogger("corral.pipeline")

MAX_PREFETCH: Final = 65_535
"""AMQP's prefetch_count is a 16-bit field."""

MAX_CONSUMERS: Final = 32
"""With ``prefetch=None``, the most consumers one stage adds as its demand grows."""


def _is_url(value: object) -> bool:
    return type(value) is str and value.startswith(("amqp://", "amqps://"))


def _is_name(value: object) -> bool:
    return type(value) is str and bool(value)


def _is_prefetch(value: object) -> bool:
    return value is None or (type(value) is int and 1 <= value <= MAX_PREFETCH)


def _is_arguments(value: object) -> bool:
    return value is None or (
        isinstance(value, Mapping) and all(type(k) is str and k for k in value)
    )


@dataclass(frozen=True, kw_only=True)
class RabbitMQOptions(Options):
    """``producer.options`` of the RabbitMQ producer."""

    _what = "pipeline"

    url: str = option(
        "amqp://guest:guest@localhost:5672/",
        doc="The broker's AMQP URL (amqp:// or amqps://, with user, password and vhost).",
        rule="an amqp:// or amqps:// URL",
        check=_is_url,
    )
    queue: str = option(
        None,
        doc="The queue to consume (required).",
        rule="a non-empty str",
        check=_is_name,
    )
    prefetch: int | None = option(
        None,
        doc="basic.qos prefetch_count: the most unacknowledged messages the broker hands this "
        "stage (one consumer). None: follow the demand: the stage starts one consumer with "
        "its first demand as prefetch, and adds a consumer whenever the messages it has in "
        "flight plus those it owes outgrow the consumers' prefetch (by that shortfall, at "
        "least the first prefetch; at most 32 consumers).",
        rule="None or an int from 1 to 65535",
        check=_is_prefetch,
    )
    create: bool = option(
        False,
        doc="Create the queue (declare it durable) if missing; False: it must exist (checked "
        "passively), or the stage fails to start naming it. 'declare', its old name, is "
        "still read, with a DeprecationWarning.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    queue_arguments: Mapping[str, object] | None = option(
        None,
        doc="Arguments of the created queue (x-dead-letter-exchange, x-queue-type...); "
        "only with create=True.",
        rule="None or a mapping with str keys",
        check=_is_arguments,
    )
    on_failure: str = option(
        "reject",
        doc="What a failed message becomes: 'reject' (basic.reject without requeue: dropped, "
        "or dead-lettered when the queue has an x-dead-letter-exchange) or 'requeue' "
        "(delivered again).",
        rule="'reject' or 'requeue'",
        check=one_of("reject", "requeue"),
    )
    consumer_tag: str | None = option(
        None,
        doc="The consumer tag; None: a generated one. With producer.concurrency > 1 each "
        "stage appends '.<index>'.",
        rule="None or a non-empty str",
        check=lambda v: v is None or _is_name(v),
    )
    timeout: float = option(
        10.0,
        doc="Seconds a stage may take to connect (it tries every 0.25 s, so a stage restarted "
        "while its broker restarts waits for it) and each broker operation (declare, qos, "
        "consume, cancel, close) may take before the stage fails.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )


class RabbitMQAcknowledger:
    """Acks (``basic.ack``) and rejects (``basic.reject``) messages of one channel by the
    delivery tag in their ``ack_data``; ``settled`` counts the messages it has answered.

    ``ack`` waits until the frames are written to the socket, not for the broker. If the
    channel has closed, the messages cannot be acknowledged any more (the broker delivers
    them again): ``ack`` logs a warning and returns.
    """

    __slots__ = ("_channel", "_requeue", "_where", "settled")

    def __init__(self, channel: aiormq.abc.AbstractChannel, *, requeue: bool, where: str) -> None:
        self._channel = channel
        self._requeue = requeue
        self._where = where
        self.settled = 0

    def __repr__(self) -> str:
        return f"<RabbitMQAcknowledger {self._where} channel {self._channel.number}>"

    async def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        """Ack ``successful`` and reject ``failed`` (requeued per ``on_failure``)."""
        await self.settle(successful, failed, requeue=self._requeue)

    async def settle(
        self, successful: Sequence[Message], failed: Sequence[Message], *, requeue: bool
    ) -> None:
        """Ack ``successful``, reject ``failed`` with ``requeue``."""
        from aiormq.exceptions import AMQPError, ChannelInvalidStateError

        channel = self._channel
        count = len(successful) + len(failed)
        self.settled += count
        try:
            # Frames go out in order through one queue: waiting for the last one to be
            # written means every earlier one was.
            last = count - 1
            for i, m in enumerate(successful):
                await channel.basic_ack(_tag(m), wait=i == last)
            for i, m in enumerate(failed, len(successful)):
                await channel.basic_reject(_tag(m), requeue=requeue, wait=i == last)
        except (AMQPError, ChannelInvalidStateError, ConnectionError) as exc:
            logger.warning(
                "%s: %d messages not acknowledged, their channel is closed (%r); "
                "the broker delivers them again",
                self._where,
                count,
                exc,
            )


async def _cancel_consumers(queue: aio_pika.abc.AbstractQueue, tags: Sequence[str]) -> None:
    for tag in tags:
        await queue.cancel(tag)


def _tag(message: Message) -> int:
    tag = message.ack_data
    if type(tag) is not int:
        raise TypeError(
            f"RabbitMQAcknowledger.ack: ack_data must be the int delivery tag; got {tag!r}"
        )
    return tag


class RabbitMQProducer(Producer):
    """Consumes ``options.queue``; see the module docstring."""

    options_type = RabbitMQOptions

    def __init__(self, options: object, context: ProducerContext) -> None:
        super().__init__(options, context)
        if not isinstance(options, RabbitMQOptions):
            raise TypeError(f"RabbitMQProducer: options must be RabbitMQOptions; got {options!r}")
        self._opts = options
        self._where = (
            f"RabbitMQ producer (pipeline '{context.pipeline}' producer {context.index}, "
            f"queue '{options.queue}')"
        )
        self.connection_name = f"corral {context.pipeline} producer {context.index}"
        """The name the broker shows for this stage's connection (``connection_name``)."""
        self._owed = 0
        self._buffer: deque[Message] = deque()
        self._delivered = 0
        self._flush_scheduled = False
        self._draining = False
        self._stage = BrokerStage(
            self._where, "the broker delivers its unacknowledged messages again"
        )
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._acknowledger: RabbitMQAcknowledger | None = None
        self._consumer_tags: list[str] = []
        self.prefetch: list[int] = []
        """The prefetch_count of each of this stage's consumers, in the order they started."""

    @classmethod
    def parse_options(cls, data: Mapping[str, object], path: str) -> object:
        if isinstance(data, Mapping) and "declare" in data:
            if "create" in data:
                raise ValueError(
                    f"invalid options for pipeline: {path}declare is the old name of "
                    f"{path}create; give only create"
                )
            warnings.warn(
                f"{path}declare is now {path}create (the same name for every broker)",
                DeprecationWarning,
                stacklevel=2,
            )
            data = {("create" if k == "declare" else k): v for k, v in data.items()}
        options = super().parse_options(data, path)
        assert isinstance(options, RabbitMQOptions)
        if options.queue_arguments is not None and not options.create:
            raise ValueError(
                f"invalid options for pipeline: {path}queue_arguments needs {path}create=True "
                f"(a queue that exists keeps its own arguments); "
                f"got {dict(options.queue_arguments)!r}"
            )
        return options

    # -- hooks -------------------------------------------------------------------------------

    async def init(self) -> None:
        require("aio_pika", extra="rabbitmq", by=self._where)
        import aio_pika
        import aiormq.exceptions

        opts = self._opts
        self._stage.bind()

        async def connect() -> aio_pika.abc.AbstractConnection:
            return await aio_pika.connect(
                opts.url, client_properties={"connection_name": self.connection_name}
            )

        try:
            connection = await connect_with_retry(
                connect,
                timeout=opts.timeout,
                retry_on=(OSError, aiormq.exceptions.AMQPConnectionError),
                fatal=(aiormq.exceptions.AuthenticationError,),
                where=self._where,
                url=opts.url,
            )
        except aiormq.exceptions.AuthenticationError as exc:  # not retried
            raise ConnectionError(
                f"{self._where}: cannot connect to {redact(opts.url)}: {exc!r}"
            ) from exc
        self._connection = connection
        try:
            async with asyncio.timeout(opts.timeout):
                channel = self._channel = await connection.channel()
                self._queue = await self._declare(channel)
            # Watch only once set up: a failed passive declare closes the channel on purpose.
            connection.close_callbacks.add(self._on_closed)
            channel.close_callbacks.add(self._on_closed)
            underlay = await channel.get_underlay_channel()
            # aiormq >= 6.9 tells of a broker's basic.cancel (the queue was deleted, say).
            cancel_callbacks = getattr(underlay, "on_consumer_cancel_callbacks", None)
            if cancel_callbacks is not None:
                cancel_callbacks.add(self._on_cancelled)
            self._acknowledger = RabbitMQAcknowledger(
                underlay,
                requeue=opts.on_failure == "requeue",
                where=self._where,
            )
        except BaseException:
            await self.terminate("init failed")
            raise

    async def handle_demand(self, demand: int) -> list[Message]:
        self._owed += demand
        taken = self._take()
        if not self._draining:
            await self._ensure_allowance()
        return taken

    async def prepare_for_draining(self) -> None:
        self._draining = True
        self._owed = 0
        tags, self._consumer_tags = self._consumer_tags, []
        queue = self._queue
        if tags and queue is not None:
            from aiormq.exceptions import AMQPError, ChannelInvalidStateError

            try:
                await call_within(
                    _cancel_consumers(queue, tags), timeout=self._opts.timeout, where=self._where
                )
            except (AMQPError, ChannelInvalidStateError, ConnectionError, TimeoutError) as exc:
                logger.warning("%s: basic.cancel failed while draining: %r", self._where, exc)
        buffered = list(self._buffer)
        self._buffer.clear()
        await self._give_back(buffered)

    async def terminate(self, reason: ExitReason) -> None:
        from aiormq.exceptions import AMQPError, ChannelInvalidStateError

        self._stage.closing = True
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            await call_within(connection.close(), timeout=self._opts.timeout, where=self._where)
        except (AMQPError, ChannelInvalidStateError, OSError, TimeoutError) as exc:
            logger.warning("%s: closing the connection failed: %r", self._where, exc)

    # -- internals ---------------------------------------------------------------------------

    async def _declare(self, channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractQueue:
        import aiormq.exceptions

        opts = self._opts
        if opts.create:
            arguments = None if opts.queue_arguments is None else dict(opts.queue_arguments)
            return await channel.declare_queue(
                opts.queue,
                durable=True,
                arguments=arguments,  # type: ignore[arg-type]
            )
        try:
            return await channel.declare_queue(opts.queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise ValueError(
                f"{self._where}: queue '{opts.queue}' does not exist on {redact(opts.url)}; "
                "create it, or set producer.options.create=True"
            ) from exc

    async def _ensure_allowance(self) -> None:
        """Let the broker send what is owed: start a consumer, or (prefetch None) add one
        when the consumers' prefetch no longer covers the unacknowledged plus the owed."""
        fixed = self._opts.prefetch
        if fixed is not None:
            if not self._consumer_tags:
                await self._add_consumer(fixed)
            return
        assert self._acknowledger is not None
        unsettled = self._delivered - self._acknowledger.settled
        required = unsettled + self._owed - len(self._buffer)
        allowance = sum(self.prefetch)
        if required <= allowance or len(self._consumer_tags) >= MAX_CONSUMERS:
            return
        # Grow by the shortfall, or by the first consumer's prefetch (one processor's
        # max_demand) when that is more: the allowance stays within one demand of the need.
        step = max(required - allowance, self.prefetch[0] if self.prefetch else 0)
        await self._add_consumer(min(step, MAX_PREFETCH))

    async def _add_consumer(self, prefetch: int) -> None:
        queue = self._queue
        channel = self._channel
        assert queue is not None and channel is not None
        tag = self._opts.consumer_tag
        if tag is not None:
            n = len(self._consumer_tags)
            tag += "".join(f".{i}" for i in (self.context.index, n) if i)
        async with asyncio.timeout(self._opts.timeout):
            # basic.qos (per consumer) applies to the consumers started after it.
            await channel.set_qos(prefetch_count=prefetch)
            self._consumer_tags.append(await queue.consume(self._on_delivery, consumer_tag=tag))
        self.prefetch.append(prefetch)

    async def _on_delivery(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> None:
        """A delivery (in a task aio-pika makes for it): buffer it and emit what is owed."""
        self._delivered += 1
        message = self._message(incoming)
        if self._draining or self._stage.closing:
            await self._give_back([message])
            return
        self._buffer.append(message)
        if self._owed and not self._flush_scheduled:
            # Deliveries arrive in bursts, each in its own task: emit once per burst.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._draining or self._stage.closing or not self.context.alive:
            return
        taken = self._take()
        if taken:
            self.context.emit(taken)

    def _take(self) -> list[Message]:
        n = min(self._owed, len(self._buffer))
        if not n:
            return []
        buffer = self._buffer
        taken = [buffer.popleft() for _ in range(n)]
        self._owed -= n
        return taken

    def _message(self, incoming: aio_pika.abc.AbstractIncomingMessage) -> Message:
        metadata = MappingProxyType(
            {
                "delivery_tag": incoming.delivery_tag,
                "redelivered": incoming.redelivered,
                "exchange": incoming.exchange,
                "routing_key": incoming.routing_key,
                "headers": incoming.headers,
                "content_type": incoming.content_type,
                "content_encoding": incoming.content_encoding,
                "message_id": incoming.message_id,
                "correlation_id": incoming.correlation_id,
                "timestamp": incoming.timestamp,
            }
        )
        assert self._acknowledger is not None
        return Message(incoming.body, metadata, self._acknowledger, incoming.delivery_tag)

    async def _give_back(self, messages: Sequence[Message]) -> None:
        """Requeue messages that no processor will see (the stage is draining)."""
        if messages and self._acknowledger is not None:
            await self._acknowledger.settle([], messages, requeue=True)

    def _on_closed(self, sender: object, exc: BaseException | None) -> None:
        """The connection or channel closed (aio-pika's close callback)."""
        what = "connection" if sender is self._connection else "channel"
        self._stage.fail(f"the {what} to {redact(self._opts.url)} closed: {exc!r}")

    def _on_cancelled(self, frame: object) -> None:
        """The broker cancelled a consumer (aiormq's consumer-cancel callback)."""
        tag = getattr(frame, "consumer_tag", None)
        if tag in self._consumer_tags:
            self._stage.fail(f"the broker cancelled consumer {tag!r} (was the queue deleted?)")


PRODUCER: Final = RabbitMQProducer
