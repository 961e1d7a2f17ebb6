"""The in-memory producer: a bounded FIFO (``MemoryQueue``) standing in for a broker.

Select it with ``producer={"module": "memory", "options": {"queue": queue}}``; without a
``queue`` option the pipeline gets a fresh ``MemoryQueue(max_size=10_000)``, reachable as
``memory_queue(pipeline)``. Everything runs on the node's loop thread; nothing here is
thread-safe.

Like a broker, the queue outlives the producer stages: a restarted stage pulls from the same
queue. Messages a stage took and did not finish when it crashed are lost (a real broker would
deliver them again). ``dead_letter=<MemoryQueue>`` puts finally failed messages on that queue
with the failure in their metadata (``dead_letter_reason``, ``attempts``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from corral._options import Options, option
from corral.errors import Overloaded
from corral.pipeline.message import NO_ACKNOWLEDGER, Acknowledger, Message
from corral.pipeline.producer import DeadLetterSink, Producer, ProducerContext

if TYPE_CHECKING:
    from corral.pipeline.pipeline import Pipeline

__all__ = ["PRODUCER", "MemoryOptions", "MemoryProducer", "MemoryQueue", "memory_queue"]

DEFAULT_MAX_SIZE: Final = 10_000
_EMPTY: Mapping[str, object] = MappingProxyType({})


class MemoryQueue:
    """A bounded FIFO of messages that memory producers pull from.

    ``push_nowait`` raises ``Overloaded`` when the messages do not fit (and pushes none);
    ``push`` waits for room instead. Producers take from the front.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, *, name: str = "memory") -> None:
        if type(max_size) is not int or max_size < 1:
            raise ValueError(
                f"MemoryQueue '{name}': max_size must be an int >= 1; got {max_size!r}"
            )
        self.name = name
        self.max_size = max_size
        self._chunks: deque[list[Message]] = deque()
        self._offset = 0  # messages of _chunks[0] already taken
        self._size = 0
        self._listeners: list[MemoryProducer] = []
        self._room_waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"<MemoryQueue '{self.name}' {self._size}/{self.max_size}>"

    def __len__(self) -> int:
        return self._size

    def push_nowait(
        self,
        data: Iterable[object],
        *,
        metadata: Mapping[str, object] | None = None,
        acknowledger: Acknowledger = NO_ACKNOWLEDGER,
    ) -> list[Message]:
        """Wrap each item of ``data`` in a ``Message`` and queue them; return the messages.

        Does not block. Raises ``Overloaded`` (nothing queued) if they do not fit.
        """
        meta = _EMPTY if metadata is None else metadata
        messages = [Message(item, meta, acknowledger) for item in data]
        self.push_messages_nowait(messages)
        return messages

    async def push(
        self,
        data: Iterable[object],
        *,
        metadata: Mapping[str, object] | None = None,
        acknowledger: Acknowledger = NO_ACKNOWLEDGER,
    ) -> list[Message]:
        """As ``push_nowait``, but wait (cancellably) until there is room for all of them.
        ``ValueError`` if they can never fit (more than ``max_size``)."""
        meta = _EMPTY if metadata is None else metadata
        messages = [Message(item, meta, acknowledger) for item in data]
        if len(messages) > self.max_size:
            raise ValueError(
                f"MemoryQueue '{self.name}'.push: {len(messages)} messages can never fit "
                f"(max_size={self.max_size}); push them in parts"
            )
        while self._size + len(messages) > self.max_size:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._room_waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._room_waiters:
                    self._room_waiters.remove(waiter)
        self.push_messages_nowait(messages)
        return messages

    def push_messages_nowait(self, messages: Sequence[Message]) -> None:
        """Queue ready-made messages (their acknowledgers hear how they end)."""
        if not messages:
            return
        if self._size + len(messages) > self.max_size:
            raise Overloaded(
                f"MemoryQueue '{self.name}' is full: {self._size} messages queued "
                f"(max_size={self.max_size}); {len(messages)} more do not fit; the pipeline "
                "is slower than its source: push less at a time or use `await queue.push`"
            )
        self._chunks.append(list(messages))
        self._size += len(messages)
        if self._listeners:
            for producer in list(self._listeners):
                if not producer._on_push():
                    self._remove_listener(producer)
                if not self._size:
                    break

    # -- for MemoryProducer ----------------------------------------------------------------

    def _take(self, n: int) -> list[Message]:
        out: list[Message] = []
        chunks = self._chunks
        while n > 0 and chunks:
            first = chunks[0]
            offset = self._offset
            available = len(first) - offset
            if available <= n:
                out.extend(first if offset == 0 else first[offset:])
                chunks.popleft()
                self._offset = 0
                n -= available
            else:
                out.extend(first[offset : offset + n])
                self._offset = offset + n
                n = 0
        self._size -= len(out)
        if out and self._room_waiters:
            while self._room_waiters:
                waiter = self._room_waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
        return out

    def _add_listener(self, producer: MemoryProducer) -> None:
        if producer not in self._listeners:
            self._listeners.append(producer)

    def _remove_listener(self, producer: MemoryProducer) -> None:
        if producer in self._listeners:
            self._listeners.remove(producer)


