"""A pipeline in an OS process of its own, for the Redis Streams fault test: reads a stream
through a consumer group and records every message it handles in Redis, then acks it.

    python redis_fault_worker.py URL STREAM GROUP CONSUMER CLAIM_IDLE

The seed's shape: processors concurrency 4, batcher of 100 (timeout 50 ms), concurrency 2.
``handle_batch`` adds each message's ``n`` field to the set ``<stream>:handled`` and the
batch's size to the counter ``<stream>:handles`` (one MULTI/EXEC), and only then returns:
the at-least-once bookkeeping (a message is recorded before it is acknowledged, so the set
holds every acknowledged message; the counter minus the set's size is the redeliveries).

Runs until SIGTERM (drains and exits 0) or SIGKILL (the test's fault).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from redis.asyncio import Redis

from corral import Node
from corral.pipeline import BatchInfo, Message, Pipeline


class Recording(Pipeline):
    def __init__(self, client: Redis, stream: str, **options: object) -> None:
        super().__init__(**options)
        self.client = client
        self.handled_key = f"{stream}:handled"
        self.handles_key = f"{stream}:handles"

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        return message.put_batcher("record")

    async def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        numbers = [m.data[b"n"] for m in messages]  # type: ignore[index]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(self.handled_key, *numbers)
            pipe.incrby(self.handles_key, len(numbers))
            await pipe.execute()
        return messages


async def main(node: Node, url: str, stream: str, group: str, consumer: str, idle: float) -> None:
    client = Redis.from_url(url, protocol=2)
    try:
        pipeline = Recording(
            client,
            stream,
            name="fault",
            producer={
                "module": "redis_streams",
                "options": {
                    "url": url,
                    "stream": stream,
                    "group": group,
                    "consumer": consumer,
                    "claim_idle": idle,
                    "block": 0.1,
                },
            },
            processors={"default": {"concurrency": 4}},
            batchers={"record": {"batch_size": 100, "batch_timeout": 0.05, "concurrency": 2}},
        )
        await pipeline.start(node)
        print("started", flush=True)
        await asyncio.Event().wait()  # until SIGTERM stops the node (and cancels this)
    finally:
        await client.aclose()


if __name__ == "__main__":
    url, stream, group, consumer, idle = sys.argv[1:6]
    Node(name=consumer).run(lambda node: main(node, url, stream, group, consumer, float(idle)))
