"""The spare pool stops the spares of options no live port uses once they are released
(real worker processes)."""

from __future__ import annotations

import os
import signal

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
