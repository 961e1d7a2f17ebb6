"""The pipeline the Ray pipeline tests run in each replica (tests/cluster is on the Ray
workers' PYTHONPATH): reads a Redis stream through a consumer group and records every
message it handles in Redis before acknowledging it.

``handle_batch`` adds each message's ``n`` field to the set ``<stream>:handled`` and the
batch's size to the counter ``<stream>:handles`` (one MULTI/EXEC), then returns: the set
holds every acknowledged message, and the counter minus the set's size is the redeliveries.

With ``stall_flag``, the first replica to claim that file (O_EXCL) writes its OS pid into it
and then never finishes that batch: its messages stay pending under its consumer until the
test kills it. Each incarnation reads under a consumer name of its own, so a dead one's
pending messages come back only through the live replicas' XAUTOCLAIM (``claim_idle``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Sequence

from redis.asyncio import Redis

from corral.pipeline import BatchInfo, Message, Pipeline


class Recording(Pipeline):
    def __init__(self, url: str, stream: str, stall_flag: str | None, **options: object) -> None:
        super().__init__(**options)
        self.url = url
        self.handled_key = f"{stream}:handled"
        self.handles_key = f"{stream}:handles"
        self.stall_flag = stall_flag
        self.client: Redis | None = None

    def handle_message(self, processor: str, message: Message, context: object) -> Message:
        return message.put_batcher("record")

    async def handle_batch(
        self, batcher: str, messages: list[Message], batch_info: BatchInfo, context: object
    ) -> Sequence[Message]:
        if self.stall_flag is not None and _claim(self.stall_flag):
            await asyncio.Event().wait()  # stuck for good: the test kills this process
        if self.client is None:
            self.client = Redis.from_url(self.url, protocol=2)
        numbers = [m.data[b"n"] for m in messages]  # type: ignore[index]
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.sadd(self.handled_key, *numbers)
            pipe.incrby(self.handles_key, len(numbers))
            await pipe.execute()
        return messages


def _claim(flag: str) -> bool:
    try:
        fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as file:
        file.write(str(os.getpid()))
    return True


def recording(
    *, replica: int, url: str, stream: str, group: str, stall_flag: str | None = None
) -> Recording:
    """The factory ``pipeline_nodes`` calls in each replica."""
    return Recording(
        url,
        stream,
        stall_flag,
        name="recording",
        producer={
            "module": "redis_streams",
            "options": {
                "url": url,
                "stream": stream,
                "group": group,
                "consumer": f"replica-{replica}-{uuid.uuid4().hex[:8]}",
                "claim_idle": 0.5,
                "block": 0.1,
                "count": 50,
            },
        },
        processors={"default": {"concurrency": 2}},
        batchers={"record": {"batch_size": 50, "batch_timeout": 0.02, "concurrency": 2}},
    )


def broken(*, replica: int) -> Recording:
    """A factory that raises."""
    raise ValueError(f"replica {replica}: no pipeline today")
