"""Pipelines on Ray: replicas of one pipeline, each a corral Node in a Ray actor, share a
Redis Streams consumer group; one replica's actor is SIGKILLed mid-stream.

A real ``redis-server`` (tests/servers) and the session's Ray cluster. Progress is read from
the broker (XINFO GROUPS and the pipeline's own records), polled every 10 ms with a
real-time bound: the replicas are other processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from ray_cluster import RayCluster

from corral import ActorLost, Node, StartError, Supervisor
from corral.cluster import live_actors
from corral.cluster.actors import RayActor
from corral.cluster.pipelines import pipeline_nodes, replica_statistics

pytestmark = pytest.mark.realtime

MESSAGES = 3000
STREAM, GROUP = "events", "features"
BOUND = 60.0  # seconds any one phase may take


def _progress(client: redis.Redis) -> tuple[int, int]:
    """(acknowledged, pending) for the group, from XINFO GROUPS."""
    groups: Any = client.xinfo_groups(STREAM) if client.exists(STREAM) else []
    for group in groups:
        if group["name"] in (GROUP, GROUP.encode()):
            pending, lag = int(group["pending"]), int(group["lag"] or 0)
            return MESSAGES - pending - lag, pending
    return 0, 0


async def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {BOUND:g} s: {what}")
        await asyncio.sleep(0.01)  # polling the broker for other processes' progress


def _replicas() -> list[str]:
    return [name for name in live_actors() if name.startswith("PipelineNode-")]


async def test_a_killed_replicas_pending_messages_are_reclaimed_and_none_is_lost(
    ray_cluster: RayCluster, redis_url: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(redis_url)
    with client.pipeline(transaction=False) as pipe:
        for n in range(MESSAGES):
            pipe.xadd(STREAM, {"n": n})
        pipe.execute()
    flag = tmp_path / "stalled"
    args = {"url": redis_url, "stream": STREAM, "group": GROUP, "stall_flag": str(flag)}
    spec = pipeline_nodes("events", "cluster_pipelines:recording", replicas=2, args=args)
    async with Node([spec]) as node:
        (tree,) = await Supervisor.which_children(node.root)
        assert tree.pid is not None
        assert len(_replicas()) == 2
        # One replica is stuck on a batch (its 50 messages pending); the other goes on.
        await _until(lambda: flag.exists() and flag.read_text() != "", "a replica stalls")
        await _until(lambda: _progress(client)[0] >= MESSAGES // 3, "a third is acknowledged")
        stalled = int(flag.read_text())
        assert _progress(client)[1] >= 50  # at least the stuck batch is pending
        children = await Supervisor.which_children(tree.pid)
        handles: list[Any] = [RayActor.handle_of(c.pid) for c in children if c.pid is not None]
        os_pids = [await h.os_pid.remote() for h in handles]
        victim = children[os_pids.index(stalled)]
        assert victim.pid is not None
        os.kill(stalled, signal.SIGKILL)
        reason = await victim.pid.wait_exit()
        assert isinstance(reason, ActorLost)
        await Supervisor.wait_restarted(tree.pid, victim.id, victim.pid)
        await _until(lambda: _progress(client) == (MESSAGES, 0), "every message is acknowledged")
        handled = {int(n) for n in client.smembers(f"{STREAM}:handled")}
        assert handled == set(range(MESSAGES))  # none lost
        assert int(client.get(f"{STREAM}:handles") or 0) >= MESSAGES  # at least once
        counts = await replica_statistics(tree.pid)
        assert len(counts) == 2 and all(c["failed"] == 0 for c in counts)
        watches = [
            RayActor.handle_of(c.pid).corral_watch.remote()  # type: ignore[union-attr]
            for c in await Supervisor.which_children(tree.pid)
            if c.pid is not None
        ]
    import ray

    for watch in watches:
        with pytest.raises(ray.exceptions.RayActorError):
            await watch
    assert _replicas() == []
    client.close()


async def test_a_factory_that_raises_fails_the_start_and_leaves_no_actor(
    ray_cluster: RayCluster,
) -> None:
    spec = pipeline_nodes("broken", "cluster_pipelines:broken", replicas=1)
    with pytest.raises(StartError) as info:
        async with Node([spec]):
            pass
    assert "replica 0: no pipeline today" in "".join(_chain(info.value))
    await _until(lambda: _replicas() == [], "the replica's actor is gone")


def _chain(exc: BaseException | None) -> list[str]:
    texts = []
    while exc is not None:
        texts.append(str(exc))
        exc = exc.__cause__
    return texts


def test_pipeline_nodes_checks_its_arguments() -> None:
    with pytest.raises(ValueError) as info:
        pipeline_nodes("p", "no_colon", replicas=1)
    assert str(info.value) == (
        "pipeline_nodes: factory must be a str like 'module:attr'; got 'no_colon'"
    )
    with pytest.raises(ValueError) as info:
        pipeline_nodes("p", "m:f", replicas=0)
    assert str(info.value) == "pipeline_nodes 'p': replicas must be an int >= 1; got 0"
    with pytest.raises(TypeError) as type_info:
        pipeline_nodes("p", "m:f", replicas=1, args={"when": object()})
    assert str(type_info.value).startswith(
        "pipeline_nodes 'p' args: cannot encode a value of type object;"
    )
