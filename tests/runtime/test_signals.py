"""Links, monitors, exit signals, trap_exit and timers."""

from __future__ import annotations

import asyncio

import pytest
from runtime_helpers import Echo, Recorder

from corral import Actor, Down, Exit, ExitReason, Node, NoProcess, Pid, StartError
from corral.testing import wait_all_tasks_blocked


class Linker(Recorder):
    """A Recorder that links/monitors on request and reports what it received."""

    async def handle_call(self, msg: object) -> object:  # type: ignore[override]
        match msg:
            case ("link", Pid() as other):
                self.link(other)
                return "linked"
            case ("unlink", Pid() as other):
                self.unlink(other)
                return "unlinked"
            case ("monitor", Pid() as other):
                return self.monitor(other)
            case ("demonitor", ref):
                return self.demonitor(ref)  # type: ignore[arg-type]
            case ("spawn_link", Actor() as actor):
                return await self._spawn_link(actor)
        return super().handle_call(msg)

    async def _spawn_link(self, actor: Actor) -> object:
        try:
            return await self.spawn(actor, link=True)
        except StartError as exc:
            return exc


async def _linked_pair(node: Node, *, trap_b: bool = False) -> tuple[Pid, Pid]:
    log: list[tuple[str, str]] = []
    a = await node.spawn(Linker("a", log))
    b = await node.spawn(Linker("b", log, trap=trap_b))
    assert await a.call(("link", b)) == "linked"
    return a, b


async def test_a_linked_process_dies_with_the_same_reason() -> None:
    async with Node() as node:
        a, b = await _linked_pair(node)
        a.cast(("crash", "disk full"))
        reason_a = await a.wait_exit()
        assert await b.wait_exit() is reason_a


async def test_links_propagate_exits_both_ways() -> None:
    async with Node() as node:
        a, b = await _linked_pair(node)
        b.cast(("crash", "oom"))
        assert isinstance(await a.wait_exit(), RuntimeError)


async def test_a_normal_exit_does_not_end_linked_processes() -> None:
    async with Node() as node:
        a, b = await _linked_pair(node)
        await a.call(("stop", "normal"))
        assert await a.wait_exit() == "normal"
        await wait_all_tasks_blocked()
        assert b.alive


async def test_unlink_stops_propagation() -> None:
    async with Node() as node:
        a, b = await _linked_pair(node)
        await a.call(("unlink", b))
        a.cast(("crash", "x"))
        await a.wait_exit()
        await wait_all_tasks_blocked()
        assert b.alive


async def test_linking_to_a_dead_process_raises_no_process() -> None:
    async with Node() as node:
        a = await node.spawn(Linker("a", []))
        dead = await node.spawn(Echo())
        dead.exit("kill")
        await dead.wait_exit()
        # the hook raises NoProcess, which ends a: linking to the dead is an error
        with pytest.raises(Exception, match="link to process"):
            await a.call(("link", dead))


async def test_a_process_that_traps_exits_receives_exit_messages_instead_of_dying() -> None:
    async with Node() as node:
        a, b = await _linked_pair(node, trap_b=True)
        a.cast(("crash", "boom"))
        reason = await a.wait_exit()
        await wait_all_tasks_blocked()
        assert b.alive
        assert await b.call("infos") == [Exit(a, reason)]


async def test_a_trapping_process_also_receives_normal_exits() -> None:
    async with Node() as node:
        a, b = await _linked_pair(node, trap_b=True)
        await a.call(("stop", "normal"))
        await a.wait_exit()
        assert await b.call("infos") == [Exit(a, "normal")]


async def test_kill_cannot_be_trapped_and_links_receive_killed() -> None:
    async with Node() as node:
        a, b = await _linked_pair(node, trap_b=True)
        b.exit("kill")
        assert await b.wait_exit() == "killed"
        assert await a.wait_exit() == "killed"


async def test_exit_with_normal_is_ignored_by_a_process_that_does_not_trap() -> None:
    async with Node() as node:
        pid = await node.spawn(Echo())
        pid.exit("normal")
        await wait_all_tasks_blocked()
        assert pid.alive


async def test_an_exit_signal_interrupts_a_handler_that_is_awaiting() -> None:
    log: list[str] = []

    class Busy(Actor):
        async def handle_cast(self, msg: object) -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                log.append("interrupted")

        def terminate(self, reason: ExitReason) -> None:
            log.append(f"terminate {reason}")

    async with Node() as node:
        pid = await node.spawn(Busy())
        pid.cast("work")
        await wait_all_tasks_blocked()
        pid.exit("shutdown")
        assert await pid.wait_exit() == "shutdown"
        assert log == ["interrupted", "terminate shutdown"]
        assert asyncio.get_running_loop().time() == 0.0


