"""'ray' partitions under faults: a SIGKILLed actor process, a worker node removed without
grace, restart intensity, and a shutdown that leaves no actor behind. Real Ray, real
SIGKILLs, real time."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from typing import Any

import numpy as np
import pytest
from cluster_models import sleepy_double
from ray_cluster import RayCluster, prefer

from corral import DeadlineExceeded, Node, Pid, Supervisor
from corral.cluster import RayPartition, serving_actors
from corral.serving import Serving

pytestmark = pytest.mark.realtime


def row(i: float) -> np.ndarray:
    return np.full(4, i, np.float32)


def stand_ins(s: Serving) -> list[RayPartition]:
    found = [RayPartition.running_as(pid) for pid in s.partition_pids()]
    assert all(p is not None for p in found)
    return found  # type: ignore[return-value]


def partitions(node: Node, serving: str) -> Pid:
    """The supervisor of the serving's (first version's) partitions."""
    (sup,) = [p for p in node.processes() if p.label == f"{serving}/partitions-v1"]
    return sup


async def wait_gone(handles: list[Any]) -> None:
    """Wait until each actor is dead (a call on it fails), as ray.kill does not wait."""
    import ray

    for handle in handles:
        with pytest.raises(ray.exceptions.RayActorError):
            await handle.corral_watch.remote()


async def test_a_sigkilled_partition_actor_under_load_loses_no_request(
    ray_cluster: RayCluster,
) -> None:
    slow = functools.partial(sleepy_double, 0.01)
    s = Serving(
        slow, name="r-kill", kind="ray", num_cpus=0.5, batch_size=8, batch_timeout=0.002,
        partitions=2,
    )  # fmt: skip
    async with Node([s.child_spec()]) as node:
        done = 0
        flowing = asyncio.Event()

        async def caller(i: int) -> None:
            nonlocal done
            for j in range(15):
                result = await s.run(row(i * 100 + j))
                assert float(result.output[0]) == 2.0 * (i * 100 + j)
                done += 1
                if done == 40:
                    flowing.set()

        callers = [asyncio.create_task(caller(i)) for i in range(32)]
        await flowing.wait()  # the load is flowing: both partitions run batches
        victim = s.statistics().partitions[0].os_pid
        assert victim is not None
        killed = s.partition_pids()[0]
        os.kill(victim, signal.SIGKILL)
        await asyncio.gather(*callers)
        stats = s.statistics()
        assert (stats.completed, stats.failed) == (32 * 15, 0)
        # Killed mid-batch (the usual case under this load), its batch was retried.
        assert stats.partitions[0].crashes == 1 and stats.retried_batches <= 1
        await Supervisor.wait_restarted(partitions(node, "r-kill"), "partition-0", killed)
        handles = [p.handle for p in stand_ins(s)]
        assert len(serving_actors("r-kill")) == 2
    await wait_gone(handles)
    assert serving_actors("r-kill") == []


async def test_a_lost_worker_node_moves_its_partitions_and_only_deadlines_fail(
    ray_cluster: RayCluster,
) -> None:
    node = ray_cluster.add_worker(num_cpus=2)
    slow = functools.partial(sleepy_double, 0.01)
    s = Serving(
        slow, name="r-node", kind="ray", num_cpus=0.5, batch_size=8, batch_timeout=0.002,
        partitions=2, ray_options={"scheduling_strategy": prefer(node)},
        # Both partitions die with the node: a batch retried after the first crash may
        # reach the second before its loss is seen (docs/cluster.md).
        retry_on_crash=2,
    )  # fmt: skip
    removed = False
    try:
        async with Node([s.child_spec()]) as corral_node:
            assert {p.node_id for p in stand_ins(s)} == {node.node_id}
            loop = asyncio.get_running_loop()
            completed = failed = 0
            target = 40
            flowing = asyncio.Event()
            recovered = asyncio.Event()

            async def caller(i: int) -> None:
                nonlocal completed, failed
                j = 0
                while not recovered.is_set():
                    x = i * 1000 + j
                    j += 1
                    try:
                        result = await s.run(row(x), deadline=10.0)
                    except DeadlineExceeded:
                        failed += 1
                        continue
                    assert float(result.output[0]) == 2.0 * x
                    completed += 1
                    if completed == 40:
                        flowing.set()
                    if completed >= target:
                        recovered.set()

            callers = [asyncio.create_task(caller(i)) for i in range(16)]
            await flowing.wait()
            target = 1 << 30
            old = s.partition_pids()
            ray_cluster.remove_worker(node)
            removed = True
            lost_at = loop.time()
            for pid in old:
                await pid.wait_exit()
            exited_within = loop.time() - lost_at
            # The supervisor re-creates both partitions where Ray can place them: the head
            # or the session's worker, never the lost node.
            sup = partitions(corral_node, "r-node")
            for i, pid in enumerate(old):
                await Supervisor.wait_restarted(sup, f"partition-{i}", pid)
            target = completed + 40
            await asyncio.gather(*callers)
            moved = {p.node_id for p in stand_ins(s)}
            stats = s.statistics()
    finally:
        if not removed:
            ray_cluster.remove_worker(node)
    assert exited_within < 5.0, f"stand-ins exited {exited_within:.2f} s after the node loss"
    assert node.node_id not in moved
    # Requests fail only by their deadline; none failed otherwise.
    assert stats.failed == 0
    assert stats.expired == failed
    assert [p.crashes for p in stats.partitions] == [1, 1]
