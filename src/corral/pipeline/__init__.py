"""Pipelines with Broadway's semantics: demand-driven producers, processors running
``handle_message``, batchers cutting batches for ``handle_batch``, and acknowledgements that
tell the source how every message ended.

See ``docs/pipeline.md`` for the model, the supervision tree, the options and the telemetry
events. Producers live in ``corral.pipeline.producers`` (imported by name when a pipeline
uses one); test helpers in ``corral.pipeline.testing``.
"""

from corral.pipeline.message import (
    DEFAULT_BATCHER,
    OK,
    Acknowledger,
    BatchInfo,
    Failure,
    Message,
    NoAcknowledger,
)
from corral.pipeline.options import (
    BackoffOptions,
    BatcherOptions,
    PipelineOptions,
    ProcessorOptions,
    ProducerOptions,
    RateLimitingOptions,
    RetryOptions,
)
from corral.pipeline.pipeline import Pipeline
from corral.pipeline.producer import DeadLetterSink, Producer, ProducerContext
from corral.pipeline.statistics import PipelineStatistics, StageStatistics

__all__ = [
    "DEFAULT_BATCHER",
    "OK",
    "Acknowledger",
    "BackoffOptions",
    "BatchInfo",
    "BatcherOptions",
    "DeadLetterSink",
    "Failure",
    "Message",
    "NoAcknowledger",
    "Pipeline",
    "PipelineOptions",
    "PipelineStatistics",
    "ProcessorOptions",
    "Producer",
    "ProducerContext",
    "ProducerOptions",
    "RateLimitingOptions",
    "RetryOptions",
    "StageStatistics",
]
