"""The batching policy: when to cut a batch, from which key, what to drop, how far to pad.

Pure: no event loop, no clock of its own. The serving process calls it with ``now`` (its
node's clock) and acts on the answer; tests call it with any numbers they like.

- Requests wait in one FIFO queue per batch key (``None`` when there are no keys).
- A key is *ready* when its queued samples reach ``batch_size`` ("full") or its oldest
  request has waited ``batch_timeout`` seconds ("timeout").
- ``cut(now)`` first drops expired requests (deadline <= now), then takes the ready key whose
  oldest request is oldest and returns a batch of its requests in arrival order: as many as
  fit in ``batch_size`` samples. Requests are never split across batches, so a batch may stop
  short of ``batch_size`` when the next request does not fit.
- ``pad_to`` sizes: a batch of ``n`` samples is padded to the smallest size >= ``n``.
- ``wakeup()`` says when the caller should call ``cut`` again if nothing else happens: the
  earliest of every key's oldest arrival + ``batch_timeout`` and every deadline.

``PromotingPolicy`` is the same policy plus *bucket promotion*, for sequence buckets (keys
that are ``Bucket``s): a batch cut from bucket ``L`` with room left is filled with the
oldest requests of smaller buckets of its group (nearest bucket first, at most ``promote``
buckets down) that are *ready but under-full* — their oldest request has waited
``batch_timeout`` and they hold fewer than ``batch_size`` samples — which then run padded to
``L``. Those requests would run now anyway, in a small batch of their own on the next free
partition: promoted, they ride along in one fuller batch instead.

The trade-off: a promoted request is computed at the larger length (a 16-token sentence run
as 32 costs about twice its own compute, and the batch's other requests wait for that too);
in exchange the partition runs one batch instead of two small ones, and the promoted
requests do not wait for a second free partition. A bucket that is not ready yet is never
promoted from (it may still fill), nor a full one (it cuts on its own). It pays where the
model's per-batch overhead is large against its per-token cost and partitions are scarce;
where compute grows with the tokens (a transformer on a CPU) and the buckets are far apart,
the padding can cost more than the batch saves: measure (``benchmarks/transformer.py``
runs with and without it). Keep ``promote`` at 1 (the next bucket up).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = ["Batch", "BatchPolicy", "Bucket", "PromotingPolicy", "Request"]


class Bucket(NamedTuple):
    """The queue key of a sequence-bucketed request: bucket number ``rank`` (0 is the
    shortest) of length ``length``, in ``group`` (the rest of the key: what requests must
    share to be stacked, and the ``batch_keys`` key). Promotion moves requests only between
    buckets of one group."""

    rank: int
    length: int
    group: Hashable


@dataclass(eq=False, slots=True)
class Request:
    """One queued request: ``size`` samples that arrived at ``arrived`` (seconds on the
    caller's clock), expiring at ``deadline`` (absolute; None: never), queued under ``key``.
    ``payload`` is whatever the caller needs to answer it (the policy never reads it)."""

    size: int
    arrived: float
    deadline: float | None = None
    key: Hashable = None
    payload: object = None
    queued: bool = field(default=False, repr=False)


@dataclass(frozen=True, slots=True)
class Batch:
    """A cut batch: ``requests`` in arrival order, ``size`` samples in all, to be padded to
    ``padded_size``; ``reason`` is ``"full"`` or ``"timeout"``; ``promoted`` counts the
    requests taken into it from smaller buckets (``PromotingPolicy``)."""

    key: Hashable
    requests: tuple[Request, ...]
    size: int
    padded_size: int
    reason: str
    promoted: int = 0

    @property
    def pad(self) -> int:
        """Samples of padding to add after the real ones."""
        return self.padded_size - self.size


class _KeyQueue:
    __slots__ = ("requests", "samples")

    def __init__(self) -> None:
        self.requests: deque[Request] = deque()
        self.samples = 0


class BatchPolicy:
    """Queues and batch cutting for one serving. Not thread-safe; holds no timers.

    ``batch_size``: most samples in a batch; ``batch_timeout``: seconds the oldest request of
    a key may wait for its batch to fill; ``max_queue``: most requests queued in all keys;
    ``pad_to``: batch sizes to pad to (empty: no padding; its largest must be >=
    ``batch_size``).
    """

    def __init__(
        self,
        *,
        batch_size: int,
        batch_timeout: float,
        max_queue: int,
        pad_to: Sequence[int] = (),
    ) -> None:
        if pad_to and max(pad_to) < batch_size:
            raise ValueError(
                f"BatchPolicy: the largest pad_to size must be >= batch_size={batch_size}; "
                f"got {tuple(pad_to)}"
            )
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self.max_queue = max_queue
        self.pad_to = tuple(sorted(set(pad_to)))
        self._queues: dict[Hashable, _KeyQueue] = {}
        self._length = 0
        self._deadlines: list[tuple[float, int, Request]] = []
        self._seq = 0

    def __len__(self) -> int:
        """Requests queued, in all keys."""
        return self._length

    @property
    def samples(self) -> int:
        """Samples queued, in all keys."""
        return sum(q.samples for q in self._queues.values())

    @property
    def full(self) -> bool:
        """Whether ``push`` would refuse a request now."""
        return self._length >= self.max_queue

    def push(self, request: Request) -> bool:
        """Queue ``request``; False (and nothing queued) if ``max_queue`` requests wait.

        Raises ``ValueError`` if the request is larger than ``batch_size`` or empty.
        """
        return self.offer(request) > 0

    def offer(self, request: Request) -> int:
        """As ``push``, but say how many samples its key now holds (>= ``batch_size``: the
        key is full, as ``ready(key)``); 0 (and nothing queued) if ``max_queue`` requests
        wait. One call instead of ``push`` and ``ready`` on the hot path."""
        if not 1 <= request.size <= self.batch_size:
            raise ValueError(
                f"request of {request.size} samples: a request must hold 1 to "
                f"batch_size={self.batch_size} samples"
            )
        if self._length >= self.max_queue:
            return 0
        queue = self._queues.get(request.key)
        if queue is None:
            queue = self._queues[request.key] = _KeyQueue()
        queue.requests.append(request)
        samples = queue.samples = queue.samples + request.size
        request.queued = True
        self._length += 1
        if request.deadline is not None:
            heap = self._deadlines
            if len(heap) > 2 * self.max_queue + 64:
                # Entries of requests that left the queue are skipped lazily; keep them bounded.
                heap[:] = [entry for entry in heap if entry[2].queued]
                heapq.heapify(heap)
            self._seq += 1
            heapq.heappush(heap, (request.deadline, self._seq, request))
        return samples

    def ready(self, key: Hashable) -> bool:
        """Whether ``key`` holds a full batch (its timeout is not considered)."""
        queue = self._queues.get(key)
        return queue is not None and queue.samples >= self.batch_size

    def remove(self, request: Request) -> bool:
        """Take a queued request out (its caller gave up); False if it was not queued."""
        if not request.queued:
            return False
        queue = self._queues[request.key]
        queue.requests.remove(request)
        self._unqueue(queue, request)
        return True

    def expire(self, now: float) -> list[Request]:
        """Remove and return the queued requests whose deadline is <= ``now``, earliest
        deadline first."""
        expired: list[Request] = []
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            request = heapq.heappop(heap)[2]
            if request.queued:
                self.remove(request)
                expired.append(request)
        return expired

    def cut(self, now: float, *, force: bool = False) -> Batch | None:
        """Cut the next ready batch, or None if no key is ready.

        Expired requests are not dropped here: call ``expire(now)`` first. ``force`` makes
        every non-empty key ready (for draining).
        """
        best: _KeyQueue | None = None
        best_key: Hashable = None
        reason = "full"
        for key, queue in self._queues.items():
            if not queue.requests:
                continue
            head = queue.requests[0].arrived
            full = queue.samples >= self.batch_size
            # Compared as wakeup() computes it, so a timer set for wakeup() always cuts.
            if not (full or force or head + self.batch_timeout <= now):
                continue
            if best is None or head < best.requests[0].arrived:
                best, best_key = queue, key
                reason = "full" if full else "timeout"
        if best is None:
            return None
        return self._take(best_key, best, reason)

    def wakeup(self) -> float | None:
        """When ``cut`` or ``expire`` next has something to do with no new requests:
        the earliest oldest-arrival + ``batch_timeout`` of any key, or deadline."""
        heap = self._deadlines
        while heap and not heap[0][2].queued:
            heapq.heappop(heap)
        timeout = self.batch_timeout
        times = [q.requests[0].arrived + timeout for q in self._queues.values() if q.requests]
        if heap:
            times.append(heap[0][0])
        return min(times) if times else None

    def next_deadline(self) -> float | None:
        """The earliest deadline of a queued request (when ``expire`` next drops one)."""
        heap = self._deadlines
        while heap and not heap[0][2].queued:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def padded_size(self, size: int) -> int:
        """The size a batch of ``size`` samples is padded to (``size`` without ``pad_to``)."""
        for candidate in self.pad_to:
            if candidate >= size:
                return candidate
        return size

    def _take(self, key: Hashable, queue: _KeyQueue, reason: str) -> Batch:
        requests = queue.requests
        if queue.samples <= self.batch_size:
            # The whole queue fits (the usual case): take it in one go.
            everything = tuple(requests)
            requests.clear()
            for request in everything:
                request.queued = False
            size = queue.samples
            queue.samples = 0
            self._length -= len(everything)
            if key is not None:
                del self._queues[key]
            return Batch(key, everything, size, self.padded_size(size), reason)
        taken: list[Request] = []
        size = 0
        while requests and size + requests[0].size <= self.batch_size:
            request = requests.popleft()
            size += request.size
            taken.append(request)
            self._unqueue(queue, request)
        return Batch(key, tuple(taken), size, self.padded_size(size), reason)

    def _unqueue(self, queue: _KeyQueue, request: Request) -> None:
        request.queued = False
        queue.samples -= request.size
        self._length -= 1
        if not queue.requests and request.key is not None:
            del self._queues[request.key]


class PromotingPolicy(BatchPolicy):
    """``BatchPolicy`` with bucket promotion (see the module docstring): a batch cut from a
    ``Bucket`` key with room left takes requests from at most ``promote`` smaller buckets
    of its group that are ready (timed out) but under-full, nearest first, oldest first."""

    def __init__(
        self,
        *,
        batch_size: int,
        batch_timeout: float,
        max_queue: int,
        pad_to: Sequence[int] = (),
        promote: int = 1,
    ) -> None:
        if type(promote) is not int or promote < 1:
            raise ValueError(f"PromotingPolicy: promote must be an int >= 1; got {promote!r}")
        super().__init__(
            batch_size=batch_size, batch_timeout=batch_timeout, max_queue=max_queue, pad_to=pad_to
        )
        self.promote = promote
        self._now = 0.0
        self._force = False

    def cut(self, now: float, *, force: bool = False) -> Batch | None:
        self._now, self._force = now, force
        return super().cut(now, force=force)

    def _take(self, key: Hashable, queue: _KeyQueue, reason: str) -> Batch:
        batch = super()._take(key, queue, reason)
        room = self.batch_size - batch.size
        if room <= 0 or type(key) is not Bucket:
            return batch
        lowest = key.rank - self.promote
        donors = sorted(
            (k for k in self._queues if type(k) is Bucket and k.group == key.group
             and lowest <= k.rank < key.rank),
            key=lambda k: -k.rank,
        )  # fmt: skip
        taken: list[Request] = []
        ready_since = self._now - self.batch_timeout
        for donor in donors:
            source = self._queues[donor]
            if source.samples >= self.batch_size:
                continue  # full: it is cut on its own
            if not self._force and source.requests[0].arrived > ready_since:
                continue  # not ready: it may still fill
            requests = source.requests
            while requests and requests[0].size <= room:
                request = requests.popleft()
                room -= request.size
                taken.append(request)
                self._unqueue(source, request)
            if not room:
                break
        if not taken:
            return batch
        size = self.batch_size - room
        return Batch(
            key, batch.requests + tuple(taken), size, self.padded_size(size), reason, len(taken)
        )
