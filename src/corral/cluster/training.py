"""Training workers as Ray actors: ``RayWorkers``, the ``WorkerPool`` of ``backend="ray"``.

``Trainer(..., backend="ray")`` runs each of its ``workers`` as a Ray actor
(``TrainWorker``) that runs the port workers' own handler (``corral.train.handler``) on its
shard, on whichever node of the cluster Ray places it:

- **data**: each shard is encoded once with corral's codec (msgpack with numpy arrays as raw
  bytes) and put in Ray's object store by the driver, which owns it; the actor decodes it in
  its constructor. A re-created actor gets the same object again, from wherever it lives.
  Requests and replies (parameters, optimizer state) travel as codec bytes too: nothing of
  ours is pickled.
- **placement**: the gang is one placement group of ``workers`` bundles of
  ``{"CPU": num_cpus}`` (``placement_strategy``, default ``"SPREAD"``: over the nodes when
  there is room); worker ``k`` lives in bundle ``k``. Ray moves a lost node's bundles to a
  node with room.
- **supervision**: one stand-in (``corral.cluster.actors.RayActor``) per actor under one
  ``Supervisor`` with ``strategy="one_for_all"`` and the trainer's ``max_restarts`` in
  ``max_seconds``: a worker lost (its process killed, its node gone) is its stand-in's crash,
  and the supervisor re-creates **every** worker of the gang.
- **a lost worker**: the round restarts from its starting parameters, which are the last
  checkpoint's. Every worker whose call failed because its actor died (the lost one, and
  the others that ``one_for_all`` killed) waits for its replacement and runs the same
  request again, with the same seed; a worker that had already replied keeps its reply,
  which the re-run would repeat exactly. So the round's result is the one it would have
  been without the loss, as with local port workers. Past the intensity the supervisor
  gives up and ``run`` fails with ``TrainingFailed`` whose reason is its
  ``RestartIntensityExceeded``; a model that raises, or a round longer than
  ``round_timeout``, fails it at once.

``aclose`` stops the stand-ins (they kill their actors) and removes the placement group.
The driver must be connected (``corral.cluster.connect``; ``Trainer``'s ``ray_address``
does it) before ``start``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from corral.cluster.actors import ActorSpec, RayActor, WatchedActor, actor_spec, ray_module
from corral.errors import TrainingFailed
from corral.port.codec import Codec
from corral.runtime.node import Node
from corral.runtime.process import Pid
from corral.runtime.supervisor import Supervisor
from corral.train.handler import TrainHandler
from corral.train.model import Data
from corral.train.workers import restarted_worker

__all__ = ["PLACEMENT_STRATEGIES", "RayWorkers", "TrainWorker"]

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
"""Ray's placement-group strategies, for a training gang's ``placement_strategy``."""


def _codec(where: str) -> Codec:
    # One per use: a Codec is not thread-safe, and these are cheap to make.
    return Codec(where=where)


class TrainWorker(WatchedActor):
    """One training worker on Ray: the port workers' ``TrainHandler`` with its shard in
    memory. Constructor arguments: the model spec, its arguments as codec bytes, and the
    shard as codec bytes (an object-store reference Ray resolves before the constructor
    runs)."""

    def __init__(self, model: str, model_args: bytes, shard: bytes) -> None:
        codec = _codec("Ray training worker")
        args, data = codec.loads(model_args), codec.loads(shard)
        if not isinstance(args, dict) or not isinstance(data, dict):
            raise TypeError("Ray training worker: model_args and the shard must be dicts")
        self._handler = TrainHandler()
        self._handler.load(model=model, model_args=args, data=data)

    async def round(self, request: bytes) -> bytes:
        """Run one round request (codec bytes) in a thread, so the actor's loop stays free;
        the reply as codec bytes."""
        codec = _codec("Ray training worker")
        reply = await asyncio.to_thread(self._handler.handle_call, ["round", codec.loads(request)])
        return codec.dumps(reply)

    def os_pid(self) -> int:
        """The actor's OS process id (tests and benchmarks kill it)."""
        import os

        return os.getpid()

    def node_id(self) -> str:
        """The id of the Ray node the actor runs on."""
        return str(ray_module().get_runtime_context().get_node_id())


