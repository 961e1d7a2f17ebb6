"""The user's hooks as the stages hold them, and the telemetry span around one hook call.

``StageHooks`` is what a ``Pipeline`` hands its stages (through the ``Topology``): the bound
hooks, whether each is ``async def``, the dead-letter sink and the hooks' ``context``. The
stages never see the ``Pipeline`` itself.

``HookSpan`` emits the documented events of one ``handle_message`` or ``handle_batch`` call
(``corral.pipeline.events``). It is not ``corral.telemetry.span``: these events carry what
``span`` cannot express (``size`` on ``batch`` ``start``; ``successful`` and ``failed``
counts and, for a processor, the message as returned on ``stop``), and a hook's exception
is caught by the stage (it fails the message), not propagated through a ``with``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from corral import telemetry
from corral.pipeline.message import BatchInfo, Message
from corral.pipeline.producer import DeadLetterSink

__all__ = ["HookSpan", "StageHooks", "listened"]

HandleMessage = Callable[[str, Message, object], "Message | Awaitable[Message]"]
HandleBatch = Callable[
    [str, list[Message], BatchInfo, object], "Sequence[Message] | Awaitable[Sequence[Message]]"
]
HandleFailed = Callable[[list[Message], object], "Sequence[Message] | Awaitable[Sequence[Message]]"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StageHooks:
    """A pipeline's hooks, resolved once when its supervisor starts."""

    handle_message: HandleMessage
    handle_message_async: bool
    handle_batch: HandleBatch
    handle_batch_async: bool
    handle_failed: HandleFailed
    dead_letter: DeadLetterSink | None
    context: object


def listened(prefix: tuple[str, ...]) -> bool:
    """Whether a handler is attached to the ``start``, ``stop`` or ``exception`` event of
    span ``prefix`` now (a few dictionary lookups)."""
    has = telemetry.has_handlers
    return has((*prefix, "start")) or has((*prefix, "stop")) or has((*prefix, "exception"))


class HookSpan:
    """One hook call, measured on ``clock``: emits ``prefix + ("start",)`` when made, then
    ``stop`` or ``exception`` once. Make one only when ``listened(prefix)``."""

    __slots__ = ("_clock", "_measurements", "_metadata", "_prefix", "_start")

    def __init__(
        self,
        prefix: tuple[str, ...],
        metadata: Mapping[str, object],
        clock: Callable[[], float],
        measurements: Mapping[str, float] | None = None,
    ) -> None:
        self._prefix = prefix
        self._metadata = metadata
        self._clock = clock
        self._measurements = {} if measurements is None else measurements
        self._start = start = clock()
        telemetry.emit(
            (*prefix, "start"), {"monotonic_time": start, **self._measurements}, metadata
        )

    def _ended(self, extra: Mapping[str, float]) -> dict[str, float]:
        stop = self._clock()
        return {
            "duration": stop - self._start,
            "monotonic_time": stop,
            **self._measurements,
            **extra,
        }

    def stop(self, metadata: Mapping[str, object] | None = None, **measurements: float) -> None:
        """The hook returned: ``stop`` with ``measurements`` added and ``metadata`` updated."""
        meta = self._metadata if metadata is None else {**self._metadata, **metadata}
        telemetry.emit((*self._prefix, "stop"), self._ended(measurements), meta)

    def exception(self, exc: Exception) -> None:
        """The hook raised ``exc``: ``exception`` with ``kind`` and ``reason``."""
        meta = {**self._metadata, "kind": type(exc), "reason": exc}
        telemetry.emit((*self._prefix, "exception"), self._ended({}), meta)
