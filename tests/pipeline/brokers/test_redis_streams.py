"""The Redis Streams producer against a real redis-server (started once per test session on
a free loopback port): the conformance suite, its options, and reclaiming a dead consumer's
pending entries with XAUTOCLAIM.

The fault test (a pipeline SIGKILLed in another OS process in the middle of 100,000
messages) is in test_redis_streams_fault.py.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from conformance import FailureMode, ProducerConformance, Subject, eventually
from redis.asyncio import Redis

from corral import Node
from corral.errors import StartError
from corral.pipeline import Message, Pipeline
from corral.pipeline.producers.redis_streams import RedisStreamsOptions, RedisStreamsProducer
from servers.redis import RedisServer

_streams = itertools.count()


class RedisHarness:
    """A stream and a consumer group on the test session's redis-server; counts come from
    XPENDING (taken, not acknowledged) and XINFO GROUPS (lag: not taken yet)."""

    name = "redis_streams"
    failure_modes: frozenset[FailureMode] = frozenset({"drop", "dead_letter", "redeliver"})
    redelivers_abandoned = True

    def unreachable_options(self, url_host: str, timeout: float) -> dict[str, object]:
        url = f"redis://user:secret@{url_host}/0"
        return {
            "module": "redis_streams",
            "options": {"url": url, "stream": "s", "group": "g", "timeout": timeout},
        }

    async def lose_connections(self) -> bool:
        """CLIENT KILL every other normal client (the producers'): their reads fail."""
        await self.client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        return True

    def __init__(self, url: str) -> None:
        n = next(_streams)
        self.url = url
        self.stream = f"conformance-{n}"
        self.group = "workers"
        self.dead_letter_stream = f"{self.stream}-dead"
        self._client: Redis | None = None

    @property
    def client(self) -> Redis:
        assert self._client is not None, "use the harness in `async with`"
        return self._client

    async def __aenter__(self) -> Self:
        self._client = Redis.from_url(self.url, protocol=2)
        return self

    async def reconnect(self) -> None:
        """A new client, for a server that was restarted."""
        await self.__aexit__(None, None, None)
        await self.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def producer_options(self, **options: object) -> dict[str, object]:
        return {
            "url": self.url,
            "stream": self.stream,
            "group": self.group,
            "consumer": "conformance",
            "block": 0.05,
            **options,
        }

    def pipeline_options(self, *, on_failure: FailureMode = "drop") -> dict[str, object]:
        options: dict[str, object]
        if on_failure == "drop":
            options = self.producer_options(on_failure="ack")
        elif on_failure == "dead_letter":
            options = self.producer_options(
                on_failure="dead_letter", dead_letter_stream=self.dead_letter_stream
            )
        else:
            options = self.producer_options(on_failure="keep_pending", claim_idle=0.2)
        return {"producer": {"module": "redis_streams", "options": options}}

    async def publish(self, payloads: Sequence[bytes]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for payload in payloads:
                pipe.xadd(self.stream, {b"data": payload})
            await pipe.execute()

    def payload(self, message: Message) -> bytes:
        data: Any = message.data
        payload = data[b"data"]
        assert isinstance(payload, bytes)
        return payload

    async def unacked(self) -> int:
        if not await self._group_exists():
            return 0
        summary: Any = await self.client.xpending(self.stream, self.group)
        return int(summary["pending"])

    async def outstanding(self) -> int:
        length = await self.client.xlen(self.stream)
        if not await self._group_exists():
            return int(length)
        groups: Any = await self.client.xinfo_groups(self.stream)
        (info,) = [g for g in groups if g["name"] in (self.group, self.group.encode())]
        return int(info["pending"]) + int(info["lag"])

    async def dead_letters(self) -> list[bytes]:
        entries: Any = await self.client.xrange(self.dead_letter_stream)
        return [fields[b"data"] for _, fields in entries]

    async def _group_exists(self) -> bool:
        if not await self.client.exists(self.stream):
            return False
        groups: Any = await self.client.xinfo_groups(self.stream)
        return any(g["name"] in (self.group, self.group.encode()) for g in groups)


@pytest.mark.realtime
class TestRedisStreamsConformance(ProducerConformance):
    @pytest.fixture
    def harness(self, redis_url: str) -> RedisHarness:
        return RedisHarness(redis_url)


# -- options -------------------------------------------------------------------------------


def redis_pipeline(**options: object) -> Pipeline:
    return Pipeline(name="p", producer={"module": "redis_streams", "options": options})


def test_the_options_are_validated_when_the_pipeline_is_made() -> None:
    pipeline = redis_pipeline(stream="s", group="g")
    options = pipeline.options.producer.options
    assert options == RedisStreamsOptions(stream="s", group="g")
    assert pipeline.options.producer.module is RedisStreamsProducer
    assert (options.url, options.count, options.block, options.claim_idle) == (
        "redis://localhost:6379/0",
        500,
        1.0,
        60.0,
    )
    assert (options.on_failure, options.start_id, options.consumer) == ("keep_pending", "0", None)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"group": "g"}, "producer.options.stream is required (a non-empty str)"),
        ({"stream": "s"}, "producer.options.group is required (a non-empty str)"),
        (
            {"stream": "s", "group": "g", "count": 0},
            "producer.options.count must be an int >= 1; got 0",
        ),
        (
            {"stream": "s", "group": "g", "block": 0},
            "producer.options.block must be a number > 0; got 0",
        ),
        (
            {"stream": "s", "group": "g", "claim_idle": -1},
            "producer.options.claim_idle must be None or a number > 0; got -1",
        ),
        (
            {"stream": "s", "group": "g", "url": "http://x"},
            "producer.options.url must be a redis://, rediss:// or unix:// URL; got 'http://x'",
        ),
        (
            {"stream": "s", "group": "g", "on_failure": "nack"},
            "producer.options.on_failure must be one of 'ack', 'keep_pending', 'dead_letter'; "
            "got 'nack'",
        ),
        (
            {"stream": "s", "group": "g", "start_id": "latest"},
            "producer.options.start_id must be '$' or an entry id such as '0' or "
            "'1700000000000-0'; got 'latest'",
        ),
        (
            {"stream": "s", "group": "g", "consumer": ""},
            "producer.options.consumer must be None or a non-empty str; got ''",
        ),
        (
            {"stream": "s", "group": "g", "on_failure": "dead_letter"},
            "producer.options.dead_letter_stream is required when on_failure is 'dead_letter'",
        ),
        (
            {"stream": "s", "group": "g", "dead_letter_stream": "d"},
            "producer.options.dead_letter_stream is only used when on_failure is "
            "'dead_letter'; on_failure is 'keep_pending'",
        ),
        (
            {"stream": "s", "group": "g", "on_failure": "dead_letter", "dead_letter_stream": "s"},
            "producer.options.dead_letter_stream must differ from stream; both are 's'",
        ),
        (
            {"stream": "s", "group": "g", "blok": 1},
            "unknown option 'producer.options.blok'; valid options: stream, group, consumer, "
            "url, count, block, claim_idle, on_failure, dead_letter_stream, create, start_id, "
            "timeout",
        ),
    ],
)
def test_a_wrong_option_fails_naming_it(options: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError) as info:
        redis_pipeline(**options)
    assert str(info.value) == f"invalid options for pipeline: {error}"


