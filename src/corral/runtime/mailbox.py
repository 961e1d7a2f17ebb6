"""A process's mailbox: a bounded FIFO of messages and the one way its process is woken.

Senders ``put`` (refused when the mailbox is full: the sender raises ``MailboxFull``) or
``put_system`` (never refused: ``Down``, ``Exit``, timer messages, a failed owned task; they
are bounded by the links, monitors, timers and tasks that produce them). The process's own
task takes items with ``popleft`` and, when the mailbox is empty, awaits ``wait()``; the
next put of either kind wakes it, through ``wake``, the one wake path. ``Pid`` inlines the
bounded put on its hot path (check, append, ``wake`` if a waiter is set): a method call per
message costs about a tenth of a cast.

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

    __slots__ = ("_loop", "capacity", "items", "waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self._loop = loop
        self.items: deque[Item] = deque()
        """The queue; the owning process's loop ``popleft``s from it."""
        self.waiter: asyncio.Future[None] | None = None
        """Set while the owning process waits for an item; ``wake`` resolves it."""
        self.capacity = capacity

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item: Item) -> bool:
        """Queue ``item`` unless the mailbox is full; False if it was refused."""
        items = self.items
        if len(items) >= self.capacity:
            return False
        items.append(item)
        if self.waiter is not None:
            self.wake()
        return True

    def put_system(self, item: Item) -> None:
        """Queue ``item`` even if the mailbox is full."""
        self.items.append(item)
        if self.waiter is not None:
            self.wake()

    def wake(self) -> None:
        """Resolve the owning process's waiter (after an append, when one is set)."""
        waiter = self.waiter
        self.waiter = None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wait(self) -> asyncio.Future[None]:
        """A future the next put resolves; await it only while the mailbox is empty."""
        waiter: asyncio.Future[None] = self._loop.create_future()
        self.waiter = waiter
        return waiter

    def clear(self) -> list[Item]:
        """Empty the mailbox (its process has ended); the items it held."""
        items = list(self.items)
        self.items.clear()
        return items
