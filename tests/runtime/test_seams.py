"""The runtime's seams for the packages built on it: owned tasks, waiting for a restart,
system messages, reading a process kind's own actor, children whose crash a parent reports."""

from __future__ import annotations

import asyncio

import pytest
from runtime_helpers import Echo

from corral import (
    Actor,
    ChildNotRestarted,
    ChildSpec,
    ExitReason,
    MailboxFull,
    Node,
    NoProcess,
    ProcessExited,
    RestartIntensityExceeded,
    Supervisor,
    UnknownChild,
)
from corral.testing import wait_all_tasks_blocked


class Owner(Actor):
    """Starts tasks on request; logs what its hooks see."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def handle_call(self, msg: object) -> object:
        coro, name = msg  # type: ignore[misc]
        return self.start_task(coro, name=name)

    async def terminate(self, reason: ExitReason) -> None:
        self.log.append(f"terminate {reason}")


async def test_an_owned_task_is_cancelled_and_finished_before_terminate_runs() -> None:
    log: list[str] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            log.append("task ended")

    async with Node() as node:
        pid = await node.spawn(Owner(log))
        task = await pid.call((forever(), "forever"))
        assert isinstance(task, asyncio.Task) and task.get_name() == "forever"
        await wait_all_tasks_blocked()
        pid.exit("shutdown")
        assert await pid.wait_exit() == "shutdown"
        assert log == ["task ended", "terminate shutdown"]
        assert task.cancelled()


async def test_a_failing_owned_task_crashes_its_process_with_the_error() -> None:
    boom = ValueError("boom")

    async def fail() -> None:
        raise boom

    log: list[str] = []
    async with Node() as node:
        pid = await node.spawn(Owner(log))
        await pid.call((fail(), None))
        assert await pid.wait_exit() is boom
        assert log == ["terminate boom"]


async def test_a_killed_process_cancels_its_tasks_and_the_node_waits_for_them() -> None:
    log: list[str] = []

    async def slow_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(1.0)
            log.append("cleaned")

    node = Node()
    async with node:
        pid = await node.spawn(Owner(log))
        task = await pid.call((slow_cleanup(), None))
        await wait_all_tasks_blocked()
        pid.exit("kill")
        await pid.wait_exit()
        assert not task.done()
    assert log == ["cleaned"]


async def test_start_task_on_an_ended_process_raises_and_closes_the_coroutine() -> None:
    async def never() -> None:
        raise AssertionError("never runs")

    async with Node() as node:
        actor = Owner([])
        pid = await node.spawn(actor)
        pid.exit("kill")
        await pid.wait_exit()
        coro = never()
        with pytest.raises(NoProcess, match="start_task to process"):
            actor.start_task(coro)
        assert coro.cr_frame is None  # closed: no "never awaited" warning


class Crashy(Actor):
    def handle_cast(self, msg: object) -> None:
        raise RuntimeError(f"crash {msg}")

    def handle_call(self, msg: object) -> object:
        return msg


async def test_wait_restarted_returns_the_replacement_once_the_supervisor_restarted_it() -> None:
    async with Node() as node:
        sup = await node.spawn(Supervisor([ChildSpec(id="c", start=Crashy)]))
        old = (await Supervisor.which_children(sup))[0].pid
        assert old is not None
        waiting = asyncio.ensure_future(Supervisor.wait_restarted(sup, "c", old))
        await wait_all_tasks_blocked()
        assert not waiting.done()  # the child still runs as old
        old.cast(1)
        new = await waiting
        assert new is not old and new.alive
        assert (await Supervisor.which_children(sup))[0].pid is new
        assert await Supervisor.wait_restarted(sup, "c", old) is new  # at once now


async def test_wait_restarted_raises_when_the_child_will_not_come_back() -> None:
    async with Node() as node:
        spec = ChildSpec(id="t", start=Crashy, restart="transient")
        sup = await node.spawn(Supervisor([spec]))
        old = (await Supervisor.which_children(sup))[0].pid
        assert old is not None
        waiting = asyncio.ensure_future(Supervisor.wait_restarted(sup, "t", old))
        await wait_all_tasks_blocked()
        old.exit("shutdown")  # a transient child's clean exit: not restarted
        with pytest.raises(ChildNotRestarted) as info:
            await waiting
        assert str(info.value) == (
            f"supervisor {sup}: child 't' is stopped and will not be restarted"
        )
        with pytest.raises(ChildNotRestarted):
            await Supervisor.wait_restarted(sup, "t", old)
        with pytest.raises(UnknownChild):
            await Supervisor.wait_restarted(sup, "nope", old)


async def test_wait_restarted_fails_with_the_supervisors_reason_when_it_gives_up() -> None:
    async with Node() as node:
        sup = await node.spawn(Supervisor([ChildSpec(id="c", start=Crashy)], max_restarts=0))
        old = (await Supervisor.which_children(sup))[0].pid
        assert old is not None
        waiting = asyncio.ensure_future(Supervisor.wait_restarted(sup, "c", old))
        await wait_all_tasks_blocked()
        old.cast(1)
        with pytest.raises(ProcessExited) as info:
            await waiting
        assert isinstance(info.value.reason, RestartIntensityExceeded)


class Quiet(Actor):
    pass


async def test_send_system_reaches_handle_info_past_a_full_mailbox() -> None:
    async with Node() as node:
        actor = Echo()
        pid = await node.spawn(actor, mailbox_size=1)
        pid.send(1)
        with pytest.raises(MailboxFull):
            pid.send(2)
        pid.send_system(3)
        await wait_all_tasks_blocked()
        assert actor.infos == [1, 3]
        pid.exit("kill")
        await pid.wait_exit()
        pid.send_system(4)  # no effect on a dead process


async def test_running_as_gives_a_process_kind_its_own_actor_and_nothing_else() -> None:
    async with Node() as node:
        echo = Echo()
        pid = await node.spawn(echo)
        assert Echo.running_as(pid) is echo
        assert Actor.running_as(pid) is echo
        assert Quiet.running_as(pid) is None
        pid.exit("kill")
        await pid.wait_exit()
        assert Echo.running_as(pid) is None
