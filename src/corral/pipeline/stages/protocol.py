"""The messages the pipeline's stages send each other, one ``NamedTuple`` each.

Each stage handles its own with ``match`` (see the stage modules for when each is sent). By
receiver:

- producer stage: ``Subscribe`` and ``Ask`` from processors, ``Emit`` from its producer's
  ``ProducerContext.emit``, the call ``Drain`` from the pipeline supervisor, and its own
  timer's ``RateReset``;
- processor stage: ``Events``, ``ProducerUp`` and ``ProducerDone`` from producer stages,
  ``BatcherUp`` and ``Credit`` from batchers, ``Drain`` (a cast) and the call
  ``WaitDrained`` from the pipeline supervisor;
- batcher stage: ``Messages`` and ``ProcessorDone`` from processors, ``BatchProcessorReady``
  from its batch processors, ``Drain`` (a cast) from the pipeline supervisor, and its own
  timers' ``BatchTimeout``;
- batch processor stage: ``Batch`` and ``BatcherDone`` from its batcher, and the call
  ``WaitDrained`` from the pipeline supervisor.

Messages travel as lists that the sender gives away: the receiver may keep them.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import NamedTuple

from corral.pipeline.message import BatchInfo, Message
from corral.runtime import Pid

__all__ = [
    "Ask",
    "Batch",
    "BatchProcessorReady",
    "BatchTimeout",
    "BatcherDone",
    "BatcherUp",
    "Credit",
    "Drain",
    "Emit",
    "Events",
    "Messages",
    "ProcessorDone",
    "ProducerDone",
    "ProducerUp",
    "RateReset",
    "Subscribe",
    "WaitDrained",
]

# -- to producer stages ------------------------------------------------------------------------


class Subscribe(NamedTuple):
    """A processor subscribes, to ``partition`` (its index) when the pipeline partitions."""

    pid: Pid
    partition: int


class Ask(NamedTuple):
    """A processor wants ``n`` more messages."""

    pid: Pid
    n: int


class Emit(NamedTuple):
    """Messages the producer emitted outside ``handle_demand`` (``ProducerContext.emit``)."""

    messages: list[Message]


class RateReset(NamedTuple):
    """The rate limiter's window ended (the stage's own timer)."""


# -- to processor stages -----------------------------------------------------------------------


class Events(NamedTuple):
    """Messages from producer stage ``producer``, never more than the processor asked for."""

    producer: int
    messages: list[Message]


class ProducerUp(NamedTuple):
    """Producer stage ``producer`` (re)started as ``pid``: subscribe to it."""

    producer: int
    pid: Pid


class ProducerDone(NamedTuple):
    """Producer stage ``producer`` drains and has sent its last messages."""

    producer: int


class BatcherUp(NamedTuple):
    """Batcher ``batcher`` (re)started as ``pid``; it grants credit next."""

    batcher: str
    pid: Pid


class Credit(NamedTuple):
    """Batcher ``batcher`` (as ``pid``) lets the processor send it ``n`` more messages."""

    batcher: str
    pid: Pid
    n: int


# -- to batcher stages -------------------------------------------------------------------------


class Messages(NamedTuple):
    """Messages from processor ``processor``, within its credit."""

    processor: int
    messages: list[Message]


class BatchProcessorReady(NamedTuple):
    """Batch processor ``batch_processor`` (an index, as ``pid``) is free for a batch."""

    batch_processor: int
    pid: Pid


class ProcessorDone(NamedTuple):
    """Processor ``processor`` has drained: it sends nothing more."""

    processor: int


class BatchTimeout(NamedTuple):
    """The open group ``group_id`` of ``key`` reached ``batch_timeout`` (the batcher's timer)."""

    key: Hashable
    group_id: int


# -- to batch processor stages -----------------------------------------------------------------


class Batch(NamedTuple):
    """One batch to run ``handle_batch`` on."""

    info: BatchInfo
    messages: list[Message]


class BatcherDone(NamedTuple):
    """The batcher drained: no batch comes after this one."""


# -- from the pipeline supervisor --------------------------------------------------------------


class Drain(NamedTuple):
    """The pipeline stops: stop pulling (a call to producer stages), finish what is held (a
    cast to processors and batchers)."""


class WaitDrained(NamedTuple):
    """A call answered once the stage has ended everything it was sent in the drain."""
