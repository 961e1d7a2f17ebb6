"""Warm spares: workers started ahead of need, so a restarted port skips start-up.

A worker's start-up is the expensive part of a port restart: a new interpreter, the
handler's imports (numpy, torch) and its ``setup`` (loading a model) take from a hundred
milliseconds to many seconds. A port with ``spares=N`` asks the node's ``SparePool`` for a
worker that is already past ``READY`` for the same options; if one is there the port adopts
it at once, and the pool starts a replacement in the background. If one is still starting,
the port waits for it and adopts it (it is further along than a worker of its own would
be). If none is there at all, the port starts its own worker and tells the pool once it is
ready (``spare_wanted``); only then do the spares start: one model loads at a time, so a
new version's first port is not slowed down by its own spare (issue 16: a port swap of a
big model on 2 cores loaded both new workers and a new spare at once).

The trade-off, on purpose: each spare is a full idle worker, so it costs the memory of a
loaded model (and its setup runs before anyone needs it); the replacement starts right after
a crash, competing for CPU with the service for a moment. Use ``spares=0`` for workers that
are cheap to start or too big to keep twice.

The pool is a process registered as ``corral.port.spares``, a child of the node's system
supervisor (``Node.start_system_child``): the node starts it when the first port with
spares starts, restarts it if it crashes (its idle spares die with it), and stops it after
the application's supervision tree. It kills its idle spares whenever it ends.

Spares are kept for options that ports use. Each port that takes a spare (or finds none)
is watched as a user of its options. Whoever stops ports on purpose — a serving retiring a
model version after a swap, or stopping — calls ``release_spares(node, options)`` once
they have stopped: if no live port uses those options any more, the pool stops their idle
spares (and any still starting). A port that crashed is not a release: its supervisor's
restart is what the spare is kept for.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Final

from corral.errors import NoProcess, PortExited, ProcessExited
from corral.port.worker_process import WorkerProcess
from corral.runtime.messages import Down, ExitReason
from corral.runtime.process import Actor, Caller, Pid
from corral.runtime.supervisor import ChildSpec

if TYPE_CHECKING:
    from corral.port.options import PortOptions
    from corral.runtime.node import Node

__all__ = [
    "POOL_NAME",
    "SparePool",
    "pool_spec",
    "release_spares",
    "spare_wanted",
    "take_spare",
    "wait_spares",
]

logger = logging.getLogger("corral.port")

POOL_NAME: Final = "corral.port.spares"
RETAKE: Final = "retake"
"""The pool's answer to a take that waited for a starting spare: take again."""
REFILL_DELAY: Final = 0.1
"""Seconds the pool waits after a take before it starts the replacement spare. Measured on
2 cores: starting it at once doubled the median crash-to-first-reply (21 ms against 9 ms)."""


def _key(options: PortOptions) -> str:
    return repr(
        (
            options.argv(),
            sorted((options.args or {}).items()),
            sorted((options.env or {}).items()),
            options.cwd,
            options.shm_threshold,
        )
    )


def pool_spec() -> ChildSpec:
    """The pool's child spec under the node's system supervisor."""
    return ChildSpec(id=POOL_NAME, start=SparePool, name=POOL_NAME)


