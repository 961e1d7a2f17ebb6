"""Shared helpers for the pipeline tests: run a pipeline on a node, record hook calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from corral import Node
from corral.pipeline import BatchInfo, Message, Pipeline


@asynccontextmanager
async def running(pipeline: Pipeline) -> AsyncIterator[Node]:
    """A node running ``pipeline``; the pipeline is stopped (drained) on the way out."""
    async with Node() as node:
        await pipeline.start(node)
        try:
            yield node
        finally:
            await pipeline.stop()


def now() -> float:
    return asyncio.get_running_loop().time()


class Recorder(Pipeline):
    """Records (time, data) of every handle_message and (time, info, data) of every batch;
    routes every message to its only batcher, if it has one."""

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        self.handled: list[tuple[float, object]] = []
        self.batches: list[tuple[float, BatchInfo, list[object]]] = []
        self.failed_seen: list[list[object]] = []
        batchers = list(self.options.batchers)
        self.route = batchers[0] if len(batchers) == 1 else None

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        self.handled.append((now(), message.data))
        return message if self.route is None else message.put_batcher(self.route)

    def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        self.batches.append((now(), batch_info, [m.data for m in messages]))
        return messages

    def handle_failed(self, messages: list[Message], context: object) -> Sequence[Message]:
        self.failed_seen.append([m.data for m in messages])
        return messages


def memory(**producer_options: object) -> dict[str, object]:
    """A producer option for the memory producer."""
    return {"module": "memory", "options": producer_options}
