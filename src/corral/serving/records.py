"""Frozen records a serving hands out: ``Result`` and ``statistics()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["BucketStatistics", "PartitionStatistics", "Result", "ServingStatistics"]


class Result(NamedTuple):
    """One request's answer: ``output`` (its rows of the batch's output: one sample's
    output for ``run``, a leading batch axis for ``run_batch``) and the model ``version``
    that computed it. A named tuple: frozen, and cheap to make on the hot path."""

    output: np.ndarray
    version: str


@dataclass(frozen=True, slots=True)
class PartitionStatistics:
    """One partition: ``state`` is ``"idle"``, ``"busy"``, ``"down"`` (restarting) or
    ``"draining"`` (an old version finishing its batch during a swap). ``os_pid`` is the
    worker process of a ``"port"`` partition (None for threads)."""

    index: int
    version: str
    kind: str
    state: str
    batches: int
    crashes: int
    os_pid: int | None = None


@dataclass(frozen=True, slots=True)
class BucketStatistics:
    """The batches of one sequence bucket (``bucket`` is its length; None: a serving
    without sequence buckets, all batches), in total and over the last ``window`` seconds.

    ``padding`` is the fraction of the computed positions that were padding: for sequence
    buckets, padded tokens (sequence and batch padding) over ``batch x bucket length``;
    otherwise padded rows (``pad_to``) over rows. ``promoted`` counts requests promoted into
    this bucket from a smaller one. ``window_throughput`` is samples answered per second
    over the window; ``window_*`` cover at most the last 4096 batches of the serving.
    """

    bucket: int | None
    batches: int
    requests: int
    samples: int
    mean_batch_size: float
    padding: float
    promoted: int
    window: float
    window_batches: int
    window_samples: int
    window_throughput: float
    window_mean_batch_size: float
    window_padding: float


@dataclass(frozen=True, slots=True)
class ServingStatistics:
    """A snapshot of a serving. Times are seconds on the node's clock.

    Every request is counted once, where it ended: ``requests == completed + failed +
    expired + cancelled + overloaded + invalid + in_flight`` (``overloaded`` and ``invalid``
    were refused at the door; ``in_flight`` are queued, waiting for a retry or running).
    ``retried_batches`` counts batches run again after a partition crash, ``split_batches``
    batches split to find the request a model error came from.
    ``batch_sizes`` maps real (unpadded) batch size to how many batches had it;
    ``wait_*`` is the time from a request's arrival until its batch started; ``compute_*``
    the time a batch spent on its partition. ``p50_latency`` and ``p99_latency`` are the
    median and 99th percentile (linear interpolation) of the latency — from a request's
    arrival to its answer — of the last 4096 answered (completed) requests; 0.0 before any.
    ``buckets`` has one ``BucketStatistics`` per sequence bucket that ran a batch (one for
    all batches without sequence buckets), in bucket order.
    """

    name: str
    version: str
    queue_length: int
    queued_samples: int
    requests: int
    completed: int
    failed: int
    expired: int
    overloaded: int
    cancelled: int
    invalid: int
    in_flight: int
    batches: int
    retried_batches: int
    split_batches: int
    batch_sizes: tuple[tuple[int, int], ...]
    mean_batch_size: float
    mean_wait: float
    max_wait: float
    mean_compute: float
    max_compute: float
    p50_latency: float
    p99_latency: float
    swaps: int
    partitions: tuple[PartitionStatistics, ...]
    buckets: tuple[BucketStatistics, ...] = ()