class SparePool(Actor):
    """Keeps up to ``spares`` ready workers per distinct port options."""

    def __init__(self) -> None:
        self._ready: dict[str, list[WorkerProcess]] = {}
        self._starting: dict[str, int] = {}
        self._released: set[str] = set()
        self._adopters: dict[str, list[Caller]] = {}
        self._waiters: dict[str, list[Caller]] = {}
        self._users: dict[str, set[Pid]] = {}

    def handle_call(self, msg: object) -> object:
        match msg:
            case ("take", options, user):
                if isinstance(user, Pid) and user.alive:
                    self._users.setdefault(_key(options), set()).add(user)  # type: ignore[arg-type]
                    self.monitor(user)
                worker = self._take(options)  # type: ignore[arg-type]
                if worker is not None and isinstance(user, Pid):
                    # The reply is the hand-over: a port that dies before it reads it would
                    # leave the worker with no owner, so the worker goes with the port
                    # whatever happens (the port's own reap of it is the same, harmless).
                    node = self.node
                    user.add_exit_callback(lambda _reason: node.add_cleanup(worker.reap()))
                return worker
            case ("release", options):
                return self._release(options)  # type: ignore[arg-type]
            case ("wait_ready", options):
                key = _key(options)  # type: ignore[arg-type]
                if self._ready.get(key):
                    return [w.os_pid for w in self._ready[key]]
                self._waiters.setdefault(key, []).append(self.defer_reply())
                return None
        raise TypeError(f"SparePool: unknown request {msg!r}")

    def handle_cast(self, msg: object) -> None:
        match msg:
            case ("wanted", options):
                self._fill(_key(options), options)  # type: ignore[arg-type]
                return
        raise TypeError(f"SparePool: unknown message {msg!r}")

    def handle_info(self, msg: object) -> None:
        if isinstance(msg, Down):
            for key, users in list(self._users.items()):
                users.discard(msg.pid)
                if not users:
                    del self._users[key]
            return
        super().handle_info(msg)

    def _release(self, options: PortOptions) -> list[int] | None:
        """Stop the idle spares of ``options`` (and those starting) unless a live port
        uses them; replies, once they are gone, with the OS pids of those stopped."""
        key = _key(options)
        users = {p for p in self._users.get(key, ()) if p.alive}  # a Down may be queued
        if users:
            self._users[key] = users
            return []
        self._users.pop(key, None)
        if self._starting.get(key):
            self._released.add(key)  # a spare still starting is stopped once it is up
        workers = self._ready.pop(key, [])
        if not workers:
            return []
        caller = self.defer_reply()
        pids = [w.os_pid for w in workers if w.os_pid is not None]

        async def stop() -> None:
            try:
                await asyncio.gather(*(w.stop(options.stop_timeout) for w in workers))
            finally:
                # Cancelled (the pool ends) or not, none outlives the pool.
                await asyncio.gather(*(w.reap() for w in workers), return_exceptions=True)
            caller.reply(pids)

        self.start_task(stop(), name=f"corral {self.pid} release spares")
        return None

    def _take(self, options: PortOptions) -> WorkerProcess | None:
        key = _key(options)
        self._released.discard(key)  # used again
        ready = self._ready.get(key, [])
        if ready:
            worker = ready.pop(0)
            self._fill(key, options)
            return worker
        adopters = self._adopters.setdefault(key, [])
        if self._starting.get(key, 0) > len(adopters):
            adopters.append(self.defer_reply())  # a spare starting: wait for it
            return None
        return None  # the port starts its own worker, then says spare_wanted

    def _fill(self, key: str, options: PortOptions) -> None:
        """Start spares until ``options.spares`` are ready or starting for ``key``."""
        starting = self._starting.get(key, 0) - len(self._adopters.get(key, ()))
        missing = options.spares - len(self._ready.get(key, ())) - starting
        for _ in range(missing):
            self._refill(key, options)

    def _refill(self, key: str, options: PortOptions) -> None:
        self._starting[key] = self._starting.get(key, 0) + 1
        label = f"spare {options.handler}"

        def idle_down(down: PortExited) -> None:
            # A spare that dies while idle is dropped; the next take starts another.
            workers = self._ready.get(key, [])
            if worker in workers:
                workers.remove(worker)
                logger.warning("port pool: idle spare died: %s", down)

        worker = WorkerProcess(options, label, idle_down)

        async def start() -> None:
            try:
                # Let the worker just adopted answer its first requests before the next
                # spare's interpreter start and imports compete with it for the CPUs.
                await asyncio.sleep(REFILL_DELAY)
                await worker.start()
            except asyncio.CancelledError:
                await worker.reap()
                raise
            except Exception as exc:  # the next take tries again
                logger.warning("port pool: could not start a spare for %s: %s", label, exc)
                await worker.reap()
                adopters = self._adopters.get(key)
                if adopters:
                    adopters.pop(0).reply(RETAKE)  # it starts a worker of its own
                return
            finally:
                self._starting[key] -= 1
            if key in self._released:
                # Released while it started: nobody uses these options any more.
                if not self._starting[key]:
                    self._released.discard(key)
                try:
                    await worker.stop(options.stop_timeout)
                finally:
                    await worker.reap()
                return
            ready = self._ready.setdefault(key, [])
            ready.append(worker)
            adopters = self._adopters.get(key)
            if adopters:
                # A port waited for this one: it takes it with its next call (handing the
                # worker over in this reply could lose it, were the port killed meanwhile).
                adopters.pop(0).reply(RETAKE)
            for caller in self._waiters.pop(key, []):
                caller.reply([w.os_pid for w in ready])

        self.start_task(start(), name=f"corral {self.pid} {label}")

    def init(self) -> None:
        node = self.node
        # Killed or not, the pool's spares do not outlive it.
        self.pid.add_exit_callback(lambda _reason: node.add_cleanup(self._reap_all()))

    async def terminate(self, reason: ExitReason) -> None:
        await self._reap_all()

    async def _reap_all(self) -> None:
        # The spares still starting are the pool's tasks: cancelled (each reaps its worker)
        # before terminate, or at a kill, with the node waiting for them as it stops.
        workers = [w for ready in self._ready.values() for w in ready]
        self._ready.clear()
        if workers:
            await asyncio.gather(*(w.reap() for w in workers), return_exceptions=True)


