"""The spare pool stops the spares of options no live port uses once they are released
(real worker processes)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from corral import Node
from corral.port import Port
from corral.port.spares import release_spares, wait_spares
from corral.runtime.messages import SHUTDOWN

pytestmark = pytest.mark.realtime


def alive(os_pid: int) -> bool:
    try:
        os.kill(os_pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_release_stops_the_spares_once_no_live_port_uses_the_options(
    handler_env: dict[str, str],
) -> None:
    async with Node() as node:
        first = await node.spawn(Port("port_handlers:Echo", env=handler_env, spares=1))
        second = await node.spawn(Port("port_handlers:Echo", env=handler_env, spares=1))
        options = Port.running_as(first).options  # type: ignore[union-attr]
        [spare] = await wait_spares(node, options)
        first.exit(SHUTDOWN)
        await first.wait_exit()
        # The second port still uses these options: its restart would want the spare.
        assert await release_spares(node, options) == []
        assert alive(spare)
        # A crash is no release: the spare stays for the restart.
        os.kill(Port.os_pid_of(second) or 0, signal.SIGKILL)
        await second.wait_exit()
        assert alive(spare)
        # Nobody uses them now: the spare is stopped, and gone when release returns.
        assert await release_spares(node, options) == [spare]
        assert not alive(spare)
        # A later port with the same options starts the pool's spares again.
        await node.spawn(Port("port_handlers:Echo", env=handler_env, spares=1))
        [again] = await wait_spares(node, options)
        assert again != spare and alive(again)
    assert not alive(again)


async def test_release_without_a_pool_does_nothing(handler_env: dict[str, str]) -> None:
    async with Node() as node:
        port = Port("port_handlers:Echo", env=handler_env, spares=0)
        assert await release_spares(node, port.options) == []


def setups(log: str) -> list[tuple[int, str]]:
    with open(log) as f:
        return [(int(pid), what) for pid, what in (line.split() for line in f)]


async def test_a_cold_port_starts_its_spare_once_it_is_up_and_a_port_waits_for_a_starting_spare(
    handler_env: dict[str, str], tmp_path: Path
) -> None:
    log = str(tmp_path / "setups")
    options = {"env": handler_env, "spares": 1, "args": {"log": log}}
    async with Node() as node:
        first = await node.spawn(Port("port_handlers:LoggedSetup", **options))
        # The first port found no spare: it started its own worker, and its spare starts
        # only now that it is up (one setup at a time).
        second = await node.spawn(Port("port_handlers:LoggedSetup", **options))
        # The second found that spare starting: it waited for it and adopted it.
        first_pid, second_pid = Port.os_pid_of(first), Port.os_pid_of(second)
        assert setups(log) == [
            (first_pid, "start"),
            (first_pid, "end"),
            (second_pid, "start"),
            (second_pid, "end"),
        ]
        # Taking it started the next spare.
        [spare] = await wait_spares(node, Port.running_as(second).options)  # type: ignore[union-attr]
        assert spare not in (first_pid, second_pid)


async def test_a_spare_handed_to_a_port_that_died_before_reading_it_is_reaped(
    handler_env: dict[str, str],
) -> None:
    # The pool's reply is the hand-over. A port killed between its take and reading the reply
    # (a swap retiring a partition that was restarting, say) must not orphan the worker.
    from corral import Actor
    from corral.port.spares import POOL_NAME
    from corral.port.worker_process import WorkerProcess

    async with Node() as node:
        port = await node.spawn(Port("port_handlers:Echo", env=handler_env, spares=1))
        options = Port.running_as(port).options  # type: ignore[union-attr]
        [spare] = await wait_spares(node, options)
        gone = await node.spawn(Actor())
        gone.exit(SHUTDOWN)
        await gone.wait_exit()
        pool = node.whereis(POOL_NAME)
        assert pool is not None
        worker = await pool.call(("take", options, gone))  # as if `gone` had asked, then died
        assert isinstance(worker, WorkerProcess) and worker.os_pid == spare
    # The node's stop waited for the worker's reap: it is gone, not left running.
    assert worker.down is not None
    assert not alive(spare)
