"""The pipeline's options: one schema that validates them and documents them.

Each group of options is a frozen keyword-only ``Options`` record (``corral._options``); each
field carries its doc, its default and its rule. ``corral.pipeline.parsing`` reads the nested
mapping a user writes (or a config file holds) into these records, rejecting unknown keys
and wrong values with the dotted path of the option::

    invalid options for pipeline: unknown option 'batchers.ml_processing.batch_sizy';
    valid options: batch_size, batch_timeout, concurrency

Durations are float seconds; sizes are counts of messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from corral._options import Options, is_int, is_number, option

if TYPE_CHECKING:
    from corral.pipeline.message import Message
    from corral.pipeline.producer import Producer

__all__ = [
    "BackoffOptions",
    "BatcherOptions",
    "PipelineOptions",
    "ProcessorOptions",
    "ProducerOptions",
    "RateLimitingOptions",
    "RetryOptions",
]

_WHAT = "pipeline"

PRODUCER_MODULES: Mapping[str, str] = MappingProxyType(
    {
        "memory": "corral.pipeline.producers.memory",
        "redis_streams": "corral.pipeline.producers.redis_streams",
        "rabbitmq": "corral.pipeline.producers.rabbitmq",
        "nats": "corral.pipeline.producers.nats",
        "kafka": "corral.pipeline.producers.kafka",
    }
)
"""Short names of the producers corral ships; any other str is a module path."""


def is_producer_class(value: object) -> bool:
    """Whether ``value`` is a ``Producer`` subclass."""
    from corral.pipeline.producer import Producer

    return isinstance(value, type) and issubclass(value, Producer)


def _is_mapping_of(kind: type) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        return isinstance(value, Mapping) and all(
            type(k) is str and k and isinstance(v, kind) for k, v in value.items()
        )

    return check


@dataclass(frozen=True, kw_only=True)
class ProducerOptions(Options):
    """Where messages come from: ``producer``."""

    _what = _WHAT

    module: type[Producer] = option(
        None,
        doc="Which producer: 'memory', a module path whose PRODUCER is a Producer subclass, "
        "or the class itself. Imported when the pipeline is made.",
        rule="'memory', a module path or a Producer subclass",
        check=is_producer_class,
    )
    options: object = option(
        None,
        doc="The producer's own options (a mapping), validated by the producer class.",
        rule="the producer's options",
        check=lambda v: True,
    )
    concurrency: int = option(
        1,
        doc="How many producer stages run, each with its own Producer instance.",
        rule="an int >= 1",
        check=is_int(1),
    )


@dataclass(frozen=True, kw_only=True)
class ProcessorOptions(Options):
    """One entry of ``processors``: the stages that run ``handle_message``."""

    _what = _WHAT

    concurrency: int = option(
        1,
        doc="How many processor stages run handle_message side by side. More than 1 helps "
        "only when handle_message awaits (I/O); CPU work shares one thread.",
        rule="an int >= 1",
        check=is_int(1),
    )
    max_demand: int = option(
        50,
        doc="Messages a processor asks each producer for at most (messages in flight per "
        "processor and producer). Larger amortises per-chunk costs; smaller bounds memory.",
        rule="an int >= 1",
        check=is_int(1),
    )
    min_demand: int | None = option(
        None,
        doc="A processor asks for more once its outstanding demand falls to this; "
        "None: max_demand // 2.",
        rule="an int >= 0 and < max_demand, or None",
        check=lambda v: v is None or is_int(0)(v),
    )

    @property
    def effective_min_demand(self) -> int:
        """``min_demand``, or ``max_demand // 2`` when it is None."""
        return self.max_demand // 2 if self.min_demand is None else self.min_demand


@dataclass(frozen=True, kw_only=True)
class BatcherOptions(Options):
    """One entry of ``batchers``: how messages are grouped for ``handle_batch``."""

    _what = _WHAT

    batch_size: int = option(
        100,
        doc="A batch is cut when it holds this many messages.",
        rule="an int >= 1",
        check=is_int(1),
    )
    batch_timeout: float = option(
        1.0,
        doc="Seconds after its first message that a batch is cut, however small.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    concurrency: int = option(
        1,
        doc="How many batch processors run handle_batch for this batcher side by side.",
        rule="an int >= 1",
        check=is_int(1),
    )


