"""Pipelines on Ray: whole corral nodes, each hosted in a Ray actor, scaled out through a
broker's consumer group.

::

    spec = pipeline_nodes(
        "events", "myapp.pipelines:make_pipeline", replicas=3, args={"url": REDIS_URL}
    )
    async with Node([spec]):   # three actors, wherever Ray places them
        ...

Each replica is a ``PipelineNode`` actor: it runs a corral ``Node`` on the actor's own event
loop with one pipeline in it, built there by the factory (``"module:attr"``, imported in the
actor: ship its code with the job's ``runtime_env``) called as ``factory(replica=k,
**args)``. ``args`` cross to the actor in corral's codec (msgpack), so they must be plain
data (None, bools, numbers, str, bytes, lists, dicts, numpy arrays): ``pipeline_nodes``
raises ``TypeError`` naming a value that is not.

The replicas scale out the way their broker lets several processes share one stream: the
factory gives every replica the same stream and group and a consumer name of its own
(derive it from ``replica``). A consumer name that stays the same across restarts lets a
re-created replica resume its own pending messages at once (the Redis Streams producer reads
them first); a name unique to each incarnation leaves them to ``claim_idle``, after which
any live replica claims them (``XAUTOCLAIM``). Either way delivery is at-least-once: nothing
acknowledged is lost and nothing unacknowledged stays behind.

Supervision: ``pipeline_nodes`` is the ``ChildSpec`` of a ``Supervisor`` (``one_for_one``,
``max_restarts`` in ``max_seconds``) of one stand-in per replica (``PipelineStandIn``, a
``corral.cluster.actors.RayActor``). A replica whose process dies or whose node is lost, or
whose inner node stops on its own (its pipeline's supervisor gave up), is its stand-in's
crash; the supervisor re-creates the actor where Ray can place it. Stopping the tree drains
every replica first (``drain_timeout``: producers stop, in-flight messages finish and are
acknowledged), then kills the actors: no corral actors are left in the cluster.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any

from corral.cluster.actors import ActorSpec, RayActor, WatchedActor
from corral.port.codec import Codec
from corral.runtime.messages import ExitReason, is_clean_exit
from corral.runtime.node import Node
from corral.runtime.process import Pid
from corral.runtime.supervisor import ChildSpec, Supervisor

__all__ = ["PipelineNode", "PipelineStandIn", "pipeline_nodes", "replica_statistics"]

logger = logging.getLogger("corral.cluster")


def _factory(spec: str) -> Any:
    _check_spec(spec)
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


class PipelineNode(WatchedActor):
    """A corral ``Node`` inside a Ray actor, running the pipeline the factory builds (see
    the module doc). Its methods run on the actor's event loop, which the node shares."""

    def __init__(self, factory: str, args: bytes, replica: int) -> None:
        decoded = Codec(where="Ray pipeline node").loads(args)
        if not isinstance(decoded, dict):
            raise TypeError(f"Ray pipeline node: args must be a dict; got {decoded!r}")
        self._factory = factory
        self._args: dict[str, object] = decoded
        self._replica = replica
        self._node: Node | None = None
        self._pipeline: Any = None
        self._draining = False
        self._up = asyncio.Event()

    async def start_pipeline(self) -> str:
        """Start the node and the factory's pipeline in it; the pipeline's name. Raises what
        the factory or the pipeline's start raises (the stand-in's start then fails)."""
        from corral.pipeline.pipeline import Pipeline

        pipeline = _factory(self._factory)(replica=self._replica, **self._args)
        if not isinstance(pipeline, Pipeline):
            raise TypeError(
                f"pipeline_nodes: factory {self._factory!r} must return a Pipeline; got "
                f"{type(pipeline).__qualname__}"
            )
        node = Node(name=f"ray-pipeline-{self._replica}")
        await node.start()
        try:
            await pipeline.start(node)
        except BaseException:
            await node.stop()
            raise
        self._node, self._pipeline = node, pipeline
        self._up.set()
        return str(pipeline.name)

    async def corral_watch(self) -> None:
        """The stand-in's watch: fails when the actor dies, and returns (which the stand-in
        also treats as a crash) when the inner node stops without being drained."""
        await self._up.wait()
        assert self._node is not None
        reason = await self._node.wait_stopped()
        if self._draining:
            await asyncio.Event().wait()
        logger.error("pipeline node %d: its node stopped (%r)", self._replica, reason)

    async def statistics(self) -> dict[str, int]:
        """The pipeline's message counts: ``produced``, ``acked``, ``failed``,
        ``in_flight`` (``Pipeline.statistics``); zeros before it has started."""
        if self._pipeline is None:
            return {"produced": 0, "acked": 0, "failed": 0, "in_flight": 0}
        s = self._pipeline.statistics()
        return {
            "produced": s.produced,
            "acked": s.acked,
            "failed": s.failed,
            "in_flight": s.in_flight,
        }

    async def drain(self) -> None:
        """Stop the pipeline (drains: in-flight messages finish and are acknowledged), then
        the node. Blocks for as long as that takes."""
        self._draining = True
        if self._pipeline is not None:
            await self._pipeline.stop()
        if self._node is not None:
            await self._node.stop()

    def os_pid(self) -> int:
        """The actor's OS process id (tests kill it)."""
        return os.getpid()