def test_a_dead_letter_stream_name_belongs_in_the_producer_options() -> None:
    with pytest.raises(ValueError) as info:
        Pipeline(
            name="p",
            producer={"module": "redis_streams", "options": {"stream": "s", "group": "g"}},
            dead_letter="dead",
        )
    assert str(info.value) == (
        "invalid options for pipeline: dead_letter: the redis_streams producer dead-letters "
        "to a stream with producer.options on_failure='dead_letter' and "
        "dead_letter_stream='dead'; pipeline-level dead_letter takes a callable"
    )


# -- messages, group creation, reclaiming ------------------------------------------------------


@pytest.mark.realtime
async def test_messages_carry_the_entry_fields_id_and_stream(redis_url: str) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        ids = [await harness.client.xadd(harness.stream, {"a": "1", "b": "2"}) for _ in range(3)]
        seen: list[Message] = []

        class Keep(Pipeline):
            def handle_message(self, processor: str, message: Message, context: object) -> Message:
                seen.append(message)
                return message

        pipeline = Keep(name="p", **harness.pipeline_options())
        await pipeline.start(node)
        await eventually(_acked(harness), "all acknowledged")
        await pipeline.stop()
    assert [m.data for m in seen] == [{b"a": b"1", b"b": b"2"}] * 3
    assert [m.metadata for m in seen] == [{"id": i.decode(), "stream": harness.stream} for i in ids]


@pytest.mark.realtime
async def test_a_group_created_at_dollar_skips_what_the_stream_held(redis_url: str) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        await harness.publish([b"old"])
        options = harness.producer_options(start_id="$", on_failure="ack")
        pipeline = Subject(
            harness, name="p", producer={"module": "redis_streams", "options": options}
        )
        await pipeline.start(node)
        await harness.publish([b"new"])
        await eventually(_acked(harness, lag_ok=1), "the new entry acknowledged")
        await pipeline.stop()
    assert pipeline.handled == [b"new"]


