"""Pipeline policy as plain objects with no event loop: who gets how many messages, when a
batch is cut, how much a batcher lets each processor send, how fast producers may emit,
whether and when a failed message is tried again.

The stages (``corral.pipeline.stages``) own the tasks, timers and messages; they ask these
objects what to do. Everything here is synchronous, deterministic and tested on its own.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, Protocol, TypeVar

from corral.pipeline.message import Failure, Message

__all__ = ["BatchGroups", "Credits", "Dispatcher", "RateLimiter", "RetryRule", "retry_delay"]

_C = TypeVar("_C", bound=Hashable)


class Dispatcher(Generic[_C]):
    """A producer stage's demand book: what each consumer asked for, what the producer
    still owes, and the messages emitted but not yet handed out.

    Consumers subscribe to one partition (all to partition 0 when there is no
    ``partition_by``); messages are pushed into their partition's buffer and handed to that
    partition's consumers, oldest demand first, never beyond a consumer's demand. ``want``
    says how much demand to pass on to the producer: the demand the buffers cannot meet,
    less what the producer owes already, capped so that buffered plus owed messages never
    exceed ``capacity``. Memory is therefore bounded by ``capacity`` messages.
    """

    __slots__ = (
        "_buffers",
        "_consumers",
        "_demand",
        "_partition_of",
        "buffered",
        "capacity",
        "owed",
    )

    def __init__(self, partitions: int, capacity: int) -> None:
        if partitions < 1 or capacity < 1:
            raise ValueError(
                f"Dispatcher: partitions and capacity must be >= 1; got {partitions}, {capacity}"
            )
        self.capacity = capacity
        self._buffers: list[list[Message]] = [[] for _ in range(partitions)]
        self._consumers: list[list[_C]] = [[] for _ in range(partitions)]
        self._demand: dict[_C, int] = {}
        self._partition_of: dict[_C, int] = {}
        self.buffered = 0
        self.owed = 0

    @property
    def partitions(self) -> int:
        return len(self._buffers)

    def consumers(self) -> list[_C]:
        """The subscribed consumers, oldest first."""
        return list(self._demand)

    def demand_of(self, consumer: _C) -> int:
        """The consumer's demand not met yet (0 if it is not subscribed)."""
        return self._demand.get(consumer, 0)

    def subscribe(self, consumer: _C, partition: int) -> None:
        """Add ``consumer`` to ``partition`` (taken modulo the partition count)."""
        if consumer in self._demand:
            return
        p = partition % len(self._buffers)
        self._demand[consumer] = 0
        self._partition_of[consumer] = p
        self._consumers[p].append(consumer)

    def cancel(self, consumer: _C) -> int:
        """Forget ``consumer``; return its unmet demand, which is dropped. Its partition's
        buffered messages stay for the next consumer of that partition."""
        demand = self._demand.pop(consumer, 0)
        p = self._partition_of.pop(consumer, None)
        if p is not None:
            self._consumers[p].remove(consumer)
        return demand

    def ask(self, consumer: _C, n: int) -> None:
        """Record ``n`` more demand from a subscribed consumer (ignored if unknown)."""
        if consumer in self._demand:
            self._demand[consumer] += n

    def want(self) -> int:
        """Demand to pass on to the producer now; the caller adds it to ``owed`` by calling
        ``asked``. 0 when the buffers and what is owed already cover the demand."""
        unmet = 0
        for p, consumers in enumerate(self._consumers):
            demand = 0
            for consumer in consumers:
                demand += self._demand[consumer]
            gap = demand - len(self._buffers[p])
            if gap > 0:
                unmet += gap
        room = self.capacity - self.buffered - self.owed
        return max(0, min(unmet - self.owed, room))

    def asked(self, n: int) -> None:
        """The producer was asked for ``n`` more messages."""
        self.owed += n

    def emitted(self, n: int) -> bool:
        """The producer emitted ``n`` messages; False if that is more than it owed (it is
        then owed nothing)."""
        if n > self.owed:
            self.owed = 0
            return False
        self.owed -= n
        return True

    def forgive(self) -> None:
        """The producer owes nothing any more (it was told to drain)."""
        self.owed = 0

    def push(self, partition: int, messages: Sequence[Message]) -> None:
        """Buffer emitted ``messages`` for ``partition``."""
        self._buffers[partition].extend(messages)
        self.buffered += len(messages)

    def deliverable(self) -> int:
        """How many buffered messages consumers have demand for right now."""
        total = 0
        for p, buffer in enumerate(self._buffers):
            if buffer:
                demand = 0
                for consumer in self._consumers[p]:
                    demand += self._demand[consumer]
                total += min(demand, len(buffer))
        return total

    def take(self, limit: int | None = None) -> list[tuple[_C, list[Message]]]:
        """Hand out buffered messages against demand, at most ``limit`` in all: a list of
        (consumer, messages), in partition order then oldest subscriber first."""
        out: list[tuple[_C, list[Message]]] = []
        left = -1 if limit is None else limit
        demand_of = self._demand
        for p, buffer in enumerate(self._buffers):
            for consumer in self._consumers[p]:
                if not buffer or left == 0:
                    break
                demand = demand_of[consumer]
                if demand <= 0:
                    continue
                k = min(demand, len(buffer)) if left < 0 else min(demand, len(buffer), left)
                if k == len(buffer):
                    chunk = buffer
                    buffer = self._buffers[p] = []
                else:
                    chunk = buffer[:k]
                    del buffer[:k]
                demand_of[consumer] = demand - k
                self.buffered -= k
                if left > 0:
                    left -= k
                out.append((consumer, chunk))
        return out

    def buffered_for(self, consumer: _C) -> int:
        """Messages waiting in the consumer's partition."""
        p = self._partition_of.get(consumer)
        return 0 if p is None else len(self._buffers[p])