async def wait_spares(node: Node, options: PortOptions, *, timeout: float = 60.0) -> list[int]:
    """Wait until the pool holds a ready spare for ``options``; their OS pids."""
    pids = await node.lookup(POOL_NAME).call(("wait_ready", options), timeout=timeout)
    assert isinstance(pids, list)
    return pids


async def release_spares(node: Node, options: PortOptions) -> list[int]:
    """Ports with ``options`` were stopped on purpose: if no live port uses those options
    any more, the node's pool stops their idle spares (and those still starting). Returns,
    once they are gone, the OS pids of the idle spares it stopped (at most ``stop_timeout``
    and a reap later: ``CallTimeout`` past 10 s more). Does nothing without a pool."""
    pool = node.whereis(POOL_NAME)
    if pool is None:
        return []
    try:
        # The pool answers once the spares are gone: each gets stop_timeout to stop.
        pids = await pool.call(("release", options), timeout=options.stop_timeout + 10.0)
    except (NoProcess, ProcessExited):
        return []  # the pool ended meanwhile: its spares went with it
    assert isinstance(pids, list)
    return pids


def spare_wanted(node: Node, options: PortOptions) -> None:
    """A port with ``options`` that found no spare has started its own worker: the pool
    starts the spares for ``options`` now. Does not block; nothing without a pool."""
    pool = node.whereis(POOL_NAME)
    if pool is not None:
        pool.cast(("wanted", options))


async def take_spare(
    node: Node, options: PortOptions, *, user: Pid | None = None
) -> WorkerProcess | None:
    """A ready worker for ``options`` from the node's pool, or None. Waits for a spare
    that is starting, if there is one nobody else waits for.

    After a take, the pool starts enough new spares in the background to keep
    ``options.spares`` of them; after None, once the port says ``spare_wanted``. It
    watches ``user`` (the port taking it) as a user of ``options`` until it ends (see
    ``release_spares``). The node starts the pool under its system supervisor if it is not
    running yet.
    """
    pool = node.whereis(POOL_NAME) or await node.start_system_child(pool_spec())
    while True:
        # No timeout: a spare starting is bounded by its own start_timeout.
        worker = await pool.call(("take", options, user), timeout=None)
        if worker != RETAKE:
            break
    if worker is None:
        return None
    assert isinstance(worker, WorkerProcess)
    if worker.down is not None:
        return None
    return worker
