"""Stand-ins: a corral process owns each Ray actor; its death is the process's crash.

Real Ray actors on the session's cluster; crashes are real SIGKILLs of the actor's worker
process. Real time: Ray's own clocks run.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
from cluster_models import Echo
from ray_cluster import RayCluster

from corral import ActorLost, Node, RestartIntensityExceeded, StartError, Supervisor
from corral.cluster import HANDLE, ActorSpec, RayActor, actor_spec, live_actors

pytestmark = pytest.mark.realtime


def echo(name: str, **kwargs: object) -> ActorSpec:
    return ActorSpec(cls=Echo, args=(name,), kwargs=kwargs, name=name, num_cpus=0)


async def died(ref: Any) -> BaseException:
    """Await ``ref``, a call on an actor that is being killed: Ray's error once it is dead."""
    import ray

    with pytest.raises(ray.exceptions.RayActorError) as info:
        await ref
    return info.value


def names() -> set[str]:
    return set(live_actors())


async def test_a_stand_in_owns_its_actor_and_kills_it_when_stopped(ray_cluster: RayCluster) -> None:
    async with Node([actor_spec("echo", echo("t-owned"))]) as node:
        (child,) = await Supervisor.which_children(node.root)
        assert child.pid is not None
        handle: Any = await child.pid.call(HANDLE)
        assert RayActor.handle_of(child.pid) is handle
        assert await handle.echo.remote([1, "two"]) == [1, "two"]
        assert "t-owned" in names()
        watch = handle.corral_watch.remote()
    await died(watch)
    assert "t-owned" not in names()


async def test_a_sigkilled_actor_is_its_stand_ins_crash_and_the_supervisor_recreates_it(
    ray_cluster: RayCluster,
) -> None:
    async with Node([actor_spec("echo", echo("t-killed"))]) as node:
        (child,) = await Supervisor.which_children(node.root)
        assert child.pid is not None
        old: Any = await child.pid.call(HANDLE)
        os_pid, _ = await old.where.remote()
        os.kill(os_pid, signal.SIGKILL)
        reason = await child.pid.wait_exit()
        assert isinstance(reason, ActorLost)
        assert reason.actor == "Ray actor 't-killed'"
        assert reason.cause.startswith("ActorDiedError: ")
        new_pid = await Supervisor.wait_restarted(node.root, "echo", child.pid)
        new: Any = await new_pid.call(HANDLE)
        new_os_pid, _ = await new.where.remote()
        assert new_os_pid != os_pid
        assert await new.echo.remote(7) == 7
        (after,) = await Supervisor.which_children(node.root)
        assert after.restart_count == 1


async def test_a_constructor_that_raises_fails_the_stand_ins_start(ray_cluster: RayCluster) -> None:
    async with Node() as node:
        with pytest.raises(StartError) as info:
            await node.spawn(RayActor(echo("t-broken", fail=True)))
        cause = info.value.__cause__
        assert isinstance(cause, ActorLost)
        assert "t-broken" in str(cause)
    assert "t-broken" not in names()


async def test_actors_dying_beyond_the_intensity_make_the_supervisor_give_up(
    ray_cluster: RayCluster,
) -> None:
    node = Node([actor_spec("echo", echo("t-intense"))], max_restarts=1, max_seconds=60.0)
    async with node:
        for _ in range(2):
            (child,) = await Supervisor.which_children(node.root)
            assert child.pid is not None
            handle: Any = await child.pid.call(HANDLE)
            os_pid, _ = await handle.where.remote()
            os.kill(os_pid, signal.SIGKILL)
            await child.pid.wait_exit()
        reason = await node.wait_stopped()
    assert isinstance(reason, RestartIntensityExceeded)
    assert "t-intense" not in names()
