"""One model version's partitions: a ``Supervisor`` of partitions and the server's view of
each (idle, busy, down), with the runner that hands it batches.

Runs in the server's tasks only. ``start`` spawns the supervisor linked to the server (it
must be called from the server's task, or a task the server spawned) and starts every
partition at once (``start_concurrently``: each loads its model in parallel), or only some;
``add`` starts one more, ``retire`` takes one out of service and stops it, ``restore``
starts a retired one again (a rolling swap's steps, ``corral.serving.swap``); ``recover``
waits for the supervisor to restart a partition that died; ``stop`` shuts the supervisor
down and lets the node's spare pool stop the spares kept for its port partitions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from corral.errors import ChildNotRestarted, NoProcess, ProcessExited
from corral.runtime.messages import SHUTDOWN
from corral.runtime.process import Pid
from corral.runtime.supervisor import ChildSpec, Supervisor
from corral.serving.options import ServingOptions, partition_restarts
from corral.serving.partitions import partition_spec, runner_for
from corral.serving.records import PartitionStatistics
from corral.serving.runners import Runner, Spawn

if TYPE_CHECKING:
    from corral.port.options import PortOptions
    from corral.serving.factory import ModelFactory
    from corral.serving.job import Job

__all__ = ["Generation", "Slot"]

logger = logging.getLogger("corral.serving")


class Slot:
    """The server's view of one partition: its runner, the job it runs (None: idle), that
    job's ``call_timeout`` timer."""

    __slots__ = (
        "batches",
        "crashes",
        "down",
        "index",
        "job",
        "recovering",
        "runner",
        "serving",
        "timer",
    )

    def __init__(self, index: int, runner: Runner, *, serving: bool = True) -> None:
        self.index = index
        self.runner = runner
        self.down = False
        # In service: batches may be cut for it. Not yet (a rolling swap warms it up) or
        # not any more (a rolling swap retires it: it finishes its batch, then stops).
        self.serving = serving
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
        self._drained: list[asyncio.Future[None]] = []

    def _spec(self, index: int) -> ChildSpec:
        label = f"{self.name}-v{self.number}-p{index}"
        return partition_spec(self.factory, self.options, index=index, label=label)

    async def start(
        self, spawn: Callable[[Supervisor], object], indices: Sequence[int] | None = None
    ) -> None:
        """Start the partitions ``indices`` (default: all), concurrently; returns when each
        has loaded its model, every one idle. Raises ``StartError`` if one fails to load
        (the others are stopped)."""
        options = self.options
        if indices is None:
            indices = range(options.partitions)
        specs = [self._spec(i) for i in indices]
        sup = Supervisor(
            specs,
            max_restarts=partition_restarts(options),
            max_seconds=options.partition_max_seconds,
            start_concurrently=True,
        )
        pid = await spawn(sup)  # type: ignore[misc]
        assert isinstance(pid, Pid)
        self.supervisor = pid
        for index, info in zip(indices, await Supervisor.which_children(pid), strict=True):
            assert info.pid is not None
            runner = await runner_for(info.pid, options, self._spawn_task)
            slot = Slot(index, runner)
            self.slots.append(slot)
            self._watch(slot)
        self.idle = list(reversed(self.slots))

    async def add(self, index: int) -> Slot:
        """Start partition ``index`` (loading its model) under this version's supervisor;
        returns its slot, not in service yet (``serve``) and not in ``slots`` (nor in
        ``statistics``). Raises ``StartError`` if it fails to load."""
        assert self.supervisor is not None
        pid = await Supervisor.start_child(self.supervisor, self._spec(index))
        return self._slot(index, await runner_for(pid, self.options, self._spawn_task))

    async def restore(self, index: int) -> Slot:
        """Start the retired partition ``index`` again (it loads its model anew); returns
        its slot, not in service yet. Raises ``StartError`` if it fails to load."""
        assert self.supervisor is not None
        pid = await Supervisor.restart_child(self.supervisor, f"partition-{index}")
        return self._slot(index, await runner_for(pid, self.options, self._spawn_task))

    def _slot(self, index: int, runner: Runner) -> Slot:
        slot = Slot(index, runner, serving=False)
        self._watch(slot)
        return slot

    def serve(self, slot: Slot) -> None:
        """Put ``slot`` (from ``add`` or ``restore``) in service: batches may be cut for it
        from now on."""
        slot.serving = True
        self.slots.append(slot)
        self.slots.sort(key=lambda s: s.index)
        if not slot.down:
            self.idle.append(slot)

    async def retire(self, slot: Slot) -> None:
        """Take ``slot`` out of service (if it is): no batch is cut for it any more; wait
        for the one it runs, then stop its partition (its spec stays, for ``restore``)."""
        slot.serving = False
        if slot in self.idle:
            self.idle.remove(slot)
        await self.drain([slot])
        assert self.supervisor is not None
        await Supervisor.terminate_child(self.supervisor, f"partition-{slot.index}")
        if slot in self.slots:
            self.slots.remove(slot)

    def _watch(self, slot: Slot) -> None:
        """Notice at once when ``slot``'s partition dies while idle, so ``statistics()``
        says ``down`` (truthful readiness) and the restart is picked up without waiting for
        a batch to fail on it. A busy partition's death is its runner's to report."""
        pid = slot.pid

        def exited(reason: object) -> None:
            # Busy, or down already: the runner reported (or will report) the crash.
            if (
                self.stopping
                or not slot.serving
                or slot.down
                or slot.recovering
                or slot.busy
                or slot.pid is not pid
            ):
                return
            slot.down = True  # now, so no batch is cut for it meanwhile
            slot.crashes += 1  # it died, if with no batch on it
            if slot in self.idle:
                self.idle.remove(slot)
            self._spawn_task(self.recover(slot))

        pid.add_exit_callback(exited)

    def release(self, slot: Slot) -> None:
        """``slot`` finished its batch: it is idle again (and may drain this version)."""
        if not slot.down and slot.serving:
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
        if not slot.serving:
            return  # a rolling swap took it out of service meanwhile
        slot.down = False
        self.idle.append(slot)
        self.release_check()
        self._ready()

    def retiring(self) -> bool:
        """Whether ``stop`` was called (the version is going away)."""
        return self.stopping

    def release_check(self) -> None:
        """Wake the ``drain`` waiters: a batch of this version ended (or a partition died)."""
        if not self._drained:
            return  # the usual case: nobody waits (every batch's end passes here)
        waiters, self._drained = self._drained, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def drain(self, slots: Sequence[Slot] | None = None) -> None:
        """Wait until none of ``slots`` (default: this version's) runs a batch."""
        slots = self.slots if slots is None else slots
        while any(s.busy for s in slots):
            fut = asyncio.get_running_loop().create_future()
            self._drained.append(fut)
            await fut

    async def stop(self) -> None:
        """Shut the partitions down (from the server's task or one it spawned); then the
        node's spare pool stops the spares kept for this version's port partitions, unless
        another port uses the same options."""
        self.stopping = True
        sup = self.supervisor
        spares = self._port_options()
        if sup is not None and sup.alive:
            sup.exit(SHUTDOWN)
            await sup.wait_exit()
        if spares is not None and sup is not None:
            from corral.port.spares import release_spares

            try:
                await release_spares(sup.node, spares)
            except Exception:  # a spare left running is not worth failing a swap or a stop
                logger.warning(
                    "serving '%s': stopping the spares of version '%s' failed",
                    self.name,
                    self.version,
                    exc_info=True,
                )

    def _port_options(self) -> PortOptions | None:
        """The options of this version's port partitions (every partition has the same
        ones), if they keep spares; None otherwise."""
        if self.options.kind != "port":
            return None
        from corral.port import Port

        # A Port instance only records its options until it is spawned: this one never is.
        port = self._spec(0).start()
        return port.options if isinstance(port, Port) and port.options.spares else None

    def statistics(self, *, draining: bool) -> list[PartitionStatistics]:
        kind = self.options.kind
        rows = []
        for slot in self.slots:
            if slot.down:
                state = "down"
            elif slot.busy:
                state = "busy"
            else:
                state = "draining" if draining or not slot.serving else "idle"
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
