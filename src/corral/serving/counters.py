"""A serving's running counters and the ``ServingStatistics`` snapshot made from them."""

from __future__ import annotations

from collections import deque

import numpy as np

from corral.serving.policy import BatchPolicy
from corral.serving.records import BucketStatistics, PartitionStatistics, ServingStatistics

__all__ = ["BATCH_WINDOW", "LATENCY_WINDOW", "Counters"]

LATENCY_WINDOW = 4096
"""How many of the last answered requests' latencies ``p50_latency``/``p99_latency`` cover."""

BATCH_WINDOW = 4096
"""How many of the last batches the windowed bucket statistics can cover."""

_Recent = tuple[float, int | None, int, int, int]
"""A recent batch: (ended at, bucket, samples, real positions, padded positions)."""


class _BucketTotals:
    __slots__ = ("batches", "elements", "padded", "promoted", "requests", "samples")

    def __init__(self) -> None:
        self.batches = self.requests = self.samples = 0
        self.elements = self.padded = self.promoted = 0


class Counters:
    """What a server counts; read by ``snapshot``. Loop thread only."""

    __slots__ = (
        "batches",
        "buckets",
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
        "recent",
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
        self.buckets: dict[int | None, _BucketTotals] = {}
        self.recent: deque[_Recent] = deque(maxlen=BATCH_WINDOW)

    def record_bucket(
        self,
        now: float,
        bucket: int | None,
        requests: int,
        samples: int,
        elements: int,
        padded: int,
        promoted: int,
    ) -> None:
        """Adds one answered batch of ``bucket`` (``elements`` real positions of ``padded``
        computed) to the totals and the window."""
        totals = self.buckets.get(bucket)
        if totals is None:
            totals = self.buckets[bucket] = _BucketTotals()
        totals.batches += 1
        totals.requests += requests
        totals.samples += samples
        totals.elements += elements
        totals.padded += padded
        totals.promoted += promoted
        self.recent.append((now, bucket, samples, elements, padded))

    def bucket_statistics(self, now: float, window: float) -> tuple[BucketStatistics, ...]:
        """Per bucket: totals, and the batches that ended in the last ``window`` seconds."""
        since = now - window
        counts: dict[int | None, list[int]] = {}
        for ended, bucket, samples, elements, padded in reversed(self.recent):
            if ended < since:
                break
            row = counts.setdefault(bucket, [0, 0, 0, 0])
            row[0] += 1
            row[1] += samples
            row[2] += elements
            row[3] += padded
        out = []
        for bucket in sorted(self.buckets, key=lambda b: -1 if b is None else b):
            t = self.buckets[bucket]
            w = counts.get(bucket, [0, 0, 0, 0])
            out.append(
                BucketStatistics(
                    bucket=bucket,
                    batches=t.batches,
                    requests=t.requests,
                    samples=t.samples,
                    mean_batch_size=t.samples / t.batches if t.batches else 0.0,
                    padding=1.0 - t.elements / t.padded if t.padded else 0.0,
                    promoted=t.promoted,
                    window=window,
                    window_batches=w[0],
                    window_samples=w[1],
                    window_throughput=w[1] / window if window > 0 else 0.0,
                    window_mean_batch_size=w[1] / w[0] if w[0] else 0.0,
                    window_padding=1.0 - w[2] / w[3] if w[3] else 0.0,
                )
            )
        return tuple(out)

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
        now: float = 0.0,
        window: float = 10.0,
    ) -> ServingStatistics:
        """A frozen record of the counters now (``now`` on the node's clock; the bucket
        window is the last ``window`` seconds)."""
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
            buckets=self.bucket_statistics(now, window),
        )
