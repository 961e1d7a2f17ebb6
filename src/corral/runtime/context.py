"""Which process and which node the running code belongs to.

Every process runs in its own asyncio task, created with a copy of the spawner's context in
which ``current_pid`` is set to the new process; code outside any process sees ``None``.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

from corral.errors import NodeError

if TYPE_CHECKING:
    from corral.runtime.node import Node
    from corral.runtime.process import Pid

current_pid: ContextVar[Pid | None] = ContextVar("corral_current_pid", default=None)
current_node: ContextVar[Node | None] = ContextVar("corral_current_node", default=None)


def self_pid() -> Pid:
    """The pid of the process running this code; ``RuntimeError`` outside any process."""
    pid = current_pid.get()
    if pid is None:
        raise RuntimeError("self_pid: not called from inside a corral process")
    return pid


def get_node() -> Node:
    """The node the running code belongs to; ``NodeError`` outside a running node."""
    node = current_node.get()
    if node is None:
        raise NodeError(
            "get_node: no corral node is running in this context; use `async with Node()`"
        )
    return node