class Credits:
    """How many messages a batcher lets each processor send it (GenStage's demand, seen
    from the batcher).

    Each processor may have up to ``window`` messages of credit; the batcher holds at most
    ``capacity`` messages, counting credit handed out and not used yet. A processor whose
    credit fell to half its window or less is topped up when there is room; the processors
    are served round-robin so none is starved.
    """

    __slots__ = ("_next", "_outstanding", "capacity", "window")

    def __init__(self, capacity: int, window: int) -> None:
        self.capacity = capacity
        self.window = max(1, window)
        self._outstanding: dict[int, int] = {}
        self._next = 0

    def add(self, processor: int) -> None:
        """A processor subscribed; it has no credit until ``grants`` gives it some."""
        self._outstanding[processor] = 0

    def remove(self, processor: int) -> None:
        """A processor is gone; its credit returns to the pool."""
        self._outstanding.pop(processor, None)

    def received(self, processor: int, n: int) -> None:
        """``n`` messages came from ``processor``, using its credit."""
        left = self._outstanding.get(processor)
        if left is not None:
            self._outstanding[processor] = max(0, left - n)

    def outstanding(self, processor: int) -> int:
        return self._outstanding.get(processor, 0)

    def grants(self, held: int) -> list[tuple[int, int]]:
        """Credit to hand out now, as (processor, n), given ``held`` messages in the batcher."""
        outstanding = self._outstanding
        space = self.capacity - held - sum(outstanding.values())
        if space <= 0 or not outstanding:
            return []
        order = sorted(outstanding)
        start = self._next % len(order)
        self._next += 1
        low = self.window // 2
        out: list[tuple[int, int]] = []
        for processor in order[start:] + order[:start]:
            have = outstanding[processor]
            if have > low:
                continue
            grant = min(self.window - have, space)
            if grant <= 0:
                break
            outstanding[processor] = have + grant
            space -= grant
            out.append((processor, grant))
        return out


class _Group:
    __slots__ = ("id", "messages")

    def __init__(self, group_id: int) -> None:
        self.id = group_id
        self.messages: list[Message] = []


