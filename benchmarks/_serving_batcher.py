"""The hand-written asyncio batcher that corral's serving is measured against (issue 12).

What a careful engineer writes in an afternoon instead of adopting a serving library: one
``asyncio.Queue`` of ``(sample, future)``; one task takes the first request, then more until
``batch_size`` or until ``batch_timeout`` has passed since the first, stacks them, calls the
model inline on the event loop (no thread hand-off: the loop stalls for the compute, which
for a model well under a millisecond costs less than a hand-off) and resolves the futures.
No deadlines, bounds, statistics, supervision or isolation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

__all__ = ["AsyncioBatcher"]

Item = tuple[np.ndarray, "asyncio.Future[np.ndarray]"]


class AsyncioBatcher:
    """``async with AsyncioBatcher(model) as b: await b.run(x)``; see the module doc."""

    def __init__(
        self,
        model: Callable[[np.ndarray], np.ndarray],
        *,
        batch_size: int = 64,
        batch_timeout: float = 0.002,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.batches = 0
        self.samples = 0

    async def __aenter__(self) -> AsyncioBatcher:
        self.task = asyncio.create_task(self.serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        while not self.queue.empty():
            self.queue.get_nowait()[1].cancel()

    async def run(self, x: np.ndarray) -> np.ndarray:
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((x, fut))
        return await fut

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        queue, size, timeout = self.queue, self.batch_size, self.batch_timeout
        while True:
            items = [await queue.get()]
            cut_at = loop.time() + timeout
            while len(items) < size:
                if not queue.empty():
                    items.append(queue.get_nowait())
                    continue
                left = cut_at - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
            self.batches += 1
            self.samples += len(items)
            try:
                out = self.model(np.stack([x for x, _ in items]))
            except Exception as exc:
                for _, fut in items:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), row in zip(items, out, strict=True):
                if not fut.done():
                    fut.set_result(row)
