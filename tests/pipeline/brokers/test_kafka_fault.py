"""The Kafka producer's crash tests: a pipeline in another OS process (kafka_fault_worker.py)
SIGKILLed and started again, counted on the broker.

- Out-of-order acks across a crash: offsets 5, 6, 7 acknowledged, 4 not; the group's commit
  stays at 4; after the SIGKILL and a restart, 4 is delivered again (and 5-7 after it, as
  Kafka's committed offset says), 0-3 are not.
- The fault test: SIGKILL at 30% of ``MESSAGES`` committed, restart, and count: every message
  handled at least once and committed, none lost. ``MESSAGES`` is 20,000 here (a few seconds);
  ``CORRAL_KAFKA_FAULT_MESSAGES=100000`` runs the issue's 100,000.

The worker records each message in ``<topic>-handled`` before acknowledging it. Progress is
read from the broker (the group's committed offsets), polled every 10 ms with a real-time
bound: the workers are other processes. A SIGKILLed member stays in the group until its
session (2 s) expires, so each restart takes a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from servers.kafka import KafkaServer, read_all

pytest.importorskip("aiokafka")

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

WORKER = Path(__file__).with_name("kafka_fault_worker.py")
MESSAGES = int(os.environ.get("CORRAL_KAFKA_FAULT_MESSAGES", "20000"))
PARTITIONS = 3
KILL_AT = 0.30
BOUND = 90.0  # seconds any one phase may take


def worker(server: KafkaServer, topic: str, mode: str, log: Path) -> subprocess.Popen[bytes]:
    src = Path(__file__).resolve().parents[3] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, str(WORKER), server.url, topic, f"{topic}-group", mode],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
        )


async def read_line(out: IO[bytes], expected: bytes, process: subprocess.Popen[bytes]) -> None:
    line = await asyncio.wait_for(asyncio.to_thread(out.readline), BOUND)
    assert line.strip() == expected, (line, process.poll())


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


class Broker:
    """The test's view of the broker: make topics, produce, read committed offsets."""

    def __init__(self, server: KafkaServer, topic: str, partitions: int) -> None:
        self.server, self.topic, self.partitions = server, topic, partitions
        self.reader: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> Broker:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.server.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [NewTopic(self.topic, self.partitions, 1), NewTopic(f"{self.topic}-handled", 1, 1)]
            )
        finally:
            await admin.close()
        self.reader = AIOKafkaConsumer(
            bootstrap_servers=self.server.bootstrap,
            group_id=f"{self.topic}-group",
            enable_auto_commit=False,
        )
        await self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.reader is not None:
            await self.reader.stop()

    async def publish(self, n: int) -> list[int]:
        """Produce ``n`` values ``b"<i>"``; return the end offset of each partition."""
        producer = AIOKafkaProducer(bootstrap_servers=self.server.bootstrap, linger_ms=5)
        await producer.start()
        ends = [0] * self.partitions
        try:
            for start in range(0, n, 5000):
                futures = [
                    await producer.send(self.topic, b"%d" % i)
                    for i in range(start, min(n, start + 5000))
                ]
                for future in futures:
                    meta = await future
                    ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
        finally:
            await producer.stop()
        return ends

    async def committed(self) -> list[int]:
        assert self.reader is not None
        return [
            await self.reader.committed(TopicPartition(self.topic, p)) or 0
            for p in range(self.partitions)
        ]

    async def until(
        self, done: Callable[[list[int]], bool], what: str, process: subprocess.Popen[bytes]
    ) -> list[int]:
        async with asyncio.timeout(BOUND):
            while not done(committed := await self.committed()):
                assert process.poll() is None, f"the worker exited ({process.returncode}): {what}"
                await asyncio.sleep(0.01)  # polling the broker for another process's progress
        return committed

    async def handled(self) -> list[tuple[int, int]]:
        """Every (partition, offset) the workers recorded, in order."""
        records = await read_all(self.server, f"{self.topic}-handled")
        out = []
        for record in records:
            partition, offset = record.value.split(b":")
            out.append((int(partition), int(offset)))
        return out


@pytest.mark.realtime
async def test_an_offset_acked_out_of_order_is_not_committed_past_and_comes_back_after_sigkill(
    kafka_server: KafkaServer, tmp_path: Path
) -> None:
    async with Broker(kafka_server, "out-of-order", 1) as broker:
        assert await broker.publish(8) == [8]
        first = worker(kafka_server, broker.topic, "hold4", tmp_path / "first.log")
        try:
            assert first.stdout is not None
            await read_line(first.stdout, b"started", first)
            await read_line(first.stdout, b"ready", first)  # 0-3 and 5-7 acked; 4 held
            await broker.until(lambda c: c == [4], "offsets 0-3 committed", first)
        finally:
            kill(first)
        assert first.returncode == -signal.SIGKILL
        assert await broker.committed() == [4]  # 5, 6, 7 were acked, never committed past 4

        second = worker(kafka_server, broker.topic, "record", tmp_path / "second.log")
        try:
            await broker.until(lambda c: c == [8], "everything committed", second)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait, BOUND) == 0
        finally:
            kill(second)
        handled = await broker.handled()
    first_run, second_run = handled[:7], handled[7:]
    assert sorted(first_run) == [(0, o) for o in (0, 1, 2, 3, 5, 6, 7)]
    assert sorted(second_run) == [(0, 4), (0, 5), (0, 6), (0, 7)]  # 4 delivered again


@pytest.mark.realtime
async def test_a_pipeline_sigkilled_mid_stream_loses_nothing_after_a_restart(
    kafka_server: KafkaServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    async with Broker(kafka_server, "fault", PARTITIONS) as broker:
        ends = await broker.publish(MESSAGES)
        assert sum(ends) == MESSAGES
        first = worker(kafka_server, broker.topic, "record", tmp_path / "first.log")
        try:
            at_kill = await broker.until(
                lambda c: sum(c) >= KILL_AT * MESSAGES, "30% committed", first
            )
        finally:
            kill(first)
        assert first.returncode == -signal.SIGKILL
        committed_at_kill = await broker.committed()
        assert KILL_AT * MESSAGES <= sum(committed_at_kill) < MESSAGES

        second = worker(kafka_server, broker.topic, "record", tmp_path / "second.log")
        try:
            await broker.until(lambda c: c == ends, "every message committed", second)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(second.wait, BOUND) == 0
        finally:
            kill(second)
        handled = await broker.handled()
    counts = Counter(handled)
    expected = {(p, o) for p in range(PARTITIONS) for o in range(ends[p])}
    print(
        f"kafka fault test: {MESSAGES} messages; killed at {sum(at_kill)} committed; after the "
        f"restart {len(counts)} distinct handled, {len(handled)} handles "
        f"({len(handled) - len(counts)} redeliveries); {time.monotonic() - started:.1f} s"
    )
    assert set(counts) == expected  # every message handled at least once: none lost
