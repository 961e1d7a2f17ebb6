"""A process's mailbox: a bounded FIFO of messages and the one way its process is woken.

Senders ``put`` (refused when the mailbox is full: the sender raises ``MailboxFull``) or
``put_system`` (never refused: ``Down``, ``Exit``, timer messages, a failed owned task; they
are bounded by the links, monitors, timers and tasks that produce them). The process's own
task takes items with ``popleft`` and, when the mailbox is empty, awaits ``wait()``; the
next put of either kind wakes it. Every put goes through the one wake path here.

An item is ``(kind, message, reply future or None)``; ``kind`` says which hook gets it:
``CALL`` ``handle_call`` (the future carries the reply), ``CAST`` ``handle_cast``, ``INFO``
``handle_info``, ``CRASH`` none: the message is an exception that ends the process (a task
the process owns failed).

Internal to the runtime (``corral.runtime.process`` serves it); not thread-safe.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Final

__all__ = ["CALL", "CAST", "CRASH", "DEFAULT_MAILBOX_SIZE", "INFO", "Item", "Mailbox"]

DEFAULT_MAILBOX_SIZE: Final = 10_000
"""Messages a mailbox holds before senders get ``MailboxFull``."""

CALL: Final = 0
CAST: Final = 1
INFO: Final = 2
CRASH: Final = 3

Item = tuple[int, object, "asyncio.Future[object] | None"]


class Mailbox:
    """The items waiting for one process, at most ``capacity`` of them from ``put``."""

    __slots__ = ("_items", "_loop", "_waiter", "capacity")

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self._loop = loop
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        """Whether ``put`` would refuse an item now."""
        return len(self._items) >= self.capacity

    def put(self, item: Item) -> bool:
        """Queue ``item`` unless the mailbox is full; False if it was refused."""
        items = self._items
        if len(items) >= self.capacity:
            return False
        items.append(item)
        if self._waiter is not None:
            self._wake()
        return True

    def put_system(self, item: Item) -> None:
        """Queue ``item`` even if the mailbox is full."""
        self._items.append(item)
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        self._waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def items(self) -> deque[Item]:
        """The queue itself, for the owning process's loop to ``popleft`` from."""
        return self._items

    def wait(self) -> asyncio.Future[None]:
        """A future the next put resolves; await it only while the mailbox is empty."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiter = waiter
        return waiter

    def clear(self) -> list[Item]:
        """Empty the mailbox (its process has ended); the items it held."""
        items = list(self._items)
        self._items.clear()
        return items
