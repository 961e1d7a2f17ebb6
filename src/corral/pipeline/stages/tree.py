"""The pipeline's supervision tree, and the drain that runs when it stops.

::

    PipelineSupervisor '<name>'            rest_for_one (3 restarts in 5 s)
    ├── producers                          one_for_one
    │   └── <name>.producer.<i>            ProducerStage x producer.concurrency
    ├── processors                         one_for_all, max_restarts=0
    │   └── <name>.processor.<p>.<i>       ProcessorStage x concurrency
    └── batchers                           one_for_one            (only with batchers)
        └── batcher.<b>                    rest_for_one
            ├── <name>.batcher.<b>         BatcherStage
            └── batch_processors           one_for_all, max_restarts=0
                └── <name>.batch_processor.<b>.<i>   BatchProcessorStage x concurrency

A producer's crash restarts that producer; the processors subscribe to the new one. A
processor's crash makes ``processors`` give up at once, so the pipeline supervisor restarts
every processor and, after them, the batchers (``rest_for_one``): the batchers hold credit
given to the old processors. A batcher's crash restarts it and its batch processors; a batch
processor's crash restarts that batcher's batch processors. Messages inside a stage that
crashed are lost without an ack: a broker delivers them again (at-least-once).

Stopping (the parent stops the pipeline supervisor with ``shutdown``) drains before any stage
stops, within ``shutdown_timeout``: every producer is told to drain and stops pulling; the
processors finish what they were sent and tell the batchers; the batchers cut what they hold
and tell their batch processors; when the last stage (the batch processors, or the processors
without batchers) has acknowledged everything, the stages are stopped in reverse start order
as in any supervisor. The drain lives in the supervisor's own ``terminate`` (Broadway needs a
separate Terminator process for it), so it runs only when the pipeline stops, never on a
restart inside it.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import TYPE_CHECKING

from corral.errors import CorralError
from corral.pipeline.stages.batch_processor import BatchProcessorStage
from corral.pipeline.stages.batcher import BatcherStage
from corral.pipeline.stages.processor import ProcessorStage
from corral.pipeline.stages.producer_stage import ProducerStage
from corral.pipeline.stages.protocol import Drain, WaitDrained
from corral.pipeline.stages.topology import Topology
from corral.runtime import ChildSpec, ExitReason, Pid, Supervisor, is_clean_exit

if TYPE_CHECKING:
    from corral.pipeline.options import PipelineOptions
    from corral.pipeline.stages.hooks import StageHooks

__all__ = ["PipelineSupervisor"]

logger = logging.getLogger("corral.pipeline")


def _producers(topology: Topology) -> Supervisor:
    return Supervisor(
        [
            ChildSpec(
                id=f"producer.{i}",
                start=partial(ProducerStage, topology, i),
                name=topology.producer(i),
            )
            for i in range(topology.producers)
        ],
        strategy="one_for_one",
    )


def _processors(topology: Topology) -> Supervisor:
    return Supervisor(
        [
            ChildSpec(
                id=f"processor.{i}",
                start=partial(ProcessorStage, topology, i),
                name=topology.processor(i),
            )
            for i in range(topology.processors)
        ],
        strategy="one_for_all",
        max_restarts=0,
    )


def _batch_processors(topology: Topology, batcher: str) -> Supervisor:
    concurrency = topology.options.batchers[batcher].concurrency
    return Supervisor(
        [
            ChildSpec(
                id=f"batch_processor.{i}",
                start=partial(BatchProcessorStage, topology, batcher, i),
                name=topology.batch_processor(batcher, i),
            )
            for i in range(concurrency)
        ],
        strategy="one_for_all",
        max_restarts=0,
    )


def _batcher(topology: Topology, batcher: str) -> Supervisor:
    return Supervisor(
        [
            ChildSpec(
                id="batcher",
                start=lambda: BatcherStage(topology, batcher),
                name=topology.batcher(batcher),
            ),
            ChildSpec(
                id="batch_processors",
                start=lambda: _batch_processors(topology, batcher),
                type="supervisor",
            ),
        ],
        strategy="rest_for_one",
    )


def _batchers(topology: Topology) -> Supervisor:
    return Supervisor(
        [
            ChildSpec(
                id=f"batcher.{b}",
                start=partial(_batcher, topology, b),
                type="supervisor",
            )
            for b in topology.batchers
        ],
        strategy="one_for_one",
    )


class PipelineSupervisor(Supervisor):
    """The root of one pipeline's tree (see the module docstring); made by the factory in
    ``Pipeline.child_spec`` for every (re)start, with a fresh ``Topology``."""

    def __init__(self, options: PipelineOptions, hooks: StageHooks) -> None:
        topology = self._topology = Topology(options, hooks)
        children = [
            ChildSpec(id="producers", start=lambda: _producers(topology), type="supervisor"),
            ChildSpec(id="processors", start=lambda: _processors(topology), type="supervisor"),
        ]
        if topology.batchers:
            children.append(
                ChildSpec(id="batchers", start=lambda: _batchers(topology), type="supervisor")
            )
        super().__init__(children, strategy="rest_for_one")

    def __repr__(self) -> str:
        return f"PipelineSupervisor({self._topology.name!r})"

    async def terminate(self, reason: ExitReason) -> None:
        """Drain first when the pipeline stops cleanly, then stop the stages."""
        if is_clean_exit(reason):
            timeout = self._topology.options.shutdown_timeout
            try:
                async with asyncio.timeout(timeout):
                    await self._drain()
            except TimeoutError:
                logger.warning(
                    "pipeline '%s' did not drain within %g s (shutdown_timeout); stopping its "
                    "stages with messages in flight, which are not acknowledged",
                    self._topology.name,
                    timeout,
                )
        await super().terminate(reason)

    async def _drain(self) -> None:
        topology = self._topology
        whereis = self.node.whereis
        for i in range(topology.producers):
            await _call(whereis(topology.producer(i)), Drain())
        for j in range(topology.processors):
            _cast(whereis(topology.processor(j)), Drain())
        for b in topology.batchers:
            _cast(whereis(topology.batcher(b)), Drain())
        if topology.batchers:
            for b in topology.batchers:
                for i in range(topology.options.batchers[b].concurrency):
                    await _call(whereis(topology.batch_processor(b, i)), WaitDrained())
        else:
            for j in range(topology.processors):
                await _call(whereis(topology.processor(j)), WaitDrained())


async def _call(pid: Pid | None, msg: object) -> None:
    if pid is None:
        return
    try:
        await pid.call(msg, timeout=None)
    except CorralError:
        pass  # the stage died meanwhile: what it held is lost, as in a crash


def _cast(pid: Pid | None, msg: object) -> None:
    if pid is None:
        return
    try:
        pid.cast(msg)
    except CorralError:
        pass