class PipelineStandIn(RayActor):
    """The stand-in of one ``PipelineNode``: ``init`` creates the actor and starts its
    pipeline (a factory or start that fails is this process's ``StartError``); a clean
    stop drains the replica (up to ``drain_timeout`` seconds) before the actor is killed."""

    def __init__(
        self,
        spec: ActorSpec,
        *,
        start_timeout: float | None = 60.0,
        drain_timeout: float = 10.0,
    ) -> None:
        super().__init__(spec, start_timeout=start_timeout)
        self._pipeline_timeout = start_timeout
        self._drain_timeout = drain_timeout

    async def init(self) -> None:
        await super().init()
        await asyncio.wait_for(self.handle.start_pipeline.remote(), self._pipeline_timeout)

    async def terminate(self, reason: ExitReason) -> None:
        if self.handle is None or not is_clean_exit(reason):
            return
        try:
            await asyncio.wait_for(self.handle.drain.remote(), self._drain_timeout)
        except Exception as exc:  # gone already, or too slow: the kill follows anyway
            logger.warning("%s: drain did not finish (%r); killing it", self.what, exc)


def pipeline_nodes(
    id: str,
    factory: str,
    *,
    replicas: int,
    args: Mapping[str, object] | None = None,
    num_cpus: float = 1.0,
    runtime_env: Mapping[str, object] | None = None,
    max_restarts: int = 3,
    max_seconds: float = 5.0,
    start_timeout: float | None = 60.0,
    drain_timeout: float = 10.0,
) -> ChildSpec:
    """The ``ChildSpec`` of a supervisor of ``replicas`` pipeline nodes on Ray, children
    ``replica-0``... (see the module doc). ``num_cpus`` per replica; the stand-ins' shutdown
    allows ``drain_timeout`` plus 5 s. ``ValueError`` for a bad argument."""
    if type(replicas) is not int or replicas < 1:
        raise ValueError(f"pipeline_nodes {id!r}: replicas must be an int >= 1; got {replicas!r}")
    _check_spec(factory)
    # As codec bytes, so that they cross as plain data (and a value that cannot fails here).
    plain = Codec(where=f"pipeline_nodes {id!r} args").dumps(dict(args or {}))

    def stand_in(k: int) -> ChildSpec:
        spec = ActorSpec(
            cls=PipelineNode,
            args=(factory, plain, k),
            num_cpus=num_cpus,
            runtime_env=runtime_env,
        )
        return ChildSpec(
            id=f"replica-{k}",
            start=lambda: PipelineStandIn(
                spec, start_timeout=start_timeout, drain_timeout=drain_timeout
            ),
            shutdown=drain_timeout + 5.0,
        )

    children = [stand_in(k) for k in range(replicas)]
    return ChildSpec(
        id=id,
        start=lambda: Supervisor(
            children, max_restarts=max_restarts, max_seconds=max_seconds, start_concurrently=True
        ),
        type="supervisor",
    )


def _check_spec(factory: object) -> None:
    if type(factory) is not str:
        raise ValueError(
            f"pipeline_nodes: factory must be a str like 'module:attr'; got {factory!r}"
        )
    module, sep, attr = factory.partition(":")
    if not (sep and module and attr):
        raise ValueError(
            f"pipeline_nodes: factory must be a str like 'module:attr'; got {factory!r}"
        )


async def replica_statistics(sup: Pid) -> list[dict[str, int]]:
    """Each running replica's pipeline counts (``PipelineNode.statistics``), in replica
    order, for the supervisor ``sup`` that ``pipeline_nodes`` made; a replica being
    re-created is left out. Waits for one Ray call per replica."""
    counts = []
    for child in await Supervisor.which_children(sup):
        handle: Any = None if child.pid is None else RayActor.handle_of(child.pid)
        if handle is not None:
            counts.append(await handle.statistics.remote())
    return counts
