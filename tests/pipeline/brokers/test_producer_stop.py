"""Stopping a broker producer while the broker keeps sending: every stop ends in time.

On Python 3.11, ``asyncio.wait_for`` returns the result of a read that finished in the same
loop turn as a cancel and drops the ``CancelledError`` (the task's ``cancelling()`` stays
1). redis-py, nats-py and aiormq all read through ``wait_for``, so under live traffic a
single ``task.cancel()`` of a fetch loop is often lost, and a stop that cancels once and
then waits without limit hangs. ``corral.pipeline.producers.stopping`` is the fix the
producers share; these tests hold the producers to it with a real redis-server, and the
helpers to it with a stand-in for the client library.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

import pytest

from corral import Node
from corral.pipeline import Message, Pipeline
from corral.pipeline.producers.redis_streams import RedisStreamsProducer
from corral.pipeline.producers.redis_writer import StreamWriter
from corral.pipeline.producers.stopping import STOP_TIMEOUT, check_cancelled, stop_task

_streams = itertools.count()


class Counting(Pipeline):
    """Counts the messages it handles and wakes whoever waits for the next few."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.handled = 0
        self.progress = asyncio.Event()

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        self.handled += 1
        self.progress.set()
        return message


async def feed(writer: StreamWriter, stop: asyncio.Event, added: list[int]) -> None:
    """Add 50 entries every 5 ms until ``stop`` is set (the flag, not a cancel, ends it)."""
    n = 0
    while not stop.is_set():
        await writer.add([{"n": str(n + k)} for k in range(50)])
        n += 50
        added[0] = n
        await asyncio.sleep(0.005)


def fetch_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().endswith(" fetch") and not t.done()]


