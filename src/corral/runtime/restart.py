"""Supervisor policy as plain values: which children a failure touches, and when a
supervisor has restarted too often. No event loop here; tested on its own."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from corral.runtime.messages import ExitReason, is_clean_exit

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]

STRATEGIES: tuple[Strategy, ...] = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_TYPES: tuple[RestartType, ...] = ("permanent", "transient", "temporary")


def should_restart(restart: RestartType, reason: ExitReason) -> bool:
    """``permanent``: always; ``transient``: after an exit that is not clean (not
    ``normal``/``shutdown``); ``temporary``: never."""
    if restart == "permanent":
        return True
    if restart == "transient":
        return not is_clean_exit(reason)
    return False


@dataclass(frozen=True, slots=True)
class RestartPlan:
    """What a supervisor does after child ``failed`` exited and must be restarted.

    ``stop``: running siblings to stop, in this order (reverse start order);
    ``remove``: temporary siblings that are stopped and forgotten, not restarted;
    ``start``: children to start, in this order (start order), the failed one included.
    """

    stop: tuple[str, ...]
    remove: tuple[str, ...]
    start: tuple[str, ...]


def plan_restart(
    strategy: Strategy, children: Sequence[tuple[str, RestartType]], failed: str
) -> RestartPlan:
    """The restart plan for ``strategy``, given the children as ``(id, restart)`` in start
    order. ``one_for_one`` touches only ``failed``; ``one_for_all`` every child;
    ``rest_for_one`` ``failed`` and the children started after it. Siblings that are not
    running are skipped by the caller when stopping, and started again like the others.
    """
    if strategy == "one_for_one":
        return RestartPlan(stop=(), remove=(), start=(failed,))
    ids = [child_id for child_id, _ in children]
    index = ids.index(failed)
    affected = list(children) if strategy == "one_for_all" else list(children[index:])
    siblings = [(cid, restart) for cid, restart in affected if cid != failed]
    return RestartPlan(
        stop=tuple(cid for cid, _ in reversed(siblings)),
        remove=tuple(cid for cid, restart in siblings if restart == "temporary"),
        start=tuple(cid for cid, restart in affected if cid == failed or restart != "temporary"),
    )


class RestartIntensity:
    """Counts restarts in a sliding window of ``max_seconds``.

    ``add(now)`` records a restart and answers whether the supervisor may go on: it may
    while at most ``max_restarts`` restarts are younger than ``max_seconds`` (a restart
    exactly ``max_seconds`` old no longer counts). Memory is bounded by ``max_restarts + 1``.
    """

    __slots__ = ("_times", "max_restarts", "max_seconds")

    def __init__(self, max_restarts: int, max_seconds: float) -> None:
        self.max_restarts = max_restarts
        self.max_seconds = max_seconds
        self._times: deque[float] = deque()

    def add(self, now: float) -> bool:
        """Record a restart at ``now`` (seconds); False means the limit is exceeded."""
        times = self._times
        times.append(now)
        while times and now - times[0] >= self.max_seconds:
            times.popleft()
        if len(times) > self.max_restarts + 1:
            times.popleft()
        return len(times) <= self.max_restarts

    def used(self, now: float) -> int:
        """Restarts recorded in the ``max_seconds`` before ``now`` (seconds): those that
        count against ``max_restarts`` if another came now."""
        return sum(1 for t in self._times if now - t < self.max_seconds)

    @property
    def recent(self) -> int:
        """Restarts recorded in the current window (as of the last ``add``)."""
        return len(self._times)
