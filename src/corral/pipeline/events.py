"""The pipeline's telemetry events (public API; see ``docs/pipeline.md``).

Spans, begun by the stages with ``corral.telemetry.start_span`` (the explicit form of
``corral.telemetry.span``: a hook's exception is handled by the stage, and ``stop`` carries
what the hook returned): ``start`` carries ``monotonic_time``;
``stop`` and ``exception`` carry ``duration`` and ``monotonic_time`` (seconds on the node's
clock, virtual under ``corral.testing``); ``exception`` adds ``kind`` and ``reason`` to the
metadata.

``PROCESSOR_*``: one ``handle_message`` call (one attempt of one message). Metadata:
``pipeline``, ``processor`` (name), ``index`` (processor stage), ``message`` (the message
given; on ``stop`` the one returned).

``PROCESSED``: one chunk of messages a processor handled, each through ``handle_message``
and its retries (one event per chunk, not per message; emitted only while a handler listens).
Measurements ``successful`` and ``failed`` (counts of the chunk); metadata ``pipeline``,
``processor`` (name), ``index`` (processor stage).

``BATCH_*``: one ``handle_batch`` call (one attempt of one batch). Measurements add
``size``; ``stop`` adds ``successful`` and ``failed`` counts. Metadata: ``pipeline``,
``batcher``, ``index`` (batch processor), ``batch_info``.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BATCH",
    "BATCH_EXCEPTION",
    "BATCH_START",
    "BATCH_STOP",
    "PROCESSED",
    "PROCESSOR",
    "PROCESSOR_EXCEPTION",
    "PROCESSOR_START",
    "PROCESSOR_STOP",
]

PROCESSOR: Final = ("corral", "pipeline", "processor")
PROCESSOR_START: Final = (*PROCESSOR, "start")
PROCESSOR_STOP: Final = (*PROCESSOR, "stop")
PROCESSOR_EXCEPTION: Final = (*PROCESSOR, "exception")

PROCESSED: Final = ("corral", "pipeline", "processed")

BATCH: Final = ("corral", "pipeline", "batch")
BATCH_START: Final = (*BATCH, "start")
BATCH_STOP: Final = (*BATCH, "stop")
BATCH_EXCEPTION: Final = (*BATCH, "exception")
