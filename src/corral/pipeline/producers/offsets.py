"""Which offset a partition may commit when its messages are acknowledged out of order.

Not a producer (it has no ``PRODUCER``): the pure rule of the Kafka producer
(``corral.pipeline.producers.kafka``), with no client, no loop and no clock, so it is tested
with plain numbers.

The rule: a partition's consumer group commits the **lowest offset not acknowledged yet**
(Kafka's committed offset is the next one to read). Messages are handed out in offset order
and may end in any order (processors run concurrently); a message acknowledged after a later
one never lets the later one's commit skip it. So after a crash everything from the lowest
unacknowledged offset on is delivered again, and nothing before it is lost:

    emitted 4 5 6 7, acked 5 6 7        -> committable 4 (4 comes back after a crash)
    then acked 4                        -> committable 8

A failed message that the producer drops or dead-letters counts as acknowledged: the commit
goes past it.

``OffsetTracker`` keeps one partition's offsets handed out and not yet passed by the commit
point: memory is one entry per such offset (``uncommitted``), which the Kafka producer bounds
with ``max_uncommitted`` by pausing the partition.
"""

from __future__ import annotations

from collections import deque

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """One partition's offsets handed out, and the offset it may commit.

    ``emitted(offset)`` in increasing offset order (gaps allowed: compacted or transaction
    markers); ``acked(offset)`` in any order, once each. ``committable`` is the lowest offset
    emitted and not acked, or one past the highest emitted when all are acked; None before
    anything was emitted. ``committed`` is what the owner last committed (it sets it).
    ``revoked`` is set when the partition is taken away: later acks are ignored.
    """

    __slots__ = ("_acked", "_next", "_pending", "committed", "revoked")

    def __init__(self) -> None:
        self._pending: deque[int] = deque()  # emitted, oldest first, up to the first unacked
        self._acked: set[int] = set()  # acked, but behind an unacked one in _pending
        self._next: int | None = None  # one past the highest offset emitted
        self.committed: int | None = None
        self.revoked = False

    def __repr__(self) -> str:
        return (
            f"<OffsetTracker committable={self.committable} committed={self.committed} "
            f"in_flight={self.in_flight} uncommitted={self.uncommitted}>"
        )

    def emitted(self, offset: int) -> None:
        """``offset`` was handed out; ``ValueError`` if it is not above every earlier one."""
        if self._next is not None and offset < self._next:
            raise ValueError(
                f"OffsetTracker.emitted: offsets must increase; got {offset} after {self._next - 1}"
            )
        self._pending.append(offset)
        self._next = offset + 1

    def acked(self, offset: int) -> None:
        """``offset`` ended (acknowledged, dropped or dead-lettered): the commit point may
        pass it once every earlier offset has ended too."""
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            acked = self._acked
            while pending and pending[0] in acked:
                acked.discard(pending.popleft())
        else:
            self._acked.add(offset)

    @property
    def committable(self) -> int | None:
        """The offset a commit may record now (the next one to read after a restart)."""
        return self._pending[0] if self._pending else self._next

    @property
    def dirty(self) -> bool:
        """Whether ``committable`` is ahead of ``committed``."""
        committable = self.committable
        return committable is not None and committable != self.committed

    @property
    def in_flight(self) -> int:
        """Offsets handed out and not acked."""
        return len(self._pending) - len(self._acked)

    @property
    def uncommitted(self) -> int:
        """Offsets the tracker holds: from the commit point to the newest emitted."""
        return len(self._pending)
