"""What every stage of one running pipeline shares: its options, the user's hooks, its stage
names and its rate limiter. Made afresh each time the pipeline's supervisor starts.

Stages find each other by registered name on the node (``node.whereis``):

- ``<name>.producer.<i>``
- ``<name>.processor.<processor>.<i>``
- ``<name>.batcher.<batcher>``
- ``<name>.batch_processor.<batcher>.<i>``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.pipeline.policy import RateLimiter

if TYPE_CHECKING:
    from corral.pipeline.options import PipelineOptions
    from corral.pipeline.stages.hooks import StageHooks

__all__ = ["Topology"]


class Topology:
    """Names and shared state of one run of a pipeline; read-only but for the limiter."""

    __slots__ = (
        "_limiter",
        "batchers",
        "hooks",
        "name",
        "options",
        "partitioned",
        "processor_key",
        "processor_options",
        "processors",
        "producers",
    )

    def __init__(self, options: PipelineOptions, hooks: StageHooks) -> None:
        self.hooks = hooks
        self.options = options
        self.name = options.name
        self.processor_key, self.processor_options = options.processor
        self.producers = options.producer.concurrency
        self.processors = self.processor_options.concurrency
        self.batchers = tuple(options.batchers)
        self.partitioned = options.partition_by is not None
        self._limiter: RateLimiter | None = None

    def producer(self, index: int) -> str:
        return f"{self.name}.producer.{index}"

    def processor(self, index: int) -> str:
        return f"{self.name}.processor.{self.processor_key}.{index}"

    def batcher(self, batcher: str) -> str:
        return f"{self.name}.batcher.{batcher}"

    def batch_processor(self, batcher: str, index: int) -> str:
        return f"{self.name}.batch_processor.{batcher}.{index}"

    def rate_limiter(self, now: float) -> RateLimiter | None:
        """The limiter all producer stages share (None without ``rate_limiting``); its
        first window starts at the first call."""
        rate = self.options.rate_limiting
        if rate is None:
            return None
        if self._limiter is None:
            self._limiter = RateLimiter(rate.allowed_messages, rate.interval, now)
        return self._limiter