class BatchGroups:
    """A batcher's open batches, one per key, cut by size here and by timeout on request.

    ``add`` returns the batches it cut (each ``batch_size`` messages, in arrival order) and
    records in ``opened`` the (key, group id) of groups it started, for the caller to arm
    their timeouts. Group ids are unique: a timeout names the group it was armed for, so a
    stale one (its group was cut by size meanwhile, and another opened) cuts nothing.
    """

    __slots__ = ("_groups", "_ids", "batch_size", "held", "opened")

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._groups: dict[Hashable, _Group] = {}
        self._ids = 0
        self.held = 0
        self.opened: list[tuple[Hashable, int]] = []

    def __len__(self) -> int:
        return len(self._groups)

    def add(
        self, messages: Sequence[Message], keys: Sequence[Hashable] | None = None
    ) -> list[tuple[Hashable, int, list[Message]]]:
        """Add ``messages`` under their ``batch_key`` (or under ``keys[i]``); return the
        batches that became full, as (key, group id, messages)."""
        if keys is None:
            keys = [m.batch_key for m in messages]
        if keys and keys.count(keys[0]) == len(keys):
            cut = self._add_one_key(keys[0], messages)  # the usual case, without a loop
        else:
            cut = []
            for i, message in enumerate(messages):
                cut.extend(self._add_one_key(keys[i], (message,)))
        self.held += len(messages)
        for _, _, batch in cut:
            self.held -= len(batch)
        return cut

    def _add_one_key(
        self, key: Hashable, messages: Sequence[Message]
    ) -> list[tuple[Hashable, int, list[Message]]]:
        cut: list[tuple[Hashable, int, list[Message]]] = []
        groups = self._groups
        size = self.batch_size
        start, n = 0, len(messages)
        while start < n:
            group = groups.get(key)
            if group is None:
                self._ids += 1
                group = groups[key] = _Group(self._ids)
                self.opened.append((key, self._ids))
            batch = group.messages
            take = min(size - len(batch), n - start)
            batch.extend(messages[start : start + take])
            start += take
            if len(batch) >= size:
                del groups[key]
                cut.append((key, group.id, batch))
        return cut

    def cut(self, key: Hashable, group_id: int | None = None) -> list[Message] | None:
        """Cut the open group of ``key`` (only if its id is ``group_id``, when given)."""
        group = self._groups.get(key)
        if group is None or (group_id is not None and group.id != group_id):
            return None
        del self._groups[key]
        self.held -= len(group.messages)
        return group.messages

    def cut_all(self) -> list[tuple[Hashable, int, list[Message]]]:
        """Cut every open group, oldest first: (key, group id, messages)."""
        out = [(key, group.id, group.messages) for key, group in self._groups.items()]
        self._groups.clear()
        self.held = 0
        return out


class RateLimiter:
    """At most ``allowed`` messages per window of ``interval`` seconds, windows starting at
    ``start`` (fixed windows, as Broadway's rate limiter resets every interval)."""

    __slots__ = ("_left", "_window_end", "allowed", "interval")

    def __init__(self, allowed: int, interval: float, start: float) -> None:
        self.allowed = allowed
        self.interval = interval
        self._window_end = start + interval
        self._left = allowed

    def _roll(self, now: float) -> None:
        # A timer armed for the window's end may fire a float step early; a nanosecond of
        # slack keeps it from finding the old window still open and re-arming for ~0 s.
        if now + 1e-9 >= self._window_end:
            windows = int((now + 1e-9 - self._window_end) // self.interval) + 1
            self._window_end += windows * self.interval
            self._left = self.allowed

    def take(self, now: float, wanted: int) -> int:
        """Take up to ``wanted`` tokens at time ``now``; return how many were granted."""
        self._roll(now)
        granted = min(wanted, self._left)
        self._left -= granted
        return granted

    def left(self, now: float) -> int:
        """Tokens left in the window that contains ``now``."""
        self._roll(now)
        return self._left

    def window_end(self, now: float) -> float:
        """When the window containing ``now`` ends and tokens come back."""
        self._roll(now)
        return self._window_end


class RetryRule(Protocol):
    """What ``retry_delay`` needs of a retry policy (``RetryOptions`` is one)."""

    @property
    def max_attempts(self) -> int: ...

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (>= 1)."""
        ...


def retry_delay(failure: Failure | None, attempt: int, retry: RetryRule | None) -> float | None:
    """Seconds to wait before trying again a message whose attempt number ``attempt`` (1 for
    the first) ended with ``failure``; None when there is no next attempt: it did not fail
    (``failure`` is None), the pipeline has no ``retry``, the failure is final
    (``retry=False``), or ``retry.max_attempts`` attempts are spent.

    Both stages that run hooks ask this: a processor for one message, a batch processor for
    each message of a batch (they all share one attempt number, and the first one's delay).
    """
    if retry is None or failure is None or not failure.retry or attempt >= retry.max_attempts:
        return None
    return retry.delay(attempt)