async def test_a_trapping_process_stops_on_an_exit_from_its_parent_and_runs_terminate() -> None:
    log: list[tuple[str, str]] = []
    async with Node() as node:
        parent = await node.spawn(Linker("parent", log))
        child = await parent.call(("spawn_link", Recorder("child", log, trap=True)))
        assert isinstance(child, Pid)
        parent.cast(("crash", "parent failed"))
        reason = await child.wait_exit()
        assert isinstance(reason, RuntimeError)
        assert log == [
            ("start", "parent"),
            ("start", "child"),
            ("stop", "parent"),
            ("stop", "child"),
        ]


async def test_init_failure_under_link_raises_start_error_without_killing_the_parent() -> None:
    class Broken(Actor):
        def init(self) -> None:
            raise OSError("port in use")

    async with Node() as node:
        parent = await node.spawn(Linker("parent", []))
        result = await parent.call(("spawn_link", Broken()))
        assert isinstance(result, StartError)
        await wait_all_tasks_blocked()
        assert parent.alive


async def test_a_monitor_delivers_one_down_with_the_reason() -> None:
    async with Node() as node:
        watcher = await node.spawn(Linker("w", []))
        target = await node.spawn(Linker("t", []))
        ref = await watcher.call(("monitor", target))
        target.cast(("crash", "segfault"))
        reason = await target.wait_exit()
        assert await watcher.call("infos") == [Down(ref, target, reason)]  # type: ignore[arg-type]


async def test_monitoring_a_dead_process_delivers_noproc_at_once() -> None:
    async with Node() as node:
        watcher = await node.spawn(Linker("w", []))
        target = await node.spawn(Echo())
        target.exit("kill")
        await target.wait_exit()
        ref = await watcher.call(("monitor", target))
        assert await watcher.call("infos") == [Down(ref, target, "noproc")]  # type: ignore[arg-type]


async def test_demonitor_means_no_down_arrives() -> None:
    async with Node() as node:
        watcher = await node.spawn(Linker("w", []))
        target = await node.spawn(Echo())
        ref = await watcher.call(("monitor", target))
        assert await watcher.call(("demonitor", ref)) is True
        assert await watcher.call(("demonitor", ref)) is False
        target.exit("kill")
        await target.wait_exit()
        assert await watcher.call("infos") == []


async def test_two_monitors_deliver_two_downs() -> None:
    async with Node() as node:
        watcher = await node.spawn(Linker("w", []))
        target = await node.spawn(Echo())
        first = await watcher.call(("monitor", target))
        second = await watcher.call(("monitor", target))
        target.exit("shutdown")
        await target.wait_exit()
        infos = await watcher.call("infos")
        assert infos == [Down(first, target, "shutdown"), Down(second, target, "shutdown")]  # type: ignore[arg-type]


class Ticker(Actor):
    def __init__(self) -> None:
        self.ticks: list[tuple[float, object]] = []

    def handle_call(self, msg: object) -> object:
        match msg:
            case ("after", delay, what):
                return self.send_after(delay, what)  # type: ignore[arg-type]
        return msg

    def handle_info(self, msg: object) -> None:
        self.ticks.append((asyncio.get_running_loop().time(), msg))


async def test_send_after_delivers_at_its_exact_time() -> None:
    ticker = Ticker()
    async with Node() as node:
        pid = await node.spawn(ticker)
        await pid.call(("after", 2.0, "b"))
        await pid.call(("after", 0.5, "a"))
        await asyncio.sleep(10)
        assert ticker.ticks == [(0.5, "a"), (2.0, "b")]


async def test_a_cancelled_timer_never_delivers() -> None:
    ticker = Ticker()
    async with Node() as node:
        pid = await node.spawn(ticker)
        timer = await pid.call(("after", 1.0, "never"))
        assert timer.active  # type: ignore[attr-defined]
        assert timer.cancel() is True  # type: ignore[attr-defined]
        assert timer.cancel() is False  # type: ignore[attr-defined]
        await asyncio.sleep(10)
        assert ticker.ticks == []


async def test_timers_of_a_process_are_cancelled_when_it_ends() -> None:
    async with Node() as node:
        pid = await node.spawn(Ticker())
        timer = node.send_after(5.0, pid, "late")
        pid.exit("kill")
        await pid.wait_exit()
        assert not timer.active
        with pytest.raises(ValueError, match="delay must be >= 0; got -1"):
            node.send_after(-1, await node.spawn(Ticker()), "x")
        with pytest.raises(NoProcess):
            node.send_after(1.0, pid, "x")