def _acked(harness: RedisHarness, *, lag_ok: int = 0) -> Any:
    async def check() -> bool:
        return await harness.outstanding() <= lag_ok

    return check


@pytest.mark.realtime
async def test_a_live_consumer_claims_the_pending_entries_of_a_dead_one(redis_url: str) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        client = harness.client
        await harness.publish([b"m-%d" % i for i in range(30)])
        await client.xgroup_create(harness.stream, harness.group, id="0")
        # A consumer that took 20 entries and died before acknowledging them.
        await client.xreadgroup(harness.group, "dead", {harness.stream: ">"}, count=20)
        assert await harness.unacked() == 20

        options = harness.producer_options(consumer="alive", claim_idle=0.2, on_failure="ack")
        pipeline = Subject(
            harness, name="p", producer={"module": "redis_streams", "options": options}
        )
        await pipeline.start(node)
        await eventually(_acked(harness), "the dead consumer's entries claimed and acknowledged")
        await pipeline.stop()
        consumers: Any = await client.xinfo_consumers(harness.stream, harness.group)
    assert sorted(pipeline.handled) == sorted(b"m-%d" % i for i in range(30))
    assert {c["name"]: c["pending"] for c in consumers} == {b"dead": 0, b"alive": 0}


@pytest.mark.realtime
async def test_a_failed_message_kept_pending_stays_with_its_consumer_until_claim_idle(
    redis_url: str,
) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        options = harness.producer_options(claim_idle=30.0, on_failure="keep_pending")
        pipeline = Subject(
            harness, name="p", producer={"module": "redis_streams", "options": options}
        )
        await harness.publish([b"fail-0", b"m-1", b"m-2"])
        await pipeline.start(node)

        async def one_left() -> bool:
            return await harness.outstanding() == 1

        await eventually(one_left, "two acknowledged, the failed one pending")
        await pipeline.stop()
        pending: Any = await harness.client.xpending_range(
            harness.stream, harness.group, "-", "+", 10
        )
    assert sorted(pipeline.handled) == [b"fail-0", b"m-1", b"m-2"]
    assert [p["times_delivered"] for p in pending] == [1]


@pytest.mark.realtime
async def test_a_consumer_restarted_under_its_name_resumes_its_own_pending_entries_at_once(
    redis_url: str,
) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        client = harness.client
        await harness.publish([b"m-%d" % i for i in range(10)])
        await client.xgroup_create(harness.stream, harness.group, id="0")
        await client.xreadgroup(harness.group, "me", {harness.stream: ">"}, count=4)
        # claim_idle None: only reading its own history can bring the 4 back.
        options = harness.producer_options(consumer="me", claim_idle=None, on_failure="ack")
        pipeline = Subject(
            harness, name="p", producer={"module": "redis_streams", "options": options}
        )
        await pipeline.start(node)
        await eventually(_acked(harness), "all acknowledged")
        await pipeline.stop()
    assert sorted(pipeline.handled) == sorted(b"m-%d" % i for i in range(10))


@pytest.mark.realtime
async def test_stopping_does_not_wait_for_a_blocked_read(redis_url: str) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        options = harness.producer_options(block=60.0, on_failure="ack")
        pipeline = Subject(
            harness, name="p", producer={"module": "redis_streams", "options": options}
        )
        await pipeline.start(node)
        await harness.publish([b"m-0"])
        await eventually(_acked(harness), "the entry acknowledged")
        # The fetch task now waits in XREADGROUP BLOCK 60000; the drain cancels it.
        async with asyncio.timeout(10):
            await pipeline.stop()
    assert pipeline.handled == [b"m-0"]


@pytest.mark.realtime
async def test_the_producer_rides_out_a_redis_restart_and_recreates_its_group(
    tmp_path: Path,
) -> None:
    first = RedisServer.start_in(tmp_path / "first")
    try:
        async with RedisHarness(first.url) as harness, Node() as node:
            options = harness.producer_options(block=0.05, on_failure="ack")
            pipeline = Subject(
                harness, name="p", producer={"module": "redis_streams", "options": options}
            )
            await harness.publish([b"before"])
            await pipeline.start(node)
            await eventually(_acked(harness), "the first entry acknowledged")
            first.stop()  # without persistence: the stream and the group are gone
            second = RedisServer.start_in(tmp_path / "second", port=first.port)
            try:
                await harness.reconnect()
                await harness.publish([b"after"])
                await eventually(_acked(harness), "the entry published after the restart acked")
                await pipeline.stop()
            finally:
                second.stop()
    finally:
        first.stop()
    assert pipeline.handled == [b"before", b"after"]


