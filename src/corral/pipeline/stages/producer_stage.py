"""The producer stage: a process that runs one ``Producer`` and hands its messages to the
processors that asked for them.

Processors subscribe (``Subscribe(pid, partition)``) and ask for demand (``Ask(pid, n)``);
the messages are those of ``corral.pipeline.stages.protocol``. The stage passes on to
``Producer.handle_demand`` only the demand its buffers cannot meet (``Dispatcher.want``),
sends each processor at most what it asked for (``Events(index, messages)``), and with
``rate_limiting`` no more than the shared limiter allows per window (its timer sends
``RateReset()``); what waits is buffered, bounded by the processors' total demand.

``Drain()`` (a call, from the pipeline's supervisor when it stops) makes it stop
pulling: ``Producer.prepare_for_draining`` runs, owed demand is forgiven, and each processor
is told ``ProducerDone(index)`` once nothing buffered is waiting for it.

Every producer hook runs in this stage's task and the stage waits for it: while an async
``handle_demand`` waits on its source, asks and emits queue up in the mailbox.
``ProducerContext.emit`` reaches the stage as ``Emit(messages)``. Messages a
``handle_demand`` returns while earlier emits are still on their way wait for those emits
(``_held``), so a source's order survives the two paths.

A producer hook that raises crashes this stage; so does a producer that emits more than it
was asked for. Its supervisor restarts it and the new stage announces itself to the
processors (``ProducerUp(index, pid)``), which subscribe again.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any

from corral.pipeline.message import Message
from corral.pipeline.policy import Dispatcher
from corral.pipeline.producer import Producer, ProducerContext
from corral.pipeline.stages.ending import Ender
from corral.pipeline.stages.protocol import (
    Ask,
    Drain,
    Emit,
    Events,
    ProducerDone,
    ProducerUp,
    RateReset,
    Subscribe,
)
from corral.pipeline.stages.topology import Topology
from corral.runtime import Actor, Down, ExitReason, Pid, Timer

__all__ = ["ProducerStage"]

logger = logging.getLogger("corral.pipeline")


class ProducerStage(Actor):
    """One producer stage; every hook runs in its own task."""

    def __init__(self, topology: Topology, index: int) -> None:
        self._topology = topology
        self._index = index
        options = topology.options
        partitions = topology.processors if topology.partitioned else 1
        capacity = topology.processors * topology.processor_options.max_demand
        self._dispatcher: Dispatcher[Pid] = Dispatcher(partitions, capacity)
        self._partition_by = options.partition_by
        self._producer: Producer | None = None
        self._demand_async = False
        self._draining = False
        self._done_pending: set[Pid] = set()
        self._rate_timer: Timer | None = None
        self._rate_limited = options.rate_limiting is not None
        self._ender = Ender(
            topology.hooks, f"pipeline '{topology.name}' producer {index}", stage="producer"
        )
        self._counters = topology.hooks.counters
        self._context: ProducerContext  # made in init, with the stage's pid
        # What handle_demand returned while emits were still in the mailbox, each with the
        # number of emits that must be accepted before it; and how many have been.
        self._held: deque[tuple[int, Sequence[Message]]] = deque()
        self._emits_accepted = 0

    def __repr__(self) -> str:
        return f"ProducerStage({self._topology.name!r}, {self._index})"

    async def init(self) -> None:
        topology = self._topology
        cls = topology.options.producer.module
        context = self._context = ProducerContext(
            topology.name, self._index, self.pid, self.node.clock
        )
        producer = self._producer = cls(topology.options.producer.options, context)
        self._demand_async = inspect.iscoroutinefunction(producer.handle_demand)
        result = producer.init()
        if result is not None:
            await result
        whereis = self.node.whereis
        for j in range(topology.processors):
            pid = whereis(topology.processor(j))
            if pid is not None:
                pid.cast(ProducerUp(self._index, self.pid))

    async def handle_cast(self, msg: object) -> None:
        match msg:
            case Ask(pid, n):
                self._dispatcher.ask(pid, n)
                await self._pull_and_dispatch()
            case Emit(messages):
                self._emits_accepted += 1
                if self._draining:
                    logger.warning(
                        "pipeline '%s' producer %d: dropped %d messages emitted after "
                        "prepare_for_draining; they are not acknowledged",
                        self._topology.name,
                        self._index,
                        len(messages),
                    )
                    return
                await self._accept(messages)
                held = self._held
                while held and held[0][0] <= self._emits_accepted:
                    await self._accept(held.popleft()[1])
                await self._pull_and_dispatch()
            case Subscribe(pid, partition):
                self._dispatcher.subscribe(pid, partition)
                self.monitor(pid)
                if self._draining:
                    self._done_pending.add(pid)
                    self._dispatch()

    async def handle_call(self, msg: object) -> object:
        match msg:
            case Drain():
                await self._drain()
                return None
        raise ValueError(f"{self!r}: unknown call {msg!r}")

    async def handle_info(self, msg: object) -> None:
        match msg:
            case Down(pid=pid):
                self._dispatcher.cancel(pid)
                self._done_pending.discard(pid)
                await self._pull_and_dispatch()
            case RateReset():
                self._rate_timer = None
                await self._pull_and_dispatch()

    async def terminate(self, reason: ExitReason) -> None:
        if self._producer is not None:
            try:
                result = self._producer.terminate(reason)
                if result is not None:
                    await result
            except Exception:
                logger.exception("%r: Producer.terminate raised", self)

    # -- internals -------------------------------------------------------------------------

    async def _pull_and_dispatch(self) -> None:
        dispatcher = self._dispatcher
        producer = self._producer
        assert producer is not None
        while not self._draining:
            n = dispatcher.want()
            if n <= 0:
                break
            dispatcher.asked(n)
            result: Any = producer.handle_demand(n)
            if self._demand_async:
                result = await result
            if not result:
                break
            emits = self._context.emits
            if emits > self._emits_accepted or self._held:
                # Emitted earlier and still in the mailbox: those go first (source order).
                self._held.append((emits, result))
                break
            await self._accept(result)
            self._dispatch()
        self._dispatch()

    async def _accept(self, messages: Sequence[Message]) -> None:
        dispatcher = self._dispatcher
        owed = dispatcher.owed
        if not dispatcher.emitted(len(messages)):
            raise RuntimeError(
                f"{type(self._producer).__name__} (pipeline '{self._topology.name}' "
                f"producer {self._index}) emitted {len(messages)} messages with demand for "
                f"{owed}; a producer emits at most the demand it was asked for"
            )
        if self._counters is not None:
            self._counters.produced += len(messages)
        if self._partition_by is None:
            dispatcher.push(0, messages)
            return
        await self._partition(messages)

    async def _partition(self, messages: Sequence[Message]) -> None:
        partition_by = self._partition_by
        assert partition_by is not None
        dispatcher = self._dispatcher
        n = dispatcher.partitions
        parts: dict[int, list[Message]] = {}
        failed: list[Message] = []
        for m in messages:
            try:
                key = partition_by(m)
                if type(key) is not int:
                    raise TypeError(f"partition_by must return an int; got {key!r}")
            except Exception as exc:
                failed.append(m.mark_failed(exc, retry=False))
                continue
            parts.setdefault(key % n, []).append(m)
        for p, chunk in parts.items():
            dispatcher.push(p, chunk)
        if failed:
            await self._ender.end([], failed)

    def _dispatch(self) -> None:
        dispatcher = self._dispatcher
        if not self._rate_limited:
            out = dispatcher.take()
        else:
            now = self.node.clock.now()
            limiter = self._topology.rate_limiter(now)
            assert limiter is not None
            wanted = dispatcher.deliverable()
            granted = limiter.take(now, wanted)
            out = dispatcher.take(granted)
            if granted < wanted and self._rate_timer is None:
                self._rate_timer = self.send_after(limiter.window_end(now) - now, RateReset())
        index = self._index
        for pid, messages in out:
            if pid.alive:
                pid.cast(Events(index, messages))
        if self._done_pending:
            for pid in list(self._done_pending):
                if dispatcher.buffered_for(pid) == 0:
                    self._done_pending.discard(pid)
                    if pid.alive:
                        pid.cast(ProducerDone(index))

    async def _drain(self) -> None:
        if self._draining:
            return
        self._draining = True
        while self._held:  # handed over before the drain: delivered (emits still queued are not)
            await self._accept(self._held.popleft()[1])
        self._dispatcher.forgive()
        assert self._producer is not None
        result = self._producer.prepare_for_draining()
        if result is not None:
            await result
        self._done_pending.update(self._subscribers())
        self._dispatch()

    def _subscribers(self) -> list[Pid]:
        return [pid for pid in self._dispatcher.consumers() if pid.alive]
