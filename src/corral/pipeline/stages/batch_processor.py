"""The batch processor stage: a process that runs ``Pipeline.handle_batch`` on one batch at
a time and ends its messages.

It asks its batcher for a batch (``BatchProcessorReady(index, pid)``), runs ``handle_batch`` in its
own task, ends the messages (``handle_failed`` and the dead-letter sink for the failed ones,
then one ``ack`` per acknowledger) and only then asks for the next: a slow ``handle_batch``
holds its batcher back, and through it the processors and the producers.

``handle_batch`` raising fails every message of the batch with that exception; returning a
different number of messages than it was given fails them all with a ``TypeError`` that
says so (not retried). With ``retry``, the failed messages (as ``handle_batch`` returned
them, or as given when it raised) are handed to ``handle_batch`` again, as one batch with
trigger ``"retry"``, after the backoff; this stage waits meanwhile.

What it receives (``corral.pipeline.stages.protocol``): ``Batch(info, messages)`` from its
batcher, one at a time, and ``BatcherDone()`` after the last batch of a drain; the call
``WaitDrained()`` is answered once that has come.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

from corral import telemetry
from corral.pipeline.events import BATCH
from corral.pipeline.message import OK, BatchInfo, Message
from corral.pipeline.policy import retry_delay
from corral.pipeline.stages.ending import Ender
from corral.pipeline.stages.protocol import Batch, BatcherDone, BatchProcessorReady, WaitDrained
from corral.pipeline.stages.topology import Topology
from corral.runtime import Actor, Caller

__all__ = ["BatchProcessorStage"]


class BatchProcessorStage(Actor):
    """Batch processor ``index`` of batcher ``batcher``; every hook runs in its own task."""

    def __init__(self, topology: Topology, batcher: str, index: int) -> None:
        self._topology = topology
        self._batcher = batcher
        self._index = index
        hooks = topology.hooks
        self._handle = hooks.handle_batch
        self._handle_async = hooks.handle_batch_async
        self._context = hooks.context
        self._retry = topology.options.retry
        where = f"pipeline '{topology.name}' batch processor {batcher!r} {index}"
        self._ender = Ender(hooks, where, stage=f"batch_processor.{batcher}")
        self._meta: dict[str, object] = {
            "pipeline": topology.name,
            "batcher": batcher,
            "index": index,
        }
        self._drained = False
        self._waiters: list[Caller] = []

    def __repr__(self) -> str:
        return f"BatchProcessorStage({self._topology.name!r}, {self._batcher!r}, {self._index})"

    async def init(self) -> None:
        pid = self.node.whereis(self._topology.batcher(self._batcher))
        if pid is not None:
            pid.cast(BatchProcessorReady(self._index, self.pid))

    async def handle_cast(self, msg: object) -> None:
        match msg:
            case Batch(info, messages):
                await self._run(info, messages)
                batcher = self.node.whereis(self._topology.batcher(self._batcher))
                if batcher is not None:
                    batcher.cast(BatchProcessorReady(self._index, self.pid))
            case BatcherDone() if not self._drained:
                self._drained = True
                waiters, self._waiters = self._waiters, []
                for caller in waiters:
                    caller.reply(True)

    def handle_call(self, msg: object) -> object:
        match msg:
            case WaitDrained():
                if self._drained:
                    return True
                self._waiters.append(self.defer_reply())
                return None
        raise ValueError(f"{self!r}: unknown call {msg!r}")

    async def _run(self, info: BatchInfo, messages: list[Message]) -> None:
        retry = self._retry
        if retry is not None:  # only retries make attempts other than 1
            attempts = [m.attempt for m in messages]
            if attempts.count(1) != len(attempts):
                messages = [m if m.attempt == 1 else m._replace(attempt=1) for m in messages]
        successful: list[Message] = []
        failed: list[Message] = []
        while True:
            result = await self._call(info, messages)
            statuses = [m.status for m in result]
            if statuses.count(OK) == len(statuses):
                successful.extend(result)  # the usual case, without a loop
                break
            retryable: list[Message] = []
            delay: float | None = None
            for m in result:
                if m.status == OK:
                    successful.append(m)
                    continue
                wait = retry_delay(m.failure, m.attempt, retry)
                if wait is None:
                    failed.append(m)
                else:
                    retryable.append(m)
                    delay = wait if delay is None else delay
            if delay is None:
                break
            await asyncio.sleep(delay)
            messages = [m._replace(status=OK, attempt=m.attempt + 1) for m in retryable]
            info = dataclasses.replace(info, size=len(messages), trigger="retry")
        await self._ender.end(successful, failed)

    async def _call(self, info: BatchInfo, messages: list[Message]) -> list[Message]:
        """One ``handle_batch`` call, under the batch span when anybody listens."""
        size = len(messages)
        span: telemetry.Span | None = None
        if telemetry.has_span_handlers(BATCH):
            meta = {**self._meta, "batch_info": info}
            clock = self.node.clock.now
            span = telemetry.start_span(BATCH, meta, clock=clock, measurements={"size": size})
        try:
            returned: Any = self._handle(self._batcher, messages, info, self._context)
            if self._handle_async:
                returned = await returned
        except Exception as exc:
            if span is not None:
                span.exception(exc)
            return [m.mark_failed(exc) for m in messages]
        result = _checked(returned, messages)
        if span is not None:
            ok = [m.status for m in result].count(OK)
            span.stop(successful=ok, failed=size - ok)
        return result


def _checked(returned: object, given: list[Message]) -> list[Message]:
    """``returned`` as a list of messages, or every given message failed with the broken
    contract as the reason."""
    if isinstance(returned, Sequence) and not isinstance(returned, str | bytes):
        if len(returned) == len(given) and {type(m) for m in returned} <= {Message}:
            return list(returned)
        if len(returned) != len(given):
            problem = f"returned {len(returned)} messages for a batch of {len(given)}"
        else:
            problem = "returned something that is not a Message"
    else:
        problem = f"returned {returned!r} for a batch of {len(given)}"
    error = TypeError(f"Pipeline.handle_batch {problem}; it must return every message it was given")
    return [m.mark_failed(error, retry=False) for m in given]