@pytest.mark.realtime
async def test_fifty_start_stop_cycles_under_live_traffic_each_stop_in_time(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    stream = f"cycles-{next(_streams)}"
    options = {"url": redis_url, "stream": stream, "group": "g", "block": 0.05, "count": 100}
    stop_feeding = asyncio.Event()
    added = [0]
    slowest = 0.0
    async with StreamWriter(redis_url, stream) as writer, Node() as node:
        feeder = asyncio.create_task(feed(writer, stop_feeding, added))
        try:
            for cycle in range(50):
                pipeline = Counting(
                    name=f"p{cycle}",
                    producer={"module": "redis_streams", "options": {**options}},
                    shutdown_timeout=5.0,
                )
                await pipeline.start(node)
                async with asyncio.timeout(10):  # messages flow: a read is in flight
                    while pipeline.handled < 200:
                        pipeline.progress.clear()
                        await pipeline.progress.wait()
                began = time.monotonic()
                async with asyncio.timeout(STOP_TIMEOUT + 1.0):
                    await pipeline.stop()
                slowest = max(slowest, time.monotonic() - began)
                assert fetch_tasks() == [], f"cycle {cycle}: a fetch task outlived its stop"
        finally:
            stop_feeding.set()
            await asyncio.wait_for(feeder, 5)
            await writer.delete()
    assert added[0] > 0
    assert slowest < STOP_TIMEOUT + 1.0
    logged = [r.getMessage() for r in caplog.records]
    assert not [m for m in logged if "Task was destroyed" in m or "gave up" in m], logged


@pytest.mark.realtime
async def test_a_redis_producer_whose_reads_lose_every_cancel_still_stops_in_time(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race above, made certain: each read returns normally when cancelled, as
    # wait_for does when the read finished in the same turn. Before the fix, the drain's one
    # cancel was lost, the loop went back to waiting for demand, and stop() never returned.
    real_read = RedisStreamsProducer._read
    lost: list[int] = []

    async def read_losing_cancels(self: RedisStreamsProducer, *args: Any, **kw: Any) -> Any:
        try:
            return await real_read(self, *args, **kw)
        except asyncio.CancelledError:
            lost.append(1)
            return []

    monkeypatch.setattr(RedisStreamsProducer, "_read", read_losing_cancels)
    stream = f"lossy-{next(_streams)}"
    options = {"url": redis_url, "stream": stream, "group": "g", "block": 0.5}
    async with StreamWriter(redis_url, stream) as writer, Node() as node:
        for cycle in range(3):
            pipeline = Counting(
                name=f"lossy{cycle}", producer={"module": "redis_streams", "options": options}
            )
            await pipeline.start(node)
            await writer.add([{"n": "1"}])
            async with asyncio.timeout(10):
                await pipeline.progress.wait()  # handled; the fetch task waits in XREADGROUP
            async with asyncio.timeout(STOP_TIMEOUT + 1.0):
                await pipeline.stop()
            assert fetch_tasks() == []
        await writer.delete()
    assert len(lost) == 3  # each stop's cancel reached a read, and was lost there


@pytest.mark.realtime
async def test_a_stream_writer_add_loop_ends_on_one_cancel(redis_url: str) -> None:
    # The demo's replay loop awaits StreamWriter.add; a lost cancel made Ctrl-C do nothing.
    async def add_forever(writer: StreamWriter) -> None:
        while True:
            await writer.add([{"k": str(k)} for k in range(50)])

    async with StreamWriter(redis_url, f"adds-{next(_streams)}") as writer:
        for attempt in range(30):
            task = asyncio.create_task(add_forever(writer))
            await writer.length()  # a round trip: the task is inside add by now
            await writer.length()
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=2.0)
            if not done:  # clean up before failing: this task would ignore one cancel
                await stop_task(task, where="test")
            assert done, f"attempt {attempt}: one cancel did not end a loop over add"
            assert task.cancelled()
        await writer.delete()


# -- the helpers, against a stand-in that loses cancels the way wait_for does ------------------


class LosesCancels:
    """A client call that swallows the first ``lose`` cancels it sees, like ``wait_for``
    returning a read that finished in the same turn as the cancel."""

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.calls = 0

    async def read(self) -> None:
        self.calls += 1
        try:
            await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            if self.lose <= 0:
                raise
            self.lose -= 1


async def test_stop_task_cancels_again_until_a_loop_that_loses_cancels_ends() -> None:
    client = LosesCancels(lose=3)

    async def loop() -> None:
        while True:
            await client.read()

    task = asyncio.create_task(loop(), name="stand-in fetch")
    await asyncio.sleep(0.01)
    began = asyncio.get_running_loop().time()
    assert await stop_task(task, where="stand-in producer") is True
    assert task.cancelled() and client.lose == 0
    assert asyncio.get_running_loop().time() - began < STOP_TIMEOUT


async def test_stop_task_gives_up_after_its_timeout_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    never = asyncio.Event()
    release = asyncio.Event()

    async def deaf() -> None:  # ignores every cancel until released
        while not release.is_set():
            try:
                await never.wait()
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(deaf(), name="deaf fetch")
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    with caplog.at_level(logging.ERROR, logger="corral.pipeline"):
        assert await stop_task(task, where="stand-in producer", timeout=0.5) is False
    assert loop.time() - began == pytest.approx(0.5, abs=0.02)
    assert caplog.messages == [
        "stand-in producer: gave up stopping task 'deaf fetch' after 0.5 s: it ignored "
        f"{task.cancelling()} cancels (its client library swallows CancelledError); "
        "it is left running"
    ]
    release.set()
    task.cancel()
    await asyncio.wait([task])


async def test_stop_task_waits_out_the_grace_before_cancelling() -> None:
    finished = []

    async def finishing() -> None:
        await asyncio.sleep(0.3)
        finished.append(True)

    task = asyncio.create_task(finishing())
    assert await stop_task(task, where="x", grace=1.0) is True
    assert finished == [True] and not task.cancelled()


async def test_check_cancelled_raises_a_cancel_the_library_swallowed() -> None:
    client = LosesCancels(lose=1)
    after = []

    async def body() -> None:
        await client.read()
        after.append("read returned")
        check_cancelled()
        after.append("went on")

    task = asyncio.create_task(body())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled() and after == ["read returned"]
    check_cancelled()  # no cancel pending here: nothing happens
