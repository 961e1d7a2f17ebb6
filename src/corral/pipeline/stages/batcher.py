"""The batcher stage: a process that groups the messages routed to one batcher into
batches and hands each batch to a free batch processor.

Messages are grouped by ``batch_key`` (and, with ``partition_by``, by the batch processor
their partition maps to). A group is cut when it holds ``batch_size`` messages, or
``batch_timeout`` seconds after its first message, whichever comes first; a cut batch goes
to the next batch processor that is free (with ``partition_by``: to the one its partition
maps to, so per-key order holds). Batch processors ask for one batch at a time
(``BatchProcessorReady(index, pid)``), after they acknowledged the last.

Processors may send only against credit (``Credits``): each gets up to ``batch_size``
messages of credit and the batcher holds at most ``batch_size`` x (processors + concurrency)
messages, cut or not, besides the batches its batch processors are running. When every
batch processor is busy the credit runs out, the processors hold their
messages and stop asking their producers: backpressure, with bounded memory.

What it receives (``corral.pipeline.stages.protocol``): ``Messages(processor, messages)``
(within credit), ``BatchProcessorReady(index, pid)`` (a batch processor wants a batch),
``ProcessorDone(processor)`` and ``Drain()``; its own timers send ``BatchTimeout(key,
group_id)``. It sends ``BatcherUp(name, pid)`` and ``Credit(name, pid, n)`` to processors
and ``Batch(info, messages)`` to batch processors.

Draining: once every processor has said ``ProcessorDone(index)`` (or is gone) after a
``Drain()``, open groups are cut (trigger ``"flush"``), handed out, and each batch
processor is told ``BatcherDone()`` after its last batch.

Every hook runs in this process's task and never waits on another stage: a slow batch
processor shows here only as batches waiting.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from corral.pipeline.message import BatchInfo, Message
from corral.pipeline.policy import BatchGroups, Credits
from corral.pipeline.stages.ending import Ender
from corral.pipeline.stages.protocol import (
    Batch,
    BatcherDone,
    BatcherUp,
    BatchProcessorReady,
    BatchTimeout,
    Credit,
    Drain,
    Messages,
    ProcessorDone,
)
from corral.pipeline.stages.topology import Topology
from corral.runtime import Actor, Down, MonitorRef, Pid, Timer

__all__ = ["BatcherStage"]

_Ready = tuple[BatchInfo, list[Message]]


class BatcherStage(Actor):
    """The batcher named ``batcher``; every hook runs in its own task."""

    def __init__(self, topology: Topology, batcher: str) -> None:
        self._topology = topology
        self._batcher = batcher
        options = topology.options.batchers[batcher]
        self._batch_size = options.batch_size
        self._batch_timeout = options.batch_timeout
        self._concurrency = options.concurrency
        self._groups = BatchGroups(options.batch_size)
        # Room for a batch per processor and per batch processor: enough for a few batch keys
        # to fill up at once; with more keys than that, batches are cut by timeout.
        capacity = options.batch_size * (topology.processors + options.concurrency)
        self._credits = Credits(capacity, options.batch_size)
        self._partition_by = topology.options.partition_by
        self._processors: dict[int, tuple[Pid, MonitorRef]] = {}
        self._done: set[int] = set()
        # Cut batches waiting for a free batch processor: one queue, or one per batch
        # processor when partitioned (a partition always goes to the same one).
        queues = options.concurrency if self._partition_by is not None else 1
        self._ready: list[deque[_Ready]] = [deque() for _ in range(queues)]
        self._ready_count = 0
        self._bps: dict[int, tuple[Pid, MonitorRef]] = {}
        self._free: deque[int] = deque()
        self._timers: dict[int, Timer] = {}  # by group id
        self._draining = False
        self._finished = False
        self._ender = Ender(
            topology.hooks,
            f"pipeline '{topology.name}' batcher {batcher!r}",
            stage=f"batcher.{batcher}",
        )

    def __repr__(self) -> str:
        return f"BatcherStage({self._topology.name!r}, {self._batcher!r})"

    async def init(self) -> None:
        topology = self._topology
        whereis = self.node.whereis
        for j in range(topology.processors):
            pid = whereis(topology.processor(j))
            if pid is not None:
                self._processors[j] = (pid, self.monitor(pid))
                self._credits.add(j)
                pid.cast(BatcherUp(self._batcher, self.pid))
        self._grant()

    async def handle_cast(self, msg: object) -> None:
        match msg:
            case Messages(processor, messages):
                await self._on_messages(processor, messages)
            case BatchProcessorReady(index, pid):
                known = self._bps.get(index)
                if known is None or known[0] is not pid:
                    if known is not None:
                        self.demonitor(known[1])
                    self._bps[index] = (pid, self.monitor(pid))
                if self._finished:
                    if pid.alive:
                        pid.cast(BatcherDone())
                    return
                self._free.append(index)
                self._dispatch()
            case ProcessorDone(processor):
                self._done.add(processor)
            case Drain():
                self._draining = True
        self._check_drained()

    def handle_info(self, msg: object) -> None:
        match msg:
            case BatchTimeout(key, group_id):
                if self._timers.pop(group_id, None) is not None:
                    batch = self._groups.cut(key, group_id)
                    if batch is not None:
                        self._enqueue(key, batch, "timeout")
                        self._dispatch()
                        self._grant()  # the batch left the group count even if it waits
            case Down():
                for j, (_, ref) in list(self._processors.items()):
                    if ref is msg.ref:
                        del self._processors[j]
                        self._credits.remove(j)
                for i, (_, ref) in list(self._bps.items()):
                    if ref is msg.ref:
                        del self._bps[i]
                        if i in self._free:
                            self._free.remove(i)
                self._check_drained()

    # -- batching --------------------------------------------------------------------------

    async def _on_messages(self, processor: int, messages: list[Message]) -> None:
        self._credits.received(processor, len(messages))
        keys: list[Hashable] | None = None
        if self._partition_by is not None:
            keys, messages = await self._partition_keys(messages)
        groups = self._groups
        cut = groups.add(messages, keys)
        if groups.opened:
            timeout, timers, send_after = self._batch_timeout, self._timers, self.send_after
            for key, group_id in groups.opened:
                timers[group_id] = send_after(timeout, BatchTimeout(key, group_id))
            groups.opened.clear()
        for key, group_id, batch in cut:
            timer = self._timers.pop(group_id, None)
            if timer is not None:
                timer.cancel()
            self._enqueue(key, batch, "size")
        if cut:
            self._dispatch()
        self._grant()

    async def _partition_keys(
        self, messages: list[Message]
    ) -> tuple[list[Hashable], list[Message]]:
        partition_by = self._partition_by
        assert partition_by is not None
        keys: list[Hashable] = []
        kept: list[Message] = []
        failed: list[Message] = []
        for m in messages:
            try:
                p = partition_by(m)
                if type(p) is not int:
                    raise TypeError(f"partition_by must return an int; got {p!r}")
            except Exception as exc:
                failed.append(m.mark_failed(exc, retry=False))
                continue
            keys.append((m.batch_key, p % self._concurrency))
            kept.append(m)
        if failed:
            await self._ender.end([], failed)
        return keys, kept

    def _enqueue(self, key: Hashable, batch: list[Message], trigger: str) -> None:
        if self._partition_by is not None:
            batch_key, partition = key  # type: ignore[misc]
        else:
            batch_key, partition = key, None
        info = BatchInfo(self._batcher, batch_key, partition, len(batch), trigger)
        self._ready[0 if partition is None else partition].append((info, batch))
        self._ready_count += len(batch)

    def _dispatch(self) -> None:
        """Hand ready batches to free batch processors, then grant the room that made."""
        free = self._free
        if not free or not self._ready_count:
            return
        if self._partition_by is None:
            ready = self._ready[0]
            while free and ready:
                self._send(free.popleft(), ready)
        else:
            for index in list(free):
                ready = self._ready[index]
                if ready:
                    free.remove(index)
                    self._send(index, ready)
        self._grant()

    def _send(self, index: int, ready: deque[_Ready]) -> None:
        """Send the oldest ready batch to batch processor ``index``, unless it died (its
        Down is on the way; its replacement will ask for the batch)."""
        pid, _ = self._bps[index]
        if not pid.alive:
            return
        info, batch = ready.popleft()
        self._ready_count -= len(batch)
        pid.cast(Batch(info, batch))

    def _grant(self) -> None:
        grants = self._credits.grants(self._groups.held + self._ready_count)
        for j, n in grants:
            pid, _ = self._processors[j]
            if pid.alive:  # else its Down is on the way and returns the credit
                pid.cast(Credit(self._batcher, self.pid, n))

    def _check_drained(self) -> None:
        if not self._draining or self._finished:
            return
        for j in self._processors:
            if j not in self._done:
                return
        if len(self._groups):
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            for key, _, batch in self._groups.cut_all():
                self._enqueue(key, batch, "flush")
            self._dispatch()
        if self._ready_count:
            return
        self._finished = True
        for pid, _ in self._bps.values():
            if pid.alive:
                pid.cast(BatcherDone())
