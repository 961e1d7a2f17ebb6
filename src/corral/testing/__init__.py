"""Deterministic concurrency for tests: a virtual clock, gates and "all tasks blocked" waits.

``run`` runs a coroutine on a ``VirtualTimeLoop``, whose clock jumps to the next timer
whenever every task is waiting, so timeouts take no real time and land on exact timestamps.
``wait_all_tasks_blocked`` and ``Gate`` force an order between tasks without sleeps. The pytest
plugin (``corral.testing.pytest_plugin``) runs ``async def`` tests this way.
"""

from corral.testing.gates import Gate
from corral.testing.virtual_time import (
    VirtualTimeLoop,
    new_event_loop,
    run,
    wait_all_tasks_blocked,
)

__all__ = [
    "Gate",
    "VirtualTimeLoop",
    "new_event_loop",
    "run",
    "wait_all_tasks_blocked",
]