@dataclass(frozen=True, kw_only=True)
class RateLimitingOptions(Options):
    """``rate_limiting``: at most ``allowed_messages`` leave the producers per ``interval``."""

    _what = _WHAT

    allowed_messages: int = option(
        None,
        doc="Messages all producers together may emit in one interval.",
        rule="an int >= 1",
        check=is_int(1),
    )
    interval: float = option(
        None,
        doc="Length of the rate-limiting window, in seconds.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )


@dataclass(frozen=True, kw_only=True)
class BackoffOptions(Options):
    """``retry.backoff``: the wait before attempt n+1 is ``min(initial * multiplier**(n-1),
    max)`` seconds."""

    _what = _WHAT

    initial: float = option(
        0.1, doc="Seconds before the second attempt.", rule="a number >= 0", check=is_number(0)
    )
    max: float = option(
        5.0,
        doc="Longest wait between attempts, in seconds.",
        rule="a number >= 0",
        check=is_number(0),
    )
    multiplier: float = option(
        2.0, doc="Growth of the wait per attempt.", rule="a number >= 1", check=is_number(1)
    )


@dataclass(frozen=True, kw_only=True)
class RetryOptions(Options):
    """``retry``: a failed message is tried again, in the same stage, before it fails."""

    _what = _WHAT

    max_attempts: int = option(
        3,
        doc="Attempts in all, the first included (1: no retries).",
        rule="an int >= 1",
        check=is_int(1),
    )
    backoff: BackoffOptions = option(
        BackoffOptions(),
        doc="The waits between attempts.",
        rule="backoff options",
        check=lambda v: isinstance(v, BackoffOptions),
    )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (>= 1)."""
        b = self.backoff
        return float(min(b.initial * b.multiplier ** (attempt - 1), b.max))


@dataclass(frozen=True, kw_only=True)
class PipelineOptions(Options):
    """Every option of a pipeline; see ``docs/pipeline.md`` for examples."""

    _what = _WHAT

    name: str = option(
        None,
        doc="Unique on the node; prefixes the registered names of the stages.",
        rule="a non-empty str",
        check=lambda v: type(v) is str and v != "",
    )
    producer: ProducerOptions = option(
        None,
        doc="The producer: module, options, concurrency.",
        rule="producer options",
        check=lambda v: isinstance(v, ProducerOptions),
    )
    processors: Mapping[str, ProcessorOptions] = option(
        None,
        doc="Processor name -> options. Exactly one entry (as Broadway); the name is what "
        "handle_message receives.",
        rule="a mapping with exactly one processor name",
        check=lambda v: v is None or (_is_mapping_of(ProcessorOptions)(v) and len(v) == 1),
    )
    batchers: Mapping[str, BatcherOptions] = option(
        None,
        doc="Batcher name -> options. Without batchers, messages are acknowledged right "
        "after handle_message.",
        rule="a mapping of batcher names to batcher options",
        check=lambda v: v is None or _is_mapping_of(BatcherOptions)(v),
    )
    partition_by: Callable[[Message], int] | None = option(
        None,
        doc="message -> int: messages with the same int go to the same processor and the "
        "same batch processor, in order. None: the producer's default (the Kafka producer: "
        "the Kafka partition; the others: no partitioning).",
        rule="a callable or None",
        check=lambda v: v is None or callable(v),
    )
    rate_limiting: RateLimitingOptions | None = option(
        None,
        doc="At most allowed_messages per interval seconds leave the producers.",
        rule="rate limiting options or None",
        check=lambda v: v is None or isinstance(v, RateLimitingOptions),
    )
    retry: RetryOptions | None = option(
        None,
        doc="Retry failed messages (max_attempts, backoff) before they count as failed.",
        rule="retry options or None",
        check=lambda v: v is None or isinstance(v, RetryOptions),
    )
    dead_letter: object = option(
        None,
        doc="Receives the messages that finally failed: a callable(messages), sync or "
        "async, or a target the producer understands (e.g. a MemoryQueue).",
        rule="a callable, a target the producer supports, or None",
        check=lambda v: True,
    )
    shutdown_timeout: float = option(
        30.0,
        doc="Seconds a stopping pipeline waits for in-flight messages to finish before its "
        "stages are stopped anyway.",
        rule="a number >= 0",
        check=is_number(0),
    )
    context: object = option(
        None,
        doc="Passed as `context` to every hook.",
        rule="anything",
        check=lambda v: True,
    )

    def __post_init__(self) -> None:
        # None stands for the defaults: a mutable mapping cannot be a dataclass default.
        given: dict[str, object] = {"processors": self.processors, "batchers": self.batchers}
        if given["processors"] is None:
            object.__setattr__(
                self, "processors", MappingProxyType({"default": ProcessorOptions()})
            )
        if given["batchers"] is None:
            object.__setattr__(self, "batchers", MappingProxyType({}))
        super().__post_init__()

    @property
    def processor(self) -> tuple[str, ProcessorOptions]:
        """The one processor entry: (name, options)."""
        ((name, opts),) = self.processors.items()
        return name, opts