class RayWorkers:
    """Training workers as Ray actors in a placement group, under a ``one_for_all``
    supervisor of stand-ins on ``node`` (see the module doc). ``shards[k]`` is worker
    ``k``'s data."""

    def __init__(
        self,
        node: Node,
        name: str,
        *,
        model: str,
        model_args: Mapping[str, object] | None,
        shards: Sequence[Data],
        max_restarts: int,
        max_seconds: float,
        round_timeout: float | None,
        num_cpus: float = 1.0,
        placement_strategy: str = "SPREAD",
        start_timeout: float | None = 120.0,
    ) -> None:
        if placement_strategy not in PLACEMENT_STRATEGIES:
            raise ValueError(
                f"RayWorkers {name}: placement_strategy must be one of "
                f"{', '.join(PLACEMENT_STRATEGIES)}; got {placement_strategy!r}"
            )
        self.node = node
        self.name = name
        self.restarts = 0
        """Re-creations of the gang seen by ``run`` so far (``one_for_all``: each restarts
        every worker)."""
        self._model = model
        self._model_args = dict(model_args or {})
        self._shards = list(shards)
        self._max = (max_restarts, max_seconds)
        self._round_timeout = round_timeout
        self._num_cpus = float(num_cpus)
        self._strategy = placement_strategy
        self._start_timeout = start_timeout
        self._group: Any = None
        self._sup: Pid | None = None
        self._pids: list[Pid] = []

    async def start(self) -> None:
        """Reserve the placement group, put the shards in the object store and start the
        supervisor of stand-ins; blocks until every actor has loaded its shard. A worker
        that fails to start fails this with ``StartError``; a group that cannot be placed
        within ``start_timeout`` with ``TimeoutError`` naming the resources."""
        ray = ray_module()
        if not ray.is_initialized():
            raise RuntimeError(
                f"trainer {self.name}: backend='ray' needs a Ray cluster; pass ray_address "
                "or call corral.cluster.connect(address) first"
            )
        n = len(self._shards)
        bundles = [{"CPU": self._num_cpus} for _ in range(n)]
        self._group = group = ray.util.placement_group(bundles, strategy=self._strategy)
        try:
            await asyncio.wait_for(group.ready(), self._start_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"trainer {self.name}: Ray could not place {n} workers of num_cpus="
                f"{self._num_cpus:g} ({self._strategy}) within {self._start_timeout} s; "
                "does the cluster have the CPUs?"
            ) from None
        codec = _codec(f"trainer {self.name}")
        model_args = codec.dumps(self._model_args)
        refs = [ray.put(codec.dumps(dict(shard))) for shard in self._shards]
        self._shards = []  # the object store holds them now; the refs keep them alive
        strategies = ray.util.scheduling_strategies
        specs = [
            actor_spec(
                f"worker-{k}",
                ActorSpec(
                    cls=TrainWorker,
                    args=(self._model, model_args, ref),
                    num_cpus=self._num_cpus,
                    scheduling_strategy=strategies.PlacementGroupSchedulingStrategy(
                        group, placement_group_bundle_index=k
                    ),
                ),
                shutdown="brutal_kill",
                start_timeout=self._start_timeout,
            )
            for k, ref in enumerate(refs)
        ]
        max_restarts, max_seconds = self._max
        sup = Supervisor(
            specs,
            strategy="one_for_all",
            max_restarts=max_restarts,
            max_seconds=max_seconds,
            start_concurrently=True,
        )
        self._sup = await self.node.spawn(sup, label=f"{self.name}/ray-workers")
        self._pids = [_child_pid(info.pid) for info in await Supervisor.which_children(self._sup)]

    def handles(self) -> list[object]:
        """Each worker's current Ray actor handle (None for one being re-created)."""
        return [RayActor.handle_of(pid) for pid in self._pids]

    async def os_pids(self) -> list[int]:
        """Every worker's OS pid (asks each actor)."""
        return [int(await h.os_pid.remote()) for h in self.handles()]  # type: ignore[attr-defined]

    async def node_ids(self) -> list[str]:
        """The Ray node each worker runs on (asks each actor)."""
        return [str(await h.node_id.remote()) for h in self.handles()]  # type: ignore[attr-defined]

    async def run(self, worker: int, round: int, request: Mapping[str, object]) -> object:
        errors = ray_module().exceptions
        codec = _codec(f"trainer {self.name}")
        payload = codec.dumps(dict(request))
        while True:
            pid = self._pids[worker]
            handle: Any = RayActor.handle_of(pid)
            if handle is None:  # re-created since our last call (a sibling was lost)
                self._pids[worker] = await self._restarted(worker, round, pid)
                continue
            try:
                reply = await asyncio.wait_for(handle.round.remote(payload), self._round_timeout)
            except errors.RayActorError:
                self._pids[worker] = await self._restarted(worker, round, pid)
                continue
            except errors.RayTaskError as exc:
                raise TrainingFailed(self.name, round, worker, exc) from exc
            except TimeoutError:
                reason = f"no reply within round_timeout={self._round_timeout:g} s"
                raise TrainingFailed(self.name, round, worker, reason) from None
            return codec.loads(reply)

    async def _restarted(self, worker: int, round: int, old: Pid) -> Pid:
        assert self._sup is not None
        new = await restarted_worker(self._sup, self.name, round, worker, old)
        # one_for_all restarts every child together: any child's count is the gang's.
        children = await Supervisor.which_children(self._sup)
        self.restarts = max(self.restarts, children[worker].restart_count)
        return new

    async def aclose(self) -> None:
        """Stop the stand-ins (each kills its actor) and remove the placement group."""
        if self._sup is not None and self._sup.alive:
            self._sup.exit("shutdown")
            await self._sup.wait_exit()
        self._pids = []
        if self._group is not None:
            group, self._group = self._group, None
            try:
                ray_module().util.remove_placement_group(group)
            except Exception:  # the cluster is gone already: nothing left to remove
                pass


def _child_pid(pid: Pid | None) -> Pid:
    if pid is None:
        raise RuntimeError("RayWorkers: a worker has no pid right after start")
    return pid
