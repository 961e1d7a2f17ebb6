"""The processor stage: a process that runs ``Pipeline.handle_message`` on the messages its
producers send, then ends them or passes them to their batcher.

It subscribes to every producer stage and keeps between ``min_demand`` and ``max_demand``
messages asked of each. Messages are handled one at a time, in arrival order, in this
process's task (so ``processors.concurrency`` is how many run side by side). A handler that
raises or returns a failed message fails that message only; with ``retry`` it is tried again
here after the backoff (this processor waits meanwhile, which keeps per-key order), and
fails for good when its attempts are spent. Failed messages and, without batchers, the
successful ones are ended here (``handle_failed``, dead letter, ``ack``) once per chunk.

Messages for a batcher leave only against the credit that batcher granted; what does not
fit waits here and, while anything waits, the processor asks its producers for nothing:
that is how a slow ``handle_batch`` slows the producers down.

What it receives (casts from the other stages, handled in arrival order; the messages of
``corral.pipeline.stages.protocol``):

- ``Events(producer, messages)``: messages to handle, never more than it asked for;
- ``ProducerUp(producer, pid)``: a (re)started producer stage; subscribe to it;
- ``ProducerDone(producer)``: that producer drains and has sent its last messages;
- ``BatcherUp(batcher, pid)`` and ``Credit(batcher, pid, n)``: a batcher subscribed, and
  lets this processor send it ``n`` more messages;
- ``Drain()``: the pipeline stops. Once every producer is done (or gone) and nothing is
  held, it tells each batcher ``ProcessorDone(index)``; the call ``WaitDrained()`` is
  answered then.

It sends ``Subscribe(pid, partition)`` and ``Ask(pid, n)`` to producers and
``Messages(index, messages)`` to batchers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from corral import telemetry
from corral.pipeline.events import PROCESSED, PROCESSOR
from corral.pipeline.message import OK, Message
from corral.pipeline.policy import retry_delay
from corral.pipeline.stages.ending import Ender
from corral.pipeline.stages.protocol import (
    Ask,
    BatcherUp,
    Credit,
    Drain,
    Events,
    Messages,
    ProcessorDone,
    ProducerDone,
    ProducerUp,
    Subscribe,
    WaitDrained,
)
from corral.pipeline.stages.topology import Topology
from corral.runtime import Actor, Caller, Down, MonitorRef, Pid

__all__ = ["ProcessorStage"]


class _Subscription:
    __slots__ = ("done", "outstanding", "pid", "ref")

    def __init__(self) -> None:
        self.pid: Pid | None = None
        self.ref: MonitorRef | None = None
        self.outstanding = 0
        self.done = False


class _Outbox:
    __slots__ = ("credit", "held", "name", "pid", "ref")

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid: Pid | None = None
        self.ref: MonitorRef | None = None
        self.credit = 0
        self.held: list[Message] = []


class ProcessorStage(Actor):
    """One processor stage; every hook runs in its own task."""

    def __init__(self, topology: Topology, index: int) -> None:
        self._topology = topology
        self._index = index
        options = topology.options
        processor = topology.processor_options
        self._max_demand = processor.max_demand
        self._min_demand = processor.effective_min_demand
        self._subs = [_Subscription() for _ in range(topology.producers)]
        self._outs = {name: _Outbox(name) for name in topology.batchers}
        self._retry = options.retry
        hooks = topology.hooks
        self._handle = hooks.handle_message
        self._handle_async = hooks.handle_message_async
        self._key = topology.processor_key
        self._context = hooks.context
        self._ender = Ender(
            hooks,
            f"pipeline '{topology.name}' processor {index}",
            stage=f"processor.{topology.processor_key}",
        )
        self._meta: dict[str, object] = {
            "pipeline": topology.name,
            "processor": topology.processor_key,
            "index": index,
        }
        self._draining = False
        self._drained = False
        self._waiters: list[Caller] = []

    def __repr__(self) -> str:
        return f"ProcessorStage({self._topology.name!r}, {self._index})"

    async def init(self) -> None:
        whereis = self.node.whereis
        for i in range(self._topology.producers):
            pid = whereis(self._topology.producer(i))
            if pid is not None:
                self._subscribe(i, pid)

    async def handle_cast(self, msg: object) -> None:
        match msg:
            case Events(producer, messages):
                await self._on_events(producer, messages)
            case Credit(batcher, pid, n):
                out = self._outs[batcher]
                if out.pid is pid:
                    out.credit += n
                    self._flush()
                    self._ask()
            case BatcherUp(batcher, pid):
                out = self._outs[batcher]
                if out.ref is not None:
                    self.demonitor(out.ref)
                out.pid, out.ref, out.credit = pid, self.monitor(pid), 0
            case ProducerUp(producer, pid):
                if not self._draining:
                    self._subscribe(producer, pid)
            case ProducerDone(producer):
                self._subs[producer].done = True
            case Drain():
                self._draining = True
        self._check_drained()

    def handle_call(self, msg: object) -> object:
        match msg:
            case WaitDrained():
                if self._drained:
                    return True
                self._waiters.append(self.defer_reply())
                return None
        raise ValueError(f"{self!r}: unknown call {msg!r}")

    def handle_info(self, msg: object) -> None:
        if not isinstance(msg, Down):
            return
        for sub in self._subs:
            if sub.ref is msg.ref:
                sub.pid, sub.ref, sub.outstanding = None, None, 0
        for out in self._outs.values():
            if out.ref is msg.ref:
                out.pid, out.ref, out.credit = None, None, 0
        self._check_drained()

    # -- demand ----------------------------------------------------------------------------

    def _subscribe(self, i: int, pid: Pid) -> None:
        sub = self._subs[i]
        if sub.pid is pid or not pid.alive:
            return
        if sub.ref is not None:
            self.demonitor(sub.ref)
        sub.pid, sub.ref, sub.outstanding, sub.done = pid, self.monitor(pid), 0, False
        pid.cast(Subscribe(self.pid, self._index))
        self._ask()

    def _holding(self) -> bool:
        return any(out.held for out in self._outs.values())

    def _ask(self) -> None:
        """Top up each subscription to max_demand once it fell to min_demand, unless
        messages are waiting for batcher credit."""
        if self._outs and self._holding():
            return
        low, high = self._min_demand, self._max_demand
        me = self.pid
        for sub in self._subs:
            pid = sub.pid
            if pid is not None and not sub.done and sub.outstanding <= low and pid.alive:
                pid.cast(Ask(me, high - sub.outstanding))
                sub.outstanding = high

    def _flush(self) -> None:
        for out in self._outs.values():
            held, pid = out.held, out.pid
            # A batcher that died may not have had its Down handled yet: skip it.
            if not held or pid is None or out.credit <= 0 or not pid.alive:
                continue
            k = min(out.credit, len(held))
            if k == len(held):
                chunk, out.held = held, []
            else:
                chunk = held[:k]
                del held[:k]
            out.credit -= k
            pid.cast(Messages(self._index, chunk))

    def _check_drained(self) -> None:
        if not self._draining or self._drained or self._holding():
            return
        for sub in self._subs:
            if sub.pid is not None and not sub.done:
                return
        self._drained = True
        for out in self._outs.values():
            if out.pid is not None and out.pid.alive:
                out.pid.cast(ProcessorDone(self._index))
        waiters, self._waiters = self._waiters, []
        for caller in waiters:
            caller.reply(True)

    # -- messages --------------------------------------------------------------------------

    async def _on_events(self, producer: int, messages: list[Message]) -> None:
        sub = self._subs[producer]
        sub.outstanding = max(0, sub.outstanding - len(messages))
        handled, failed = await self._handle_each(messages)
        if telemetry.has_handlers(PROCESSED):
            counts = {"successful": len(handled), "failed": len(failed)}
            telemetry.emit(PROCESSED, counts, self._meta)
        if not self._outs:
            await self._ender.end(handled, failed)
        else:
            self._route(handled, failed)
            if failed:
                await self._ender.end([], failed)
        self._flush()
        self._ask()

    async def _handle_each(
        self, messages: list[Message], *, retrying: bool = False
    ) -> tuple[list[Message], list[Message]]:
        """Run ``handle_message`` once on each message, in order, under the processor span
        when anybody listens; then, unless ``retrying``, retry the failed ones as the policy
        says. Returns the handled messages and the failed ones, as the hook returned them."""
        handled: list[Message] = []
        failed: list[Message] = []
        handle, handle_async, key, context = (
            self._handle,
            self._handle_async,
            self._key,
            self._context,
        )
        span: telemetry.Span | None = None
        instrumented = telemetry.has_span_handlers(PROCESSOR)
        keep = handled.append
        r: Any
        for m in messages:
            if instrumented:
                meta = {**self._meta, "message": m}
                span = telemetry.start_span(PROCESSOR, meta, clock=self.node.clock.now)
            try:
                r = handle(key, m, context)
                if handle_async:
                    r = await r
            except Exception as exc:
                if span is not None:
                    span.exception(exc)
                r = m.mark_failed(exc)
            else:
                if type(r) is not Message:
                    r = _bad_return(m, r)
                if span is not None:
                    span.stop({"message": r})
            if r.status != OK:
                if not retrying and self._retry is not None:
                    r = await self._retry_message(m, r)
                if r.status != OK:
                    failed.append(r)
                    continue
            keep(r)
        return handled, failed

    def _route(self, handled: list[Message], failed: list[Message]) -> None:
        """Put each handled message in its batcher's outbox, in order."""
        outs = self._outs
        if not handled:
            return
        names = [m.batcher for m in handled]
        out = outs.get(names[0])
        if out is not None and names.count(out.name) == len(names):
            out.held.extend(handled)  # the usual case: one batcher for the whole chunk
            return
        for m in handled:
            out = outs.get(m.batcher)
            if out is None:
                failed.append(m.mark_failed(_unknown_batcher(m.batcher, outs), retry=False))
            else:
                out.held.append(m)

    async def _retry_message(self, m: Message, r: Message) -> Message:
        """Try ``m`` again, here, after each backoff, while the policy allows; ``r`` is how
        its last attempt ended. Returns how its last attempt ended."""
        while (delay := retry_delay(r.failure, m.attempt, self._retry)) is not None:
            await asyncio.sleep(delay)
            m = m._replace(attempt=m.attempt + 1)
            handled, failed = await self._handle_each([m], retrying=True)
            r = handled[0] if handled else failed[0]
        return r


def _bad_return(m: Message, returned: object) -> Message:
    return m.mark_failed(
        TypeError(f"Pipeline.handle_message must return a Message; got {returned!r}"),
        retry=False,
    )


def _unknown_batcher(name: Hashable, outs: dict[str, _Outbox]) -> ValueError:
    return ValueError(
        f"Pipeline.handle_message routed a message to batcher {name!r}; the pipeline's "
        f"batchers are: {', '.join(outs)} (route with Message.put_batcher)"
    )
