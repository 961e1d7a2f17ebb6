"""A serving's running counters and the ``ServingStatistics`` snapshot made from them."""

from __future__ import annotations

from corral.serving.policy import BatchPolicy
from corral.serving.records import PartitionStatistics, ServingStatistics

__all__ = ["Counters"]


class Counters:
    """What a server counts; read by ``snapshot``. Loop thread only."""

    __slots__ = (
        "batches",
        "cancelled",
        "completed",
        "compute_max",
        "compute_total",
        "expired",
        "failed",
        "invalid",
        "overloaded",
        "requests",
        "retried",
        "samples",
        "sizes",
        "split",
        "swaps",
        "wait_max",
        "wait_total",
        "waited",
    )

    def __init__(self) -> None:
        self.requests = self.completed = self.failed = self.expired = 0
        self.overloaded = self.cancelled = self.batches = self.retried = 0
        self.samples = self.waited = self.swaps = self.invalid = self.split = 0
        self.wait_total = self.wait_max = self.compute_total = self.compute_max = 0.0
        self.sizes: dict[int, int] = {}

    def snapshot(
        self,
        name: str,
        version: str,
        policy: BatchPolicy,
        partitions: tuple[PartitionStatistics, ...],
        in_flight: int,
    ) -> ServingStatistics:
        """A frozen record of the counters now."""
        return ServingStatistics(
            name=name,
            version=version,
            queue_length=len(policy),
            queued_samples=policy.samples,
            requests=self.requests,
            completed=self.completed,
            failed=self.failed,
            expired=self.expired,
            overloaded=self.overloaded,
            cancelled=self.cancelled,
            invalid=self.invalid,
            in_flight=in_flight,
            batches=self.batches,
            retried_batches=self.retried,
            split_batches=self.split,
            batch_sizes=tuple(sorted(self.sizes.items())),
            mean_batch_size=self.samples / self.batches if self.batches else 0.0,
            mean_wait=self.wait_total / self.waited if self.waited else 0.0,
            max_wait=self.wait_max,
            mean_compute=self.compute_total / self.batches if self.batches else 0.0,
            max_compute=self.compute_max,
            swaps=self.swaps,
            partitions=partitions,
        )