@dataclass(frozen=True, kw_only=True)
class MemoryOptions(Options):
    """``producer.options`` of the memory producer."""

    _what = "pipeline"

    queue: MemoryQueue = option(
        None,
        doc="The queue to pull from; default: a new MemoryQueue(max_size=10_000).",
        rule="a MemoryQueue",
        check=lambda v: isinstance(v, MemoryQueue),
    )


class MemoryProducer(Producer):
    """Pulls from a ``MemoryQueue``; what it owes is emitted as soon as messages are pushed."""

    options_type = MemoryOptions

    def __init__(self, options: object, context: ProducerContext) -> None:
        super().__init__(options, context)
        if not isinstance(options, MemoryOptions):
            raise TypeError(f"MemoryProducer: options must be MemoryOptions; got {options!r}")
        self.queue = options.queue
        self._owed = 0

    @classmethod
    def parse_options(cls, data: Mapping[str, object], path: str) -> object:
        if "queue" not in data:
            data = {**data, "queue": MemoryQueue()}
        return super().parse_options(data, path)

    @classmethod
    def dead_letter_sink(cls, target: object, options: object) -> DeadLetterSink | None:
        if not isinstance(target, MemoryQueue):
            return None

        def sink(messages: list[Message]) -> None:
            target.push_messages_nowait(
                [
                    Message(
                        m.data,
                        {
                            **m.metadata,
                            "dead_letter_reason": None if m.failure is None else m.failure.reason,
                            "attempts": m.attempt,
                        },
                    )
                    for m in messages
                ]
            )

        return sink

    def handle_demand(self, demand: int) -> list[Message]:
        self._owed += demand
        taken = self.queue._take(self._owed)
        self._owed -= len(taken)
        if self._owed:
            self.queue._add_listener(self)
        return taken

    def _on_push(self) -> bool:
        """Messages were pushed (in the pusher's task): emit what is owed. False: stop
        listening."""
        if not self._owed or not self.context.alive:
            return False
        taken = self.queue._take(self._owed)
        if taken:
            self._owed -= len(taken)
            self.context.emit(taken)
        return self._owed > 0

    def prepare_for_draining(self) -> None:
        self._owed = 0
        self.queue._remove_listener(self)

    def terminate(self, reason: object) -> None:
        self.queue._remove_listener(self)


PRODUCER: Final = MemoryProducer


def memory_queue(pipeline: Pipeline) -> MemoryQueue:
    """The queue a pipeline's memory producer pulls from; ``TypeError`` for other producers."""
    options = pipeline.options.producer.options
    if not isinstance(options, MemoryOptions):
        raise TypeError(
            f"memory_queue: pipeline '{pipeline.name}' does not use the memory producer "
            f"(producer.module is {pipeline.options.producer.module.__name__})"
        )
    return options.queue
