"""One model version's partitions: a ``Supervisor`` of partitions and the server's view of
each (idle, busy, down).

Runs in the server's tasks only. ``start`` spawns the supervisor linked to the server (it
must be called from the server's task, or a task the server spawned); ``recover`` waits for
the supervisor to restart a partition that died; ``stop`` shuts the supervisor down.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from corral.errors import NoProcess, ProcessExited
from corral.runtime.messages import SHUTDOWN
from corral.runtime.process import Pid
from corral.runtime.supervisor import Supervisor
from corral.serving.partitions import ThreadPartition, partition_spec
from corral.serving.records import PartitionStatistics

if TYPE_CHECKING:
    from corral.serving.factory import ModelFactory
    from corral.serving.job import Job
    from corral.serving.server import ServingServer

__all__ = ["Generation", "Slot"]


class Slot:
    """The server's view of one partition."""

    __slots__ = ("batches", "busy", "crashes", "direct", "down", "index", "job", "pid", "timer")

    def __init__(self, index: int, pid: Pid) -> None:
        self.index = index
        self.pid = pid
        self.busy = False
        self.down = False
        self.batches = 0
        self.crashes = 0
        # Set by ServingServer.bind: the partition whose thread takes batches directly
        # (None: batches go through ``pid.call``), the job it runs, its call_timeout timer.
        self.direct: ThreadPartition | None = None
        self.job: Job | None = None
        self.timer: asyncio.TimerHandle | None = None


class Generation:
    """The partitions of one model version."""

    def __init__(
        self, server: ServingServer, factory: ModelFactory, version: str, number: int
    ) -> None:
        self.server = server
        self.factory = factory
        self.version = version
        self.number = number
        self.supervisor: Pid | None = None
        self.slots: list[Slot] = []
        self.idle: list[Slot] = []
        self.stopping = False
        self._drained: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Start every partition (in order; each loads its model before the next starts).
        Raises ``StartError`` if one fails to load."""
        options = self.server.options
        name = self.server.name
        specs = [
            partition_spec(self.factory, options, index=i, label=f"{name}-v{self.number}-p{i}")
            for i in range(options.partitions)
        ]
        sup = Supervisor(specs, max_restarts=max(3, 2 * options.partitions), max_seconds=5.0)
        self.supervisor = await self.server.spawn(sup, link=True)
        for info in await Supervisor.which_children(self.supervisor):
            assert info.pid is not None
            slot = Slot(len(self.slots), info.pid)
            self.server.bind(self, slot)
            self.slots.append(slot)
        self.idle = list(reversed(self.slots))

    def release(self, slot: Slot) -> None:
        """``slot`` finished its batch: it is idle again (and may drain this version)."""
        if not slot.down:
            self.idle.append(slot)
        self.release_check()

    async def recover(self, slot: Slot) -> None:
        """Wait for the supervisor to restart ``slot``'s partition, then mark it idle and
        let the server dispatch to it. Runs as a server task."""
        slot.down = True
        dead = slot.pid
        await dead.wait_exit()
        sup = self.supervisor
        if sup is None or not sup.alive or self.stopping:
            return
        # The supervisor has the exit notice queued by now: this call returns after the
        # restart (or the supervisor gives up, which ends the server through the link).
        try:
            children = await Supervisor.which_children(sup)
        except (NoProcess, ProcessExited):
            if self.retired():
                return  # a swap or a stop retired this version meanwhile
            raise
        for info in children:
            if info.id == f"partition-{slot.index}" and info.pid is not None:
                slot.pid = info.pid
                self.server.bind(self, slot)
                slot.down = False
                self.idle.append(slot)
                self.release_check()
                self.server.pump()
                return

    def release_check(self) -> None:
        """Wake ``drain`` if no batch of this version runs any more."""
        drained = self._drained
        if drained is not None and not drained.done() and not any(s.busy for s in self.slots):
            drained.set_result(None)

    def retired(self) -> bool:
        """Whether ``stop`` was called (the version is going away)."""
        return self.stopping

    async def drain(self) -> None:
        """Wait until no batch of this version runs."""
        if not any(s.busy for s in self.slots):
            return
        self._drained = asyncio.get_running_loop().create_future()
        await self._drained

    async def stop(self) -> None:
        """Shut the partitions down (from the server's task or one it spawned)."""
        self.stopping = True
        sup = self.supervisor
        if sup is not None and sup.alive:
            sup.exit(SHUTDOWN)
            await sup.wait_exit()

    def statistics(self, *, draining: bool) -> list[PartitionStatistics]:
        kind = self.server.options.kind
        rows = []
        for slot in self.slots:
            if slot.down:
                state = "down"
            elif slot.busy:
                state = "busy"
            else:
                state = "draining" if draining else "idle"
            rows.append(
                PartitionStatistics(
                    slot.index,
                    self.version,
                    kind,
                    state,
                    slot.batches,
                    slot.crashes,
                    getattr(slot.pid._actor, "os_pid", None),
                )
            )
        return rows
