"""Where a trainer's workers live: the ``WorkerPool`` seam, and ``PortWorkers`` (local ports).

A pool owns N workers, each holding one shard, and runs a round request on worker ``k``
until it succeeds. ``PortWorkers`` runs each worker as a ``Port`` under one ``Supervisor``
(``one_for_one``, the trainer's ``max_restarts`` in ``max_seconds``); a Ray backend would
supply the same three calls with Ray actors.

Failure handling in ``PortWorkers.run``: when the worker dies mid-round (``PortExited``,
or the port process gone), it waits for the supervisor to restart the child
(``Supervisor.wait_restarted``) and sends the same request to the new worker again; the new
worker maps the same shard file in its setup. When the supervisor has given up (restart intensity
exceeded) the call fails with ``TrainingFailed`` whose reason is the supervisor's
``RestartIntensityExceeded``. A model that raises (``PortCallError``) or a round that
exceeds ``round_timeout`` (``CallTimeout``) fails at once with ``TrainingFailed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from corral.errors import (
    CallTimeout,
    ChildNotRestarted,
    NoProcess,
    PortCallError,
    PortExited,
    ProcessExited,
    TrainingFailed,
)
from corral.port import Port
from corral.port.port import PortOptions
from corral.port.spares import wait_spares as wait_port_spares
from corral.runtime.node import Node
from corral.runtime.process import Actor, Pid
from corral.runtime.supervisor import ChildSpec, Supervisor
from corral.train.handler import HANDLER

__all__ = ["PortWorkers", "WorkerPool", "restarted_worker"]


class WorkerPool(Protocol):
    """What the trainer needs from its workers (see the module doc)."""

    restarts: int
    """Worker restarts seen by ``run`` so far."""

    async def start(self) -> None:
        """Start every worker with its shard; blocks until all are ready."""
        ...

    async def run(self, worker: int, round: int, request: Mapping[str, object]) -> object:
        """Run ``request`` on ``worker`` until it succeeds; ``TrainingFailed`` otherwise."""
        ...

    async def aclose(self) -> None:
        """Stop every worker; blocks until they are gone."""
        ...


class PortWorkers:
    """Workers as supervised ports on ``node`` (see the module doc).

    ``shard_dirs[k]`` is worker ``k``'s data directory; ``port_options`` go to every
    ``Port`` (``env``, ``spares``, ...).
    """

    def __init__(
        self,
        node: Node,
        name: str,
        *,
        model: str,
        model_args: Mapping[str, object] | None,
        shard_dirs: Sequence[str],
        max_restarts: int,
        max_seconds: float,
        round_timeout: float | None,
        port_options: Mapping[str, object],
    ) -> None:
        self.node = node
        self.name = name
        self.restarts = 0
        self._round_timeout = round_timeout
        self._args = [_handler_args(model, model_args, d) for d in shard_dirs]
        self._port_options = dict(port_options)
        self._specs = [
            ChildSpec(id=f"worker-{k}", start=self._factory(args, self._port_options))
            for k, args in enumerate(self._args)
        ]
        self._max = (max_restarts, max_seconds)
        self._sup: Pid | None = None
        self._pids: list[Pid] = []

    @staticmethod
    def _factory(args: Mapping[str, object], options: Mapping[str, object]) -> Callable[[], Actor]:
        # Every start of worker k (first and restarts) builds the same PortOptions, so a
        # restarted worker finds the warm spare kept for exactly those options.
        return lambda: Port(HANDLER, args=args, **options)

    async def start(self) -> None:
        """Spawn the supervisor (unlinked: its giving up is reported, not propagated)."""
        max_restarts, max_seconds = self._max
        sup = Supervisor(self._specs, max_restarts=max_restarts, max_seconds=max_seconds)
        self._sup = await self.node.spawn(sup, label=f"{self.name}/workers")
        self._pids = [_child_pid(info.pid) for info in await Supervisor.which_children(self._sup)]

    async def os_pids(self) -> list[int]:
        """Every worker's OS pid (asks each worker; waits behind a running round)."""
        return [int(await pid.call(["os_pid"])) for pid in self._pids]  # type: ignore[call-overload]

    async def wait_spares(self, timeout: float = 60.0) -> list[list[int]]:
        """Block until the node's spare pool holds a ready spare for every worker (with
        ``spares`` >= 1 in ``port_options``); each worker's spare OS pids, ``[]`` each when
        spares are off. ``CallTimeout`` after ``timeout`` seconds."""
        if not self._port_options.get("spares"):
            return [[] for _ in self._args]
        return [
            await wait_port_spares(
                self.node,
                PortOptions(handler=HANDLER, args=args, **self._port_options),  # type: ignore[arg-type]
                timeout=timeout,
            )
            for args in self._args
        ]

    async def run(self, worker: int, round: int, request: Mapping[str, object]) -> object:
        while True:
            pid = self._pids[worker]
            try:
                return await pid.call(["round", dict(request)], timeout=self._round_timeout)
            except (PortExited, ProcessExited, NoProcess):
                self._pids[worker] = await self._restarted(worker, round, pid)
                self.restarts += 1
            except (PortCallError, CallTimeout) as exc:
                raise TrainingFailed(self.name, round, worker, exc) from exc

    async def _restarted(self, worker: int, round: int, old: Pid) -> Pid:
        assert self._sup is not None
        return await restarted_worker(self._sup, self.name, round, worker, old)

    async def aclose(self) -> None:
        if self._sup is not None and self._sup.alive:
            self._sup.exit("shutdown")
            await self._sup.wait_exit()


async def restarted_worker(sup: Pid, name: str, round: int, worker: int, old: Pid) -> Pid:
    """Worker ``worker``'s process once its supervisor ``sup`` has restarted it after ``old``
    died (child id ``worker-K``, the one shape of every pool); ``TrainingFailed`` naming the
    supervisor's reason when it gave up instead (restart intensity exceeded)."""
    try:
        return await Supervisor.wait_restarted(sup, f"worker-{worker}", old)
    except (ProcessExited, NoProcess):
        reason = await sup.wait_exit()
        raise TrainingFailed(name, round, worker, reason) from None
    except ChildNotRestarted:
        raise TrainingFailed(name, round, worker, "its worker was not restarted") from None


def _handler_args(
    model: str, model_args: Mapping[str, object] | None, data_dir: str
) -> dict[str, object]:
    return {"model": model, "model_args": dict(model_args or {}), "data_dir": data_dir}


def _child_pid(pid: Pid | None) -> Pid:
    if pid is None:
        raise RuntimeError("PortWorkers: a worker has no pid right after start")
    return pid
