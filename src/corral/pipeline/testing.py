"""Test helpers for pipelines that use the memory producer (Broadway's ``test_message``
with its ``CallerAcknowledger``).

::

    pushed = push(pipeline, [1, 2, 3])
    successful, failed = await pushed.wait_acked()
    assert [m.data for m in failed] == [2]

``push`` wraps each item in a ``Message`` whose acknowledger is the returned ``Pushed``, and
queues them on the pipeline's ``MemoryQueue``. ``Pushed`` records every ``ack`` call and
checks that each of its messages is acknowledged exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

from corral.pipeline.message import Message
from corral.pipeline.producers.memory import memory_queue

if TYPE_CHECKING:
    from corral.pipeline.pipeline import Pipeline

__all__ = ["Pushed", "push"]

_EMPTY: Mapping[str, object] = MappingProxyType({})


class Pushed:
    """The acknowledger of a group of pushed messages; waits for and checks their acks.

    ``messages`` are the messages as pushed (``ack_data`` is each one's position);
    ``ack_calls`` every ``(successful, failed)`` pair ``ack`` received, in order.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.ack_calls: list[tuple[list[Message], list[Message]]] = []
        self._ended: dict[int, tuple[bool, Message]] = {}
        self._errors: list[str] = []
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        return f"<Pushed {len(self._ended)}/{len(self.messages)} acknowledged>"

    @property
    def acked(self) -> int:
        """How many of the pushed messages have been acknowledged (either way)."""
        return len(self._ended)

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        """Record an ack from the pipeline (an ``Acknowledger``)."""
        self.ack_calls.append((list(successful), list(failed)))
        for ok, group in ((True, successful), (False, failed)):
            for m in group:
                index = m.ack_data
                if type(index) is not int or not 0 <= index < len(self.messages):
                    self._errors.append(f"ack of a message that was not pushed here: {m!r}")
                elif index in self._ended:
                    self._errors.append(f"message {index} ({m.data!r}) acknowledged twice")
                else:
                    self._ended[index] = (ok, m)
        if len(self._ended) >= len(self.messages) or self._errors:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def wait_acked(self, timeout: float | None = 5.0) -> tuple[list[Message], list[Message]]:
        """Wait until every pushed message has been acknowledged; return the (successful,
        failed) messages as acknowledged, each list in push order.

        Blocks up to ``timeout`` seconds (of the loop's clock; virtual in tests), then
        raises ``TimeoutError`` saying which are missing. Raises ``AssertionError`` if a
        message was acknowledged twice or an unknown one was.
        """
        if len(self._ended) < len(self.messages) and not self._errors:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                missing = [i for i in range(len(self.messages)) if i not in self._ended]
                raise TimeoutError(
                    f"wait_acked: {len(self._ended)} of {len(self.messages)} pushed messages "
                    f"acknowledged within {timeout:g} s; not yet: positions {missing[:20]}"
                ) from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        if self._errors:
            raise AssertionError("; ".join(self._errors))
        successful: list[Message] = []
        failed: list[Message] = []
        for index in range(len(self.messages)):
            ok, m = self._ended[index]
            (successful if ok else failed).append(m)
        return successful, failed


def push(
    pipeline: Pipeline,
    data: Iterable[object],
    *,
    metadata: Mapping[str, object] | None = None,
) -> Pushed:
    """Queue each item of ``data`` as a message on ``pipeline``'s memory queue, with a new
    ``Pushed`` as their acknowledger, and return it. Does not block; raises ``Overloaded``
    if the queue is full and ``TypeError`` if the pipeline does not use the memory producer.
    """
    queue = memory_queue(pipeline)
    pushed = Pushed()
    meta = _EMPTY if metadata is None else metadata
    pushed.messages = [Message(item, meta, pushed, i) for i, item in enumerate(data)]
    queue.push_messages_nowait(pushed.messages)
    return pushed
