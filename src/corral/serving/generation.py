"""One model version's partitions: a ``Supervisor`` of partitions and the server's view of
each (idle, busy, down), with the runner that hands it batches.

Runs in the server's tasks only. ``start`` spawns the supervisor linked to the server (it
must be called from the server's task, or a task the server spawned) and starts every
partition at once (``start_concurrently``: each loads its model in parallel); ``recover``
waits for the supervisor to restart a partition that died; ``stop`` shuts the supervisor
down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral.errors import ChildNotRestarted, NoProcess, ProcessExited
from corral.runtime.messages import SHUTDOWN
from corral.runtime.process import Pid
from corral.runtime.supervisor import Supervisor
from corral.serving.options import ServingOptions, partition_restarts
from corral.serving.partitions import partition_spec, runner_for
from corral.serving.records import PartitionStatistics
from corral.serving.runners import Runner, Spawn

if TYPE_CHECKING:
    from corral.serving.factory import ModelFactory
    from corral.serving.job import Job

__all__ = ["Generation", "Slot"]


class Slot:
    """The server's view of one partition: its runner, the job it runs (None: idle), that
    job's ``call_timeout`` timer."""

    __slots__ = ("batches", "crashes", "down", "index", "job", "recovering", "runner", "timer")

    def __init__(self, index: int, runner: Runner) -> None:
        self.index = index
        self.runner = runner
        self.down = False
        self.recovering = False
        self.batches = 0
        self.crashes = 0
        self.job: Job | None = None
        self.timer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> Pid:
        return self.runner.pid

    @property
    def busy(self) -> bool:
        return self.job is not None


class Generation:
    """The partitions of one model version.

    ``spawn`` links a process to the server (``Actor.spawn``), ``spawn_task`` runs a task the
    server owns, ``ready`` is called when a restarted partition is idle again.
    """

    def __init__(
        self,
        name: str,
        options: ServingOptions,
        factory: ModelFactory,
        version: str,
        number: int,
        *,
        spawn_task: Spawn,
        ready: Callable[[], None],
    ) -> None:
        self.name = name
        self.options = options
        self.factory = factory
        self.version = version
        self.number = number
        self.supervisor: Pid | None = None
        self.slots: list[Slot] = []
        self.idle: list[Slot] = []
        self.stopping = False
        self._spawn_task = spawn_task
        self._ready = ready
        self._drained: asyncio.Future[None] | None = None

    async def start(self, spawn: Callable[[Supervisor], object]) -> None:
        """Start every partition, concurrently; returns when each has loaded its model.
        Raises ``StartError`` if one fails to load (the others are stopped)."""
        options = self.options
        specs = [
            partition_spec(self.factory, options, index=i, label=f"{self.name}-v{self.number}-p{i}")
            for i in range(options.partitions)
        ]
        sup = Supervisor(
            specs,
            max_restarts=partition_restarts(options),
            max_seconds=options.partition_max_seconds,
            start_concurrently=True,
        )
        pid = await spawn(sup)  # type: ignore[misc]
        assert isinstance(pid, Pid)
        self.supervisor = pid
        for info in await Supervisor.which_children(pid):
            assert info.pid is not None
            runner = await runner_for(info.pid, options, self._spawn_task)
            slot = Slot(len(self.slots), runner)
            self.slots.append(slot)
            self._watch(slot)
        self.idle = list(reversed(self.slots))

    def _watch(self, slot: Slot) -> None:
        """Notice at once when ``slot``'s partition dies while idle, so ``statistics()``
        says ``down`` (truthful readiness) and the restart is picked up without waiting for
        a batch to fail on it. A busy partition's death is its runner's to report."""
        pid = slot.pid

        def exited(reason: object) -> None:
            # Busy, or down already: the runner reported (or will report) the crash.
            if self.stopping or slot.down or slot.recovering or slot.busy or slot.pid is not pid:
                return
            slot.down = True  # now, so no batch is cut for it meanwhile
            slot.crashes += 1  # it died, if with no batch on it
            if slot in self.idle:
                self.idle.remove(slot)
            self._spawn_task(self.recover(slot))

        pid.add_exit_callback(exited)

    def release(self, slot: Slot) -> None:
        """``slot`` finished its batch: it is idle again (and may drain this version)."""
        if not slot.down:
            self.idle.append(slot)
        self.release_check()

    async def recover(self, slot: Slot) -> None:
        """Wait for the supervisor to restart ``slot``'s partition, then mark it idle and
        tell the server. Runs as a server task. Once per death: the runner's crash report
        and the exit notice (``_watch``) may both ask for it."""
        if slot.recovering:
            return
        slot.recovering = True
        try:
            await self._recover(slot)
        finally:
            slot.recovering = False

    async def _recover(self, slot: Slot) -> None:
        slot.down = True
        if slot in self.idle:
            self.idle.remove(slot)
        sup = self.supervisor
        if sup is None or not sup.alive or self.stopping:
            return
        # If the supervisor gives up instead, that ends the server through the link.
        try:
            pid = await Supervisor.wait_restarted(sup, f"partition-{slot.index}", slot.pid)
            slot.runner = await runner_for(pid, self.options, self._spawn_task)
            self._watch(slot)
        except ChildNotRestarted:
            return
        except (NoProcess, ProcessExited):
            if self.retiring():
                return  # a swap or a stop retired this version meanwhile
            raise
        slot.down = False
        self.idle.append(slot)
        self.release_check()
        self._ready()

    def retiring(self) -> bool:
        """Whether ``stop`` was called (the version is going away)."""
        return self.stopping

    def release_check(self) -> None:
        """Wake ``drain`` if no batch of this version runs any more."""
        drained = self._drained
        if drained is not None and not drained.done() and not any(s.busy for s in self.slots):
            drained.set_result(None)

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
        kind = self.options.kind
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
                    slot.runner.os_pid,
                )
            )
        return rows
