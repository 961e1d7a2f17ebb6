"""The node's system supervisor: services a higher layer shares (the port spare pool)."""

from __future__ import annotations

import asyncio

from runtime_helpers import Recorder

from corral import KILL, ChildSpec, Node, Supervisor
from corral.runtime.node import SYSTEM_SUPERVISOR

Log = list[tuple[str, str]]


def spec(tag: str, log: Log) -> ChildSpec:
    return ChildSpec(id=tag, start=lambda: Recorder(tag, log), name=tag)


async def test_a_node_without_system_children_has_no_system_supervisor() -> None:
    async with Node() as node:
        assert node.whereis(SYSTEM_SUPERVISOR) is None
        assert node.processes() == [node.root]


async def test_a_system_child_runs_once_under_the_system_supervisor_outside_the_tree() -> None:
    log: Log = []
    async with Node([spec("app", log)]) as node:
        first, second, third = await asyncio.gather(
            *(node.start_system_child(spec("pool", log)) for _ in range(3))
        )
        assert first is second is third is node.whereis("pool")
        system = node.lookup(SYSTEM_SUPERVISOR)
        assert [(c.id, c.pid) for c in await Supervisor.which_children(system)] == [("pool", first)]
        assert [c.id for c in await Supervisor.which_children(node.root)] == ["app"]
        assert await node.start_system_child(spec("pool", log)) is first
    assert log == [("start", "app"), ("start", "pool"), ("stop", "app"), ("stop", "pool")]


async def test_a_crashed_system_child_is_restarted_by_the_system_supervisor() -> None:
    log: Log = []
    async with Node() as node:
        first = await node.start_system_child(spec("pool", log))
        system = node.lookup(SYSTEM_SUPERVISOR)
        first.exit(KILL)
        second = await Supervisor.wait_restarted(system, "pool", first, timeout=5.0)
        assert second is not first
        assert await node.start_system_child(spec("pool", log)) is second
