"""The Redis Streams producer: a consumer group, XREADGROUP for demand, XACK for acks.

Select it with::

    producer={
        "module": "redis_streams",
        "options": {"url": "redis://localhost:6379/0", "stream": "events", "group": "features"},
    }

This is the one module that imports ``redis`` (redis-py, ``pip install 'corral[redis]'``),
lazily, when a producer stage starts.

How it maps Broadway's contract onto Redis:

- **start** (``init``, in the producer stage's task): connect, then ``XGROUP CREATE stream
  group <start_id> MKSTREAM`` unless the group exists.
- **demand**: ``handle_demand`` adds to what the producer owes and wakes its fetch task, a
  task the producer owns (started in ``init``, ended by ``prepare_for_draining`` or
  ``terminate``). The fetch task reads ``XREADGROUP ... COUNT min(owed, count)`` and emits
  what it got with ``context.emit``; it never has more than the owed demand outstanding.
  First it reads this consumer's own pending entries (``XREADGROUP ... 0``): what a
  previous run under the same consumer name took and never acknowledged. Then new entries
  (``>``) with ``BLOCK`` of at most ``block`` seconds.
- **reclaim**: every ``claim_idle`` seconds (while it owes demand) it runs ``XAUTOCLAIM``
  over the group's pending entries idle longer than ``claim_idle``: the work of a consumer
  that died (or failed messages kept pending) comes back through a live one.
- **ack** (``RedisStreamsAcknowledger.ack``, in the task of the stage that ended the
  messages): one ``XACK`` for all the successful ones of the call. Failed ones by
  ``on_failure``: ``"ack"`` acknowledges them too (dropped), ``"keep_pending"`` leaves them
  in the group's pending list (delivered again once ``claim_idle`` passes), and
  ``"dead_letter"`` adds each to ``dead_letter_stream`` and acknowledges it, in one
  ``MULTI``/``EXEC``, so a message is never both dead-lettered and left pending.
- **drain** (``prepare_for_draining``): the fetch task is told to stop and cancelled at once
  (a read in flight is abandoned: what it took stays pending and is delivered again); owed
  demand is forgiven. redis-py can lose a cancel (see ``corral.pipeline.producers.stopping``),
  so the task also checks a stopping flag and is cancelled again until it ends, for at most
  ``STOP_TIMEOUT`` seconds; past that an error is logged and the stop goes on. Messages in
  flight finish and their acks go out before the stage closes the connection in
  ``terminate``.

Each message's ``data`` is the entry's fields, a ``dict[bytes, bytes]``; ``metadata`` is
``{"id": "<entry id>", "stream": "<stream>"}``; ``ack_data`` is the ``(id, fields)`` entry.

Delivery is at-least-once: a message is handled again if the process dies before its XACK,
if its handler runs longer than ``claim_idle`` (another consumer claims it meanwhile), or if
two live processes use one consumer name (both read its pending entries at start). Give
each process its own ``consumer`` name when several run the same pipeline; the default,
``<host>.<pipeline>.<producer index>``, is the same after a restart on the same host, so a
restarted process resumes its own pending entries at once instead of after ``claim_idle``.

If Redis goes away, the outage rule of every broker producer applies
(``corral.pipeline.producers._broker``): a lost connection or a read that times out ends the
stage with ``ConnectionError``, its supervisor restarts it, and the new stage connects within
``timeout`` seconds (trying every 0.25 s). Acks that fail are logged by the stage and their
entries come back later through ``XAUTOCLAIM``. Other errors are not outages: a missing
group (deleted while running) is created again, and any other reply error is logged and the
read tried again after a backoff (0.1 s doubling to 5 s).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from corral._extras import require
from corral._options import Options, is_int, is_number, one_of, option
from corral.pipeline.message import Message
from corral.pipeline.producer import DeadLetterSink, Producer, ProducerContext
from corral.pipeline.producers._broker import BrokerStage, Demand, connect_with_retry, redact
from corral.pipeline.producers.stopping import check_cancelled, stop_task

if TYPE_CHECKING:
    from redis.asyncio import Redis

    RedisClient = Redis
    """A redis-py asyncio client (for annotations outside this module, the one that imports
    redis-py)."""

    from corral.runtime import ExitReason

__all__ = [
    "PRODUCER",
    "RedisClient",
    "RedisStreamsAcknowledger",
    "RedisStreamsOptions",
    "RedisStreamsProducer",
    "open_client",
]

logger = logging.getLogger("corral.pipeline")

OnFailure = Literal["ack", "keep_pending", "dead_letter"]
Entry = tuple[bytes, dict[bytes, bytes]]
"""One stream entry as redis-py returns it: its id and its fields."""

_ID = re.compile(r"^\d+(-\d+)?$")
_URL = re.compile(r"^(redis|rediss|unix)://")
_BACKOFF_INITIAL: Final = 0.1
_BACKOFF_MAX: Final = 5.0


def _name(v: Any) -> bool:
    return type(v) is str and v != ""


def _optional_name(v: Any) -> bool:
    return v is None or _name(v)


def _optional_seconds(v: Any) -> bool:
    return v is None or is_number(0, strict=True)(v)


def open_client(url: str, *, by: str, **options: object) -> Redis:
    """A redis-py asyncio client for ``url`` (``Redis.from_url(url, **options)``, not yet
    connected): the way the other modules of corral reach redis-py, which only this module
    imports. ``MissingExtra`` naming ``by`` without redis-py."""
    require("redis", extra="redis", by=by)
    from redis.asyncio import Redis

    return Redis.from_url(url, **options)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class RedisStreamsOptions(Options):
    """``producer.options`` of the Redis Streams producer."""

    _what = "pipeline"

    stream: str = option(
        None,
        doc="The stream (key) to read; created empty with the group if missing (create=True).",
        rule="a non-empty str",
        check=_name,
    )
    group: str = option(
        None,
        doc="The consumer group the pipeline reads as; created when missing (create=True).",
        rule="a non-empty str",
        check=_name,
    )
    consumer: str | None = option(
        None,
        doc="This producer's consumer name in the group; default "
        "'<host>.<pipeline>.<producer index>'. Unique per live process.",
        rule="None or a non-empty str",
        check=_optional_name,
    )
    url: str = option(
        "redis://localhost:6379/0",
        doc="Where Redis is: a redis://, rediss:// or unix:// URL, as redis-py reads it.",
        rule="a redis://, rediss:// or unix:// URL",
        check=lambda v: type(v) is str and _URL.match(v) is not None,
    )
    count: int = option(
        500,
        doc="At most this many entries per read (XREADGROUP / XAUTOCLAIM COUNT); each read "
        "asks for the demand owed, up to this.",
        rule="an int >= 1",
        check=is_int(1),
    )
    block: float = option(
        1.0,
        doc="Seconds one XREADGROUP waits for new entries (BLOCK) before the fetch task "
        "looks again; > 0, so no read waits for ever.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    claim_idle: float | None = option(
        60.0,
        doc="Seconds an entry may stay pending, unacknowledged, before this producer claims "
        "it (XAUTOCLAIM) and delivers it again: how a dead consumer's work is picked up. "
        "Longer than any message takes to go through the pipeline. None: never claim.",
        rule="None or a number > 0",
        check=_optional_seconds,
    )
    on_failure: OnFailure = option(
        "keep_pending",
        doc="What a failed message's ack does: 'ack' (drop it), 'keep_pending' (leave it "
        "pending, to be claimed again after claim_idle) or 'dead_letter' (XADD it to "
        "dead_letter_stream, then XACK).",
        rule="one of 'ack', 'keep_pending', 'dead_letter'",
        check=one_of("ack", "keep_pending", "dead_letter"),
    )
    dead_letter_stream: str | None = option(
        None,
        doc="The stream failed messages go to with on_failure='dead_letter': their fields "
        "plus dead_letter_reason, dead_letter_id, dead_letter_stream and attempts.",
        rule="None or a non-empty str",
        check=_optional_name,
    )
    create: bool = option(
        True,
        doc="Create the stream and the consumer group if missing (XGROUP CREATE ... "
        "MKSTREAM); False: both must exist, or the stage fails to start naming them.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )
    start_id: str = option(
        "0",
        doc="Where a group this producer creates starts: '0' the whole stream, '$' only "
        "entries added from now on, or an entry id. No effect on an existing group; used "
        "again if the group vanishes while the producer runs.",
        rule="'$' or an entry id such as '0' or '1700000000000-0'",
        check=lambda v: type(v) is str and (v == "$" or _ID.match(v) is not None),
    )
    timeout: float = option(
        10.0,
        doc="Seconds a stage may take to connect and create its group (it tries every 0.25 s, "
        "so a stage restarted while Redis restarts waits for it); a reply may take block + "
        "timeout seconds before the stage counts Redis as gone.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = _cross_check(self.on_failure, self.dead_letter_stream, self.stream)
        if problem is not None:
            raise ValueError(f"invalid options for {self._what}: {problem}")


def _cross_check(on_failure: object, dead_letter_stream: object, stream: object) -> str | None:
    """What is wrong with the combination of these options, or None."""
    if on_failure == "dead_letter" and dead_letter_stream is None:
        return "dead_letter_stream is required when on_failure is 'dead_letter'"
    if on_failure != "dead_letter" and dead_letter_stream is not None:
        return (
            f"dead_letter_stream is only used when on_failure is 'dead_letter'; "
            f"on_failure is {on_failure!r}"
        )
    if dead_letter_stream is not None and dead_letter_stream == stream:
        return f"dead_letter_stream must differ from stream; both are {stream!r}"
    return None


class RedisStreamsAcknowledger:
    """Acknowledges one producer's messages: XACK, and ``on_failure`` for failed ones.

    ``ack`` runs in the task of the stage that ended the messages and waits for Redis (one
    round trip); a Redis error propagates (the stage logs it) and the entries stay pending.
    After ``close`` (the producer stage ended) an ack only logs: its entries stay pending and
    are delivered again.
    """

    __slots__ = ("_client", "_closed", "_dead_letter", "_group", "_on_failure", "_stream", "_where")

    def __init__(self, client: Redis, options: RedisStreamsOptions, where: str) -> None:
        self._client = client
        self._stream = options.stream
        self._group = options.group
        self._on_failure = options.on_failure
        self._dead_letter = options.dead_letter_stream
        self._where = where
        self._closed = False

    def __repr__(self) -> str:
        return f"<RedisStreamsAcknowledger {self._where} stream '{self._stream}'>"

    def close(self) -> None:
        self._closed = True

    async def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        if self._closed:
            logger.warning(
                "%s: %d acks after the producer stage ended are not sent; those entries "
                "stay pending and are delivered again",
                self._where,
                len(successful) + len(failed),
            )
            return
        ids = [m.ack_data[0] for m in successful]  # type: ignore[index]
        if failed:
            if self._on_failure == "ack":
                ids.extend(m.ack_data[0] for m in failed)  # type: ignore[index]
            elif self._on_failure == "dead_letter":
                await self._dead_letter_and_ack(failed, ids)
                return
        if ids:
            await self._client.xack(self._stream, self._group, *ids)

    async def _dead_letter_and_ack(self, failed: Sequence[Message], ids: list[bytes]) -> None:
        assert self._dead_letter is not None  # checked with the options
        async with self._client.pipeline(transaction=True) as pipe:
            for m in failed:
                entry_id, fields = cast(Entry, m.ack_data)
                failure = m.failure
                reason = None if failure is None else failure.reason
                record: dict[Any, Any] = dict(fields)
                record[b"dead_letter_reason"] = _describe(reason)
                record[b"dead_letter_id"] = entry_id
                record[b"dead_letter_stream"] = self._stream
                record[b"attempts"] = m.attempt
                pipe.xadd(self._dead_letter, record)
                ids.append(entry_id)
            pipe.xack(self._stream, self._group, *ids)
            await pipe.execute()


def _describe(reason: object) -> str:
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}"
    return str(reason)


class RedisStreamsProducer(Producer):
    """Reads a stream through a consumer group; see the module docstring."""

    options_type = RedisStreamsOptions

    def __init__(self, options: object, context: ProducerContext) -> None:
        super().__init__(options, context)
        if not isinstance(options, RedisStreamsOptions):
            raise TypeError(
                f"RedisStreamsProducer: options must be RedisStreamsOptions; got {options!r}"
            )
        self._options = options
        self.consumer = options.consumer or (
            f"{socket.gethostname()}.{context.pipeline}.{context.index}"
        )
        self._where = f"redis_streams producer (pipeline '{context.pipeline}' {context.index})"
        self._client: Redis | None = None
        self.acknowledger: RedisStreamsAcknowledger | None = None
        self._fetcher: asyncio.Task[None] | None = None
        self._demand = Demand()
        self._stage = BrokerStage(
            self._where, "its entries stay pending, delivered again to this consumer"
        )
        # The fetch task's place: reading our own pending entries after this id (None: done);
        # an XAUTOCLAIM sweep going on from this id (None: none); when the next one is due.
        self._history: bytes | None = b"0-0"
        self._claim_cursor: bytes | None = None
        self._next_claim = context.clock.now()

    def __repr__(self) -> str:
        return f"<RedisStreamsProducer {self._where} consumer '{self.consumer}'>"

    # -- configuration ---------------------------------------------------------------------

    @classmethod
    def parse_options(cls, data: Mapping[str, object], path: str) -> object:
        if isinstance(data, Mapping):
            problem = _cross_check(
                data.get("on_failure", "keep_pending"),
                data.get("dead_letter_stream"),
                data.get("stream"),
            )
            if problem is not None:
                raise ValueError(f"invalid options for pipeline: {path}{problem}")
        return super().parse_options(data, path)

    @classmethod
    def dead_letter_sink(cls, target: object, options: object) -> DeadLetterSink | None:
        if isinstance(target, str):
            raise ValueError(
                "invalid options for pipeline: dead_letter: the redis_streams producer "
                "dead-letters to a stream with producer.options on_failure='dead_letter' and "
                f"dead_letter_stream={target!r}; pipeline-level dead_letter takes a callable"
            )
        return None

    # -- hooks -----------------------------------------------------------------------------

    async def init(self) -> None:
        """Connect, create the group if missing, start the fetch task. Tries every 0.25 s
        for up to ``timeout`` seconds; then raises ``ConnectionError`` (the URL without its
        password), and the stage does not start."""
        require("redis", extra="redis", by=self._where)
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import AuthenticationError, RedisError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        options = self._options
        self._stage.bind()

        async def connect() -> Redis:
            client = Redis.from_url(
                options.url,
                protocol=2,  # the list-shaped replies this module reads, on every redis-py
                socket_connect_timeout=options.timeout,
                socket_timeout=options.block + options.timeout,
                retry=Retry(NoBackoff(), 0),  # the outage rule: a lost connection ends the stage
            )
            try:
                await client.ping()
                await self._ensure_group(client)
            except BaseException:
                await client.aclose()
                raise
            return client

        try:
            client = await connect_with_retry(
                connect,
                timeout=options.timeout,
                retry_on=(RedisConnectionError, RedisTimeoutError),
                fatal=(AuthenticationError,),
                where=self._where,
                url=options.url,
            )
        except RedisError as exc:
            raise ConnectionError(
                f"{self._where}: cannot use stream '{options.stream}' group "
                f"'{options.group}' at {redact(options.url)}: {exc}"
            ) from exc
        self._client = client
        self.acknowledger = RedisStreamsAcknowledger(client, options, self._where)
        self._fetcher = asyncio.create_task(self._fetch_loop(client), name=f"{self._where} fetch")

    def handle_demand(self, demand: int) -> list[Message]:
        """Owe ``demand`` more and wake the fetch task; never blocks, returns nothing (the
        fetch task emits)."""
        self._demand.add(demand)
        return []

    async def prepare_for_draining(self) -> None:
        """Forgive what is owed and end the fetch task, cancelling a read in flight (its
        entries stay pending). Waits for the task to unwind, at most ``STOP_TIMEOUT`` s."""
        await self._stop_fetching()

    async def terminate(self, reason: ExitReason) -> None:
        """End the fetch task (at most ``STOP_TIMEOUT`` s), make later acks no-ops (logged)
        and close the connection."""
        self._stage.closing = True
        await self._stop_fetching()
        if self.acknowledger is not None:
            self.acknowledger.close()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- the fetch task --------------------------------------------------------------------

    async def _stop_fetching(self) -> None:
        self._demand.stop()
        task, self._fetcher = self._fetcher, None
        if task is not None:
            await stop_task(task, where=self._where)

    async def _ensure_group(self, client: Redis) -> None:
        from redis.exceptions import ResponseError

        options = self._options
        if not options.create:
            missing = None
            if not await client.exists(options.stream):
                missing = f"stream '{options.stream}'"
            else:
                groups = await client.xinfo_groups(options.stream)
                if not any(_text(g.get("name")) == options.group for g in groups):
                    missing = f"consumer group '{options.group}' of stream '{options.stream}'"
            if missing is not None:
                raise ValueError(
                    f"{self._where}: {missing} does not exist on {redact(options.url)}; "
                    "create it, or set producer.options.create=True"
                )
            return
        try:
            await client.xgroup_create(
                options.stream, options.group, id=options.start_id, mkstream=True
            )
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def _fetch_loop(self, client: Redis) -> None:
        """Read what is owed and emit it, until told to stop or cancelled (a cancel that
        redis-py lost is raised again after the read). Redis gone (a connection error or a
        read timeout) ends the stage (the outage rule); another error is logged and the read
        tried again after a backoff: 0.1 s doubling to 5 s."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        backoff = _BACKOFF_INITIAL
        demand = self._demand
        while (owed := await demand.wanted()) > 0:
            try:
                entries = await self._fetch(client, min(owed, self._options.count))
                check_cancelled()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                self._stage.fail(
                    f"reading stream '{self._options.stream}' at "
                    f"{redact(self._options.url)} failed: {_describe(exc)}"
                )
                return
            except Exception as exc:
                logger.warning(
                    "%s: reading stream '%s' failed: %s; retrying in %g s",
                    self._where,
                    self._options.stream,
                    _describe(exc),
                    backoff,
                )
                if isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP"):
                    await self._recreate_group(client)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
                continue
            backoff = _BACKOFF_INITIAL
            if entries and not demand.stopping:
                deleted = self._emit(entries)
                if deleted:
                    await self._ack_deleted(client, deleted)

    async def _fetch(self, client: Redis, n: int) -> list[Entry]:
        """One read of at most ``n`` entries: this consumer's own pending entries first
        (once, at start), then an XAUTOCLAIM step when one is due, else new entries."""
        if self._history is not None:
            entries = await self._read(client, self._history, n, block=None)
            self._history = entries[-1][0] if entries else None
            return entries
        claim_idle = self._options.claim_idle
        if claim_idle is None:
            return await self._read(client, b">", n, block=self._options.block)
        now = self.context.clock.now()
        if self._claim_cursor is not None or now >= self._next_claim:
            entries, self._claim_cursor = await self._claim(client, self._claim_cursor, n)
            if self._claim_cursor is None:
                self._next_claim = self.context.clock.now() + claim_idle
            return entries
        wait = min(self._options.block, max(self._next_claim - now, 0.001))
        return await self._read(client, b">", n, block=wait)

    async def _read(
        self, client: Redis, after: bytes, n: int, *, block: float | None
    ) -> list[Entry]:
        options = self._options
        reply: Any = await client.xreadgroup(
            options.group,
            self.consumer,
            {options.stream: after},
            count=n,
            block=None if block is None else max(1, round(block * 1000)),
        )
        if not reply:
            return []
        entries: list[Entry] = reply[0][1]
        return entries

    async def _claim(
        self, client: Redis, cursor: bytes | None, n: int
    ) -> tuple[list[Entry], bytes | None]:
        """One XAUTOCLAIM step from ``cursor`` (None: the start): the entries claimed and
        the cursor to go on from (None: the sweep is done)."""
        options = self._options
        assert options.claim_idle is not None
        reply: Any = await client.xautoclaim(
            options.stream,
            options.group,
            self.consumer,
            min_idle_time=max(1, round(options.claim_idle * 1000)),
            start_id=b"0-0" if cursor is None else cursor,
            count=n,
        )
        next_cursor: bytes = reply[0]
        # Redis 6.2 returns entries deleted from the stream as nils (7.0 drops them).
        entries: list[Entry] = [e for e in reply[1] if e[0] is not None]
        if entries:
            logger.info(
                "%s: claimed %d entries idle longer than %g s (claim_idle)",
                self._where,
                len(entries),
                options.claim_idle,
            )
        return entries, None if next_cursor in (b"0-0", "0-0") else next_cursor

    async def _recreate_group(self, client: Redis) -> None:
        from redis.exceptions import RedisError

        try:
            await self._ensure_group(client)
        except RedisError as exc:
            logger.warning(
                "%s: creating group '%s' failed: %s", self._where, self._options.group, exc
            )

    def _emit(self, entries: list[Entry]) -> list[bytes]:
        """Emit the entries as messages; return the ids of those deleted from the stream."""
        acknowledger = self.acknowledger
        assert acknowledger is not None
        stream = self._options.stream
        messages = []
        deleted = []
        for entry in entries:
            entry_id, fields = entry
            if not fields:  # deleted from the stream while pending: nothing to handle
                deleted.append(entry_id)
                continue
            metadata = {"id": entry_id.decode(), "stream": stream}
            messages.append(Message(fields, metadata, acknowledger, entry))
        if messages and self.context.alive:
            self._demand.emitted(len(messages))
            self.context.emit(messages)
        return deleted

    async def _ack_deleted(self, client: Redis, ids: list[bytes]) -> None:
        from redis.exceptions import RedisError

        options = self._options
        logger.warning(
            "%s: %d pending entries were deleted from stream '%s'; acknowledging them",
            self._where,
            len(ids),
            options.stream,
        )
        try:
            await client.xack(options.stream, options.group, *ids)
        except RedisError as exc:
            logger.warning("%s: acknowledging deleted entries failed: %s", self._where, exc)


PRODUCER: Final = RedisStreamsProducer


def _text(value: object) -> str:
    """A reply field as text (redis-py gives bytes unless it decodes responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)
