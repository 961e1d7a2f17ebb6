"""A pipeline in an OS process of its own, for the Kafka crash tests: reads a topic through
the Kafka producer and records every message it handles in the topic ``<topic>-handled``
(``"<partition>:<offset>"``, produced and acknowledged by the broker) before it is
acknowledged, so that topic holds every handled message (at least once each).

    python kafka_fault_worker.py URL TOPIC GROUP MODE

``MODE`` ``record``: the seed's shape, processors concurrency 4 (the default partition_by:
one per Kafka partition), a batcher of 100 (timeout 50 ms), concurrency 2.
``MODE`` ``hold4``: any processor takes any message (``ordered=False``), and the message at
offset 4 never finishes; once the other seven of offsets 0-7 are recorded and acknowledged
(only offset 4 in flight), it prints ``ready``.

Runs until SIGTERM (drains and exits 0) or SIGKILL (the test's fault).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from typing import Any

from corral import Node
from corral.pipeline import BatchInfo, Message, Pipeline
from corral.pipeline.producers.kafka import KafkaProducer, KafkaWriter

made: list[KafkaProducer] = []


class Captured(KafkaProducer):
    def __init__(self, options: object, context: Any) -> None:
        super().__init__(options, context)
        made.append(self)


class Recording(Pipeline):
    def __init__(self, writer: KafkaWriter, hold4: bool, **options: object) -> None:
        super().__init__(**options)
        self.writer = writer
        self.hold4 = hold4
        self.recorded = 0

    async def handle_message(self, processor: str, message: Message, context: object) -> Message:
        if self.hold4 and message.metadata["offset"] == 4:
            await asyncio.Event().wait()  # never returns: offset 4 stays unacknowledged
        return message.put_batcher("record")

    async def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        values = [b"%d:%d" % (m.metadata["partition"], m.metadata["offset"]) for m in messages]  # type: ignore[str-bytes-safe]
        await self.writer.send(values)
        self.recorded += len(values)
        return messages


async def main(node: Node, url: str, topic: str, group: str, mode: str) -> None:
    hold4 = mode == "hold4"
    async with KafkaWriter(url, f"{topic}-handled") as writer:
        pipeline = Recording(
            writer,
            hold4,
            name="fault",
            producer={
                "module": Captured,
                "options": {
                    "url": url,
                    "topics": [topic],
                    "group": group,
                    "ordered": not hold4,
                    "commit_interval": 0.02,
                    "fetch_timeout": 0.1,
                    "session_timeout": 2.0,
                    "heartbeat_interval": 0.2,
                },
            },
            # hold4: one message per processor at a time, so 5-7 pass the held 4.
            processors={"default": {"concurrency": 4, "max_demand": 1 if hold4 else 10}},
            batchers={
                "record": {
                    "batch_size": 3 if hold4 else 100,
                    "batch_timeout": 0.05,
                    "concurrency": 2,
                }
            },
        )
        await pipeline.start(node)
        print("started", flush=True)
        if hold4:
            # Polled: the acks land after handle_batch returns, in the batch processor's task.
            while not (pipeline.recorded == 7 and made[0].in_flight() == 1):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGTERM stops the node (and cancels this)


if __name__ == "__main__":
    url, topic, group, mode = sys.argv[1:5]
    Node(name=f"kafka-{mode}").run(lambda node: main(node, url, topic, group, mode))
