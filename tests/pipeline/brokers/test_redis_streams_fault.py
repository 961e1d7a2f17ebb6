"""The fault test of the Redis Streams producer: SIGKILL the OS process running the pipeline
in the middle of 100,000 messages, start another, and count: every message handled at least
once and acknowledged, none lost.

The pipeline runs in ``redis_fault_worker.py`` (a Node, the Redis Streams producer, the
seed's shape); it records each message it handles in a Redis set before acknowledging it.
The first worker is killed once 30% of the messages are acknowledged; its unacknowledged
entries stay pending under its consumer name. The second worker, another consumer of the
same group with ``claim_idle`` 0.5 s, reads the rest of the stream and claims the dead one's
pending entries with XAUTOCLAIM. Progress is read from the broker (XINFO GROUPS), polled
every 10 ms with a real-time bound: the workers are other processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

WORKER = Path(__file__).with_name("redis_fault_worker.py")
MESSAGES = 100_000
STREAM, GROUP = "fault", "workers"
KILL_AT = 0.30  # of the messages acknowledged
BOUND = 60.0  # seconds any one phase may take


def _progress(client: redis.Redis) -> tuple[int, int]:
    """(acknowledged, pending) for the group, from XINFO GROUPS."""
    if not client.exists(STREAM):
        return 0, 0
    groups: Any = client.xinfo_groups(STREAM)
    for group in groups:
        if group["name"] in (GROUP, GROUP.encode()):
            pending, lag = int(group["pending"]), int(group["lag"])
            return MESSAGES - pending - lag, pending
    return 0, 0


def _poll(client: redis.Redis, done: Any, what: str, worker: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + BOUND
    while not done(*_progress(client)):
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND:g} s: {what}; at {_progress(client)}")
        time.sleep(0.01)  # polling the broker for another process's progress


def _worker(url: str, consumer: str, claim_idle: float, log: Path) -> subprocess.Popen[bytes]:
    src = Path(__file__).resolve().parents[3] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, str(WORKER), url, STREAM, GROUP, consumer, str(claim_idle)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )


@pytest.mark.realtime
def test_a_pipeline_sigkilled_mid_stream_loses_nothing_after_a_restart(
    redis_url: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with redis.Redis.from_url(redis_url, protocol=2) as client:
        with client.pipeline(transaction=False) as pipe:
            for n in range(MESSAGES):
                pipe.xadd(STREAM, {"n": n})
            pipe.execute()

        first = _worker(redis_url, "worker-a", 60.0, tmp_path / "worker-a.log")
        try:
            _poll(client, lambda acked, _: acked >= KILL_AT * MESSAGES, "30% acked", first)
            first.send_signal(signal.SIGKILL)
            first.wait()
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        acked_at_kill, pending_at_kill = _progress(client)
        handled_at_kill = client.scard(f"{STREAM}:handled")
        assert first.returncode == -signal.SIGKILL
        assert KILL_AT * MESSAGES <= acked_at_kill < 0.9 * MESSAGES and pending_at_kill > 0

        second = _worker(redis_url, "worker-b", 0.5, tmp_path / "worker-b.log")
        try:
            _poll(
                client,
                lambda acked, pending: acked == MESSAGES and pending == 0,
                "all messages acknowledged",
                second,
            )
            second.send_signal(signal.SIGTERM)
            assert second.wait(BOUND) == 0, (tmp_path / "worker-b.log").read_text()
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()

        handled = client.scard(f"{STREAM}:handled")
        handles = int(client.get(f"{STREAM}:handles") or 0)
        consumers: Any = client.xinfo_consumers(STREAM, GROUP)
    elapsed = time.monotonic() - started
    print(
        f"fault test: {MESSAGES} messages; killed at {acked_at_kill} acked, "
        f"{pending_at_kill} pending, {handled_at_kill} handled; "
        f"after restart {handled} distinct handled, {handles} handles "
        f"({handles - handled} redeliveries); {elapsed:.1f} s"
    )
    assert handled == MESSAGES  # every message handled at least once: none lost
    assert handles >= MESSAGES
    assert {c["name"]: c["pending"] for c in consumers} == {b"worker-a": 0, b"worker-b": 0}
