"""Messages, their failures and the acknowledgers that hear how they ended.

A ``Message`` is an immutable record: a handler gets one and returns one, updated with the
helpers (``put_data``, ``mark_failed``, ``put_batcher``, ``put_batch_key``), which return a
new message and leave the old one as it was. That is what lets a retry start again from the
message as it was before the handler that failed.

Every message carries its ``acknowledger`` (and the producer's private ``ack_data``, a
delivery tag or a stream id): when the message has ended, the stage that ended it calls
``acknowledger.ack(successful, failed)`` once per acknowledger for the messages it ended
together. ``ack`` is how a producer tells its broker that a message is done (XACK, basic.ack)
or must come back (nack).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, NamedTuple, Protocol

__all__ = [
    "DEFAULT_BATCHER",
    "OK",
    "Acknowledger",
    "BatchInfo",
    "Failure",
    "Message",
    "NoAcknowledger",
]

DEFAULT_BATCHER: Final = "default"
"""The batcher a message goes to unless a handler routes it with ``put_batcher``."""

OK: Final = "ok"
"""The status of a message that has not failed."""

_EMPTY: Mapping[str, object] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a message failed: ``reason`` is the exception a handler raised or the value it
    gave ``mark_failed``. ``retry=False`` means the failure is final even when the pipeline
    retries (a message that can never succeed, e.g. one that does not parse)."""

    reason: object
    retry: bool = True


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """What ``handle_batch`` is told about its batch.

    ``batch_key`` is the key its messages share; ``partition`` the batch processor index
    its ``partition_by`` partition maps to (None without ``partition_by``); ``size`` how
    many messages it holds; ``trigger`` why it was cut: ``"size"`` (it reached
    ``batch_size``), ``"timeout"`` (``batch_timeout`` passed), ``"flush"`` (the pipeline is
    draining) or ``"retry"`` (the failed messages of an earlier attempt, tried again).
    """

    batcher: str
    batch_key: Hashable
    partition: int | None
    size: int
    trigger: str


class Acknowledger(Protocol):
    """Hears how messages ended; usually the producer's link back to its broker.

    ``ack`` is called once per group of messages that ended together and share this
    acknowledger, in the task of the stage that ended them (a processor for messages that go
    to no batcher and for those that failed in ``handle_message``, a batch processor for the
    others). It may be ``def`` or ``async def``; while it runs the stage waits. An exception
    from ``ack`` is logged on ``corral.pipeline`` and does not stop the stage: the messages
    count as acknowledged all the same. Each message is in exactly one ``ack`` call.
    """

    def ack(
        self, successful: Sequence[Message], failed: Sequence[Message]
    ) -> Awaitable[None] | None: ...


class NoAcknowledger:
    """An acknowledger that does nothing: for messages whose end nobody needs to hear."""

    __slots__ = ()

    def ack(self, successful: Sequence[Message], failed: Sequence[Message]) -> None:
        return None

    def __repr__(self) -> str:
        return "NoAcknowledger()"


NO_ACKNOWLEDGER: Final = NoAcknowledger()


class Message(NamedTuple):
    """One unit of work moving through a pipeline; immutable (a ``NamedTuple``).

    ``data`` is the payload; ``metadata`` what the producer knows about it (headers, ids);
    ``status`` is ``"ok"`` or a ``Failure``; ``acknowledger`` and ``ack_data`` belong to the
    producer, which reads them back in ``ack``; ``batcher`` names the batcher the message
    goes to after ``handle_message`` and ``batch_key`` groups it there; ``attempt`` counts
    the times it has been handed to the hook that is running (1 on the first try).
    """

    data: object
    metadata: Mapping[str, object] = _EMPTY
    acknowledger: Acknowledger = NO_ACKNOWLEDGER
    ack_data: object = None
    status: Literal["ok"] | Failure = OK
    batcher: str = DEFAULT_BATCHER
    batch_key: Hashable = None
    attempt: int = 1

    @property
    def ok(self) -> bool:
        """Whether the message has not failed."""
        return self.status == OK

    @property
    def failure(self) -> Failure | None:
        """The failure, or None while the message is ok."""
        status = self.status
        return status if isinstance(status, Failure) else None

    def put_data(self, data: object) -> Message:
        """A copy with ``data`` replaced."""
        return self._replace(data=data)

    def update_data(self, update: Callable[[object], object]) -> Message:
        """A copy whose data is ``update(data)``."""
        return self._replace(data=update(self.data))

    def mark_failed(self, reason: object, *, retry: bool = True) -> Message:
        """A copy marked failed with ``reason``. With ``retry=False`` the pipeline's retry
        option does not apply: the failure is final at once."""
        return self._replace(status=Failure(reason, retry))

    def put_batcher(self, batcher: str) -> Message:
        """A copy routed to the batcher named ``batcher`` after ``handle_message``."""
        return self._replace(batcher=batcher)

    def put_batch_key(self, batch_key: Hashable) -> Message:
        """A copy grouped under ``batch_key`` in its batcher: a batch holds one key only."""
        return self._replace(batch_key=batch_key)
