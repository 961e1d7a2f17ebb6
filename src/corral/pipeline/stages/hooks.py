"""The user's hooks as the stages hold them, and the telemetry span around one hook call.

``StageHooks`` is what a ``Pipeline`` hands its stages (through the ``Topology``): the bound
hooks, whether each is ``async def``, the dead-letter sink and the hooks' ``context``. The
stages never see the ``Pipeline`` itself.

The documented events of one ``handle_message`` or ``handle_batch`` call
(``corral.pipeline.events``) come from a ``corral.telemetry.start_span``: a span begun by
hand, because a hook's exception is caught by the stage (it fails the message) rather than
propagated through a ``with``, and because the ``stop`` event carries what is known only at
the end (the message as returned; the ``successful`` and ``failed`` counts).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from corral.pipeline.message import BatchInfo, Message
from corral.pipeline.producer import DeadLetterSink
from corral.pipeline.statistics import PipelineCounters

__all__ = ["StageHooks"]

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
    counters: PipelineCounters | None = None
    """Where the stages count what they take in and end (``Pipeline.statistics``)."""
