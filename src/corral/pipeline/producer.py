"""The producer interface: how a source of messages plugs into a pipeline.

A ``Producer`` subclass lives in its own module, imported only when a pipeline names it
(``producer={"module": "memory"}`` loads ``corral.pipeline.producers.memory``; any other
str is a module path; the module's ``PRODUCER`` is the class). Each producer stage (there
are ``producer.concurrency`` of them) makes one instance and runs every hook in its own
task, one at a time.

The contract, after GenStage:

- ``handle_demand(n)``: processors asked for ``n`` more messages. Return up to ``n``
  messages now, and emit the rest later with ``context.emit`` when they arrive (a broker
  fetch, a push). Demand adds up: a producer owes the sum of what it was asked minus what
  it returned or emitted, and never emits more (the stage crashes if it does, naming it).
- Each message carries its ``acknowledger`` (and ``ack_data``): the stage that ends a
  message calls ``acknowledger.ack(successful, failed)``, grouped per acknowledger.
- ``prepare_for_draining()``: the pipeline is stopping. Stop pulling from the source;
  owed demand is forgiven and nothing more may be emitted (what is emitted after is dropped
  unacknowledged, for the broker to deliver again).

A hook that raises crashes the producer stage; its supervisor restarts it (a fresh
instance) and the processors subscribe to the new one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from corral._options import Options
from corral.pipeline.message import Message
from corral.pipeline.stages.protocol import Emit
from corral.runtime import Clock, ExitReason

if TYPE_CHECKING:
    from corral.runtime import Pid

__all__ = ["DeadLetterSink", "Producer", "ProducerContext"]

DeadLetterSink = Callable[[list[Message]], Awaitable[None] | None]
"""Receives the messages that finally failed (after ``handle_failed``), sync or async."""


class ProducerContext:
    """What a producer stage tells its producer: who it is and how to emit late messages."""

    __slots__ = ("_pid", "clock", "emits", "index", "pipeline")

    def __init__(self, pipeline: str, index: int, pid: Pid, clock: Clock) -> None:
        self.pipeline = pipeline
        """The pipeline's name."""
        self.index = index
        """This stage's index among ``producer.concurrency`` stages, from 0."""
        self.clock = clock
        """The node's clock (virtual under ``corral.testing``)."""
        self._pid = pid
        self.emits = 0
        """How many times ``emit`` sent messages to the stage (the stage orders by it)."""

    @property
    def alive(self) -> bool:
        """Whether the producer stage still runs (``emit`` raises once it does not)."""
        return self._pid.alive

    def emit(self, messages: Sequence[Message]) -> None:
        """Hand ``messages`` to the producer stage against the demand the producer owes.

        Call from any task on the node's loop (a fetch loop, a broker callback); does not
        block. The stage dispatches them in its own task, in emit order, and before anything
        a later ``handle_demand`` returns. Raises ``NoProcess`` if the stage has ended.
        """
        if messages:
            self._pid.cast(Emit(list(messages)))
            self.emits += 1


class Producer:
    """Base class for producers; see the module docstring for the contract.

    ``options_type`` is the ``Options`` record that validates ``producer.options``
    (``None``: the producer takes no options). Hooks may be ``def`` or ``async def``; they
    run in the producer stage's task and the stage waits for each.
    """

    options_type: ClassVar[type[Options] | None] = None

    def __init__(self, options: object, context: ProducerContext) -> None:
        self.options = options
        self.context = context

    # -- configuration (class-level, when the pipeline is made) ---------------------------

    @classmethod
    def parse_options(cls, data: Mapping[str, object], path: str) -> object:
        """Validate ``producer.options`` (``path`` is ``"producer.options."``) into the
        value every instance receives. Runs once, when the pipeline is made."""
        if cls.options_type is None:
            if data:
                raise ValueError(
                    f"invalid options for pipeline: unknown option '{path}{next(iter(data))}'; "
                    f"producer {cls.__name__} takes no options"
                )
            return None
        return cls.options_type.parse(data, path=path, what="pipeline")

    @classmethod
    def dead_letter_sink(cls, target: object, options: object) -> DeadLetterSink | None:
        """A sink for a ``dead_letter`` target that is not a callable (a queue or stream
        name, say), or None when this producer does not know such targets."""
        return None

    @classmethod
    def default_partition_by(cls, options: object) -> Callable[[Message], int] | None:
        """The ``partition_by`` a pipeline reading from this producer gets when it sets
        none (the Kafka producer: the Kafka partition, so per-key order holds); None: no
        partitioning."""
        return None

    # -- hooks (in the producer stage's task) ------------------------------------------------

    def init(self) -> Awaitable[None] | None:
        """Connect to the source. If it raises, the stage fails to start."""
        return None

    def handle_demand(self, demand: int) -> Sequence[Message] | Awaitable[Sequence[Message]]:
        """Processors want ``demand`` more messages: return up to that many now and emit
        the rest later with ``self.context.emit``."""
        raise NotImplementedError(f"{type(self).__name__}.handle_demand")

    def prepare_for_draining(self) -> Awaitable[None] | None:
        """The pipeline is stopping: stop pulling from the source."""
        return None

    def terminate(self, reason: ExitReason) -> Awaitable[None] | None:
        """The stage is ending with ``reason``: release the source. Errors are logged."""
        return None
