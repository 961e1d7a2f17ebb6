"""A serving's running counters and the ``ServingStatistics`` snapshot made from them."""

from __future__ import annotations

import numpy as np

from corral.serving.policy import BatchPolicy
from corral.serving.records import PartitionStatistics, ServingStatistics

__all__ = ["LATENCY_WINDOW", "Counters"]

LATENCY_WINDOW = 4096
"""How many of the last answered requests' latencies ``p50_latency``/``p99_latency`` cover."""


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
        "latencies",
        "latency_count",
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
        # A ring of the last LATENCY_WINDOW latencies (seconds), written a batch at a time;
        # latency_count is how many were ever written (the next slot is count % window).
        self.latencies = np.zeros(LATENCY_WINDOW, dtype=np.float64)
        self.latency_count = 0

    def record_latencies(self, values: np.ndarray) -> None:
        """Adds a batch's answered requests' latencies (seconds) to the ring: slices, no loop."""
        ring = self.latencies
        size = len(ring)
        k = len(values)
        start = self.latency_count % size
        self.latency_count += k
        if k >= size:  # only the last `size` count; where they start does not matter
            ring[:] = values[k - size :]
        elif start + k <= size:
            ring[start : start + k] = values
        else:
            first = size - start
            ring[start:] = values[:first]
            ring[: k - first] = values[first:]

    def record_latency(self, value: float) -> None:
        """Adds one answered request's latency (seconds) to the ring."""
        self.latencies[self.latency_count % len(self.latencies)] = value
        self.latency_count += 1

    def latency_percentiles(self) -> tuple[float, float]:
        """The median and 99th percentile of the ring's latencies (linear interpolation,
        numpy's default); ``(0.0, 0.0)`` before any request was answered."""
        filled = min(self.latency_count, len(self.latencies))
        if not filled:
            return 0.0, 0.0
        p50, p99 = np.percentile(self.latencies[:filled], (50.0, 99.0))
        return float(p50), float(p99)

    def snapshot(
        self,
        name: str,
        version: str,
        policy: BatchPolicy,
        partitions: tuple[PartitionStatistics, ...],
        in_flight: int,
    ) -> ServingStatistics:
        """A frozen record of the counters now."""
        p50, p99 = self.latency_percentiles()
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
            p50_latency=p50,
            p99_latency=p99,
            swaps=self.swaps,
            partitions=partitions,
        )
