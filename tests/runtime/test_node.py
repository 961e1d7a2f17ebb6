"""The node: start/stop, shutdown order and timeouts, sync run, signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from runtime_helpers import Echo, Recorder

from corral import (
    Actor,
    ChildSpec,
    ExitReason,
    Node,
    NodeError,
    RestartIntensityExceeded,
    StartError,
    Supervisor,
)
from corral.runtime.context import get_node
from corral.testing import wait_all_tasks_blocked

Log = list[tuple[str, str]]


def spec(tag: str, log: Log, **kw: object) -> ChildSpec:
    return ChildSpec(id=tag, start=lambda: Recorder(tag, log), name=tag, **kw)  # type: ignore[arg-type]


async def test_a_node_starts_its_children_in_order_and_stops_them_in_reverse() -> None:
    log: Log = []
    async with Node([spec("a", log), spec("b", log), spec("c", log)]) as node:
        assert node.running
        assert node.registered() == ["a", "b", "c"]
        assert get_node() is node
    assert not node.running
    assert node.exit_reason == "shutdown"
    assert log == [
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("stop", "c"),
        ("stop", "b"),
        ("stop", "a"),
    ]


async def test_nested_trees_stop_depth_first_in_reverse_start_order() -> None:
    log: Log = []
    inner = ChildSpec(
        id="inner", start=lambda: Supervisor([spec("i1", log), spec("i2", log)]), type="supervisor"
    )
    async with Node([spec("a", log), inner, spec("z", log)]):
        pass
    assert [e for e in log if e[0] == "stop"] == [
        ("stop", "z"),
        ("stop", "i2"),
        ("stop", "i1"),
        ("stop", "a"),
    ]


async def test_each_child_gets_its_own_shutdown_timeout_then_is_killed() -> None:
    class Slow(Recorder):
        async def terminate(self, reason: ExitReason) -> None:
            await asyncio.sleep(3600)

    log: Log = []
    loop = asyncio.get_running_loop()
    children = [
        spec("a", log),
        ChildSpec(id="slow1", start=lambda: Slow("slow1", log), shutdown=1.0),
        ChildSpec(id="slow2", start=lambda: Slow("slow2", log), shutdown=2.0),
    ]
    async with Node(children):
        start = loop.time()
    assert loop.time() - start == 3.0
    assert log[-1] == ("stop", "a")


async def test_processes_outside_the_tree_are_stopped_after_it() -> None:
    log: Log = []
    async with Node([spec("tree", log)]) as node:
        await node.spawn(Recorder("stray1", log))
        await node.spawn(Recorder("stray2", log))
    assert [e for e in log if e[0] == "stop"] == [
        ("stop", "tree"),
        ("stop", "stray2"),
        ("stop", "stray1"),
    ]


async def test_a_stray_that_does_not_stop_is_killed_after_the_node_shutdown_timeout() -> None:
    class Slow(Actor):
        async def terminate(self, reason: ExitReason) -> None:
            await asyncio.sleep(3600)

    loop = asyncio.get_running_loop()
    async with Node(shutdown_timeout=4.0) as node:
        pid = await node.spawn(Slow())
        start = loop.time()
    assert pid.exit_reason == "killed"
    assert loop.time() - start == 4.0


async def test_a_node_stopped_from_inside_one_of_its_processes_stops_completely() -> None:
    class Stopper(Actor):
        async def handle_cast(self, msg: object) -> None:
            await self.node.stop()

    async with Node() as node:
        pid = await node.spawn(Stopper())
        pid.cast("stop")
        assert await node.wait_stopped() == "shutdown"
        assert not pid.alive
        assert node.processes() == []


async def test_the_node_stops_with_the_root_supervisors_reason_when_it_gives_up() -> None:
    log: Log = []
    node = Node([spec("a", log)], max_restarts=0)
    async with node:
        node.lookup("a").cast(("crash", "fatal"))
        reason = await node.wait_stopped()
    assert isinstance(reason, RestartIntensityExceeded)
    assert node.exit_reason is reason


async def test_a_child_that_fails_to_start_makes_node_start_fail() -> None:
    class Broken(Actor):
        def init(self) -> None:
            raise KeyError("config")

    node = Node([ChildSpec(id="broken", start=Broken)])
    with pytest.raises(StartError):
        await node.start()
    assert not node.running


async def test_a_node_starts_once_and_spawn_needs_it_running() -> None:
    node = Node()
    with pytest.raises(NodeError, match="is not started"):
        _ = node.root
    async with node:
        with pytest.raises(NodeError, match="already started; a node starts once"):
            await node.start()
    with pytest.raises(NodeError, match="the node is not running"):
        await node.spawn(Echo())


async def test_start_child_adds_to_the_root_supervisor() -> None:
    log: Log = []
    async with Node() as node:
        pid = await node.start_child(spec("late", log))
        assert [c.pid for c in await Supervisor.which_children(node.root)] == [pid]
        await wait_all_tasks_blocked()
    assert log == [("start", "late"), ("stop", "late")]


def test_invalid_node_options_name_the_option() -> None:
    with pytest.raises(
        ValueError,
        match="invalid options for node 'corral': shutdown_timeout must be a number >= 0; got -1",
    ):
        Node(shutdown_timeout=-1)


def test_run_from_sync_code_returns_mains_result_and_stops_the_node() -> None:
    log: Log = []

    async def main(node: Node) -> object:
        return await node.lookup("a").call("ping")

    node = Node([spec("a", log)])
    assert node.run(main, loop_factory=asyncio.new_event_loop) == "ping"
    assert log == [("start", "a"), ("stop", "a")]
    assert node.exit_reason == "shutdown"


_SIGNAL_SCRIPT = textwrap.dedent(
    """
    import sys
    from corral import Actor, ChildSpec, Node

    class Loud(Actor):
        def __init__(self, tag):
            self.tag = tag
        def init(self):
            print("start", self.tag, flush=True)
        def terminate(self, reason):
            print("stop", self.tag, reason, flush=True)

    async def main(node):
        print("ready", flush=True)
        await node.wait_stopped()

    node = Node([ChildSpec(id=t, start=lambda t=t: Loud(t)) for t in ("a", "b", "c")])
    node.run(main)
    print("exited", node.exit_reason, flush=True)
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_running_node_gracefully_in_reverse_order(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SIGNAL_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.strip() == "ready":
                break
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    lines += out.strip().splitlines()
    assert proc.returncode == 0, err
    assert lines == [
        "start a",
        "start b",
        "start c",
        "ready",
        "stop c shutdown",
        "stop b shutdown",
        "stop a shutdown",
        "exited shutdown",
    ]


async def test_a_stray_supervisor_stops_its_own_children_in_reverse_start_order() -> None:
    log: Log = []
    async with Node() as node:
        sup = await node.spawn(Supervisor([spec("a", log), spec("b", log)]))
        node.lookup("a").cast(("crash", "a restarts with a newer pid than b"))
        await wait_all_tasks_blocked()
        assert sup.alive
        log.clear()
    assert log == [("stop", "b"), ("stop", "a")]