@pytest.mark.realtime
async def test_two_producer_stages_read_as_two_consumers_each_message_once(
    redis_url: str,
) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        options = harness.producer_options(on_failure="ack")
        del options["consumer"]  # the default: <host>.<pipeline>.<producer index>
        pipeline = Subject(
            harness,
            name="two",
            producer={"module": "redis_streams", "options": options, "concurrency": 2},
            processors={"default": {"concurrency": 2, "max_demand": 10}},
        )
        payloads = [b"m-%d" % i for i in range(400)]
        await harness.publish(payloads)
        await pipeline.start(node)
        await eventually(_acked(harness), "all acknowledged")
        await pipeline.stop()
        consumers: Any = await harness.client.xinfo_consumers(harness.stream, harness.group)
    assert sorted(pipeline.handled) == sorted(payloads)
    host = socket.gethostname()
    assert sorted(c["name"].decode() for c in consumers) == [f"{host}.two.0", f"{host}.two.1"]


# -- StreamWriter: the feeding end -------------------------------------------------------------


@pytest.mark.realtime
async def test_a_stream_writer_feeds_a_pipeline_and_sees_the_acks(redis_url: str) -> None:
    from corral.pipeline.producers.redis_writer import StreamWriter

    stream = f"writer-{next(_streams)}"
    seen: list[Message] = []

    class Keep(Pipeline):
        def handle_message(self, processor: str, message: Message, context: object) -> Message:
            seen.append(message)
            return message

    async with StreamWriter(redis_url, stream) as writer, Node() as node:
        ids = await writer.add([{"n": str(k)} for k in range(5)] + [{"n": b"5", "x": 1}])
        assert len(ids) == 6 and await writer.length() == 6
        producer = {"url": redis_url, "stream": stream, "group": "g", "block": 0.05}
        pipeline = Keep(name="p", producer={"module": "redis_streams", "options": producer})
        await pipeline.start(node)

        async def all_acked() -> bool:
            return len(seen) == 6 and await writer.pending("g") == 0

        await eventually(all_acked, "all handled and acknowledged")
        await pipeline.stop()
        assert [m.metadata["id"] for m in seen] == ids
        assert [m.data[b"n"] for m in seen] == [str(k).encode() for k in range(6)]
        await writer.delete()
        assert await writer.length() == 0


@pytest.mark.realtime
async def test_a_stream_writer_says_what_is_wrong() -> None:
    from corral.pipeline.producers.redis_writer import StreamWriter
    from servers.common import free_port

    with pytest.raises(ValueError, match="url must start with redis://"):
        StreamWriter("http://x", "s")
    with pytest.raises(ValueError, match="stream must be a non-empty str"):
        StreamWriter("redis://x", "")
    with pytest.raises(RuntimeError, match="use it as `async with StreamWriter"):
        await StreamWriter("redis://x", "s").add([{"a": "1"}])
    writer = StreamWriter(f"redis://:secret@127.0.0.1:{free_port()}/0", "s")
    with pytest.raises(ConnectionError, match=r"cannot reach redis://:\*{6}@127.0.0.1") as info:
        await writer.__aenter__()
    assert "secret" not in str(info.value)


@pytest.mark.realtime
async def test_with_create_false_a_missing_stream_or_group_fails_the_start_naming_it(
    redis_url: str,
) -> None:
    async with RedisHarness(redis_url) as harness, Node() as node:
        options = harness.producer_options(create=False)
        pipeline = Subject(
            harness, name="p", producer={"module": "redis_streams", "options": options}
        )
        with pytest.raises(StartError) as info:
            await pipeline.start(node)
        assert (
            f"stream '{harness.stream}' does not exist on {redis_url}; create it, or set "
            "producer.options.create=True"
        ) in str(info.value)
        await harness.client.xadd(harness.stream, {"data": "x"})
        with pytest.raises(StartError) as info:
            await pipeline.start(node)
        assert f"consumer group '{harness.group}' of stream '{harness.stream}' does not exist" in (
            str(info.value)
        )
        await harness.client.xgroup_create(harness.stream, harness.group, id="0")
        await pipeline.start(node)  # both exist: it reads them
        await eventually(_acked(harness), "the entry acknowledged")
        await pipeline.stop()
