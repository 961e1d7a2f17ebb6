"""Gates: hold a task at a chosen point until the test lets it through or fails it.

A test double awaits ``gate.enter()`` where it wants to be held (at the start of a model's
``execute``, say, as Nx.Serving's tests do); the test waits with ``wait_blocked`` until the
work it expects is held there, looks at the system in that state, then decides with
``release`` or ``fail``. Order is forced this way, never with sleeps.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Gate"]

# What a held task is told: pass (None) or raise this exception.
_Verdict = BaseException | None


def _check_count(where: str, count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{where}: count must be an int >= 1; got {count!r}")
    return count


class Gate:
    """A point where tasks are held, in arrival order, until the test releases or fails them.

    The gate binds to no event loop when made; each held task waits on a future of its own
    running loop. Its methods other than ``enter`` and ``wait_blocked`` do not block and are
    meant to be called from the loop's thread (they are not thread-safe).

    ``release`` and ``fail`` act on the oldest held tasks first. When fewer tasks are held than
    ``count``, the rest is kept as credit, in order: the next tasks to ``enter`` take those
    verdicts at once, passing or raising without being held. ``release_all`` gives no credit.
    """

    __slots__ = ("_credits", "_entered", "_held", "_is_open", "_watchers")

    def __init__(self) -> None:
        self._held: deque[asyncio.Future[_Verdict]] = deque()
        self._credits: deque[_Verdict] = deque()
        self._watchers: list[tuple[int, asyncio.Future[None]]] = []
        self._entered = 0
        self._is_open = False

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<Gate {state} blocked={self.blocked} entered={self.entered}>"

    @property
    def blocked(self) -> int:
        """How many tasks are held at the gate now (released, failed or cancelled ones are
        not)."""
        return self._live()

    @property
    def entered(self) -> int:
        """How many times ``enter`` was called, in all; held, passed, failed or cancelled."""
        return self._entered

    async def enter(self) -> None:
        """Wait at the gate until the test releases this task (return) or fails it (raise).

        Passes at once when the gate is open or a credit is waiting. Blocks otherwise.
        Cancellable: a held task that is cancelled leaves the gate (``blocked`` drops by one);
        one that is cancelled after its verdict came but before it resumed hands that verdict
        on to the next task, so a release or failure is never lost. ``CancelledError``
        propagates in both cases.
        """
        self._entered += 1
        if self._is_open:
            return
        if self._credits:
            verdict = self._credits.popleft()
        else:
            verdict = await self._hold()
        if verdict is not None:
            raise verdict

    async def _hold(self) -> _Verdict:
        held: asyncio.Future[_Verdict] = asyncio.get_running_loop().create_future()
        self._held.append(held)
        self._notify_watchers()
        try:
            return await held
        except asyncio.CancelledError:
            if held.cancelled():
                if held in self._held:
                    self._held.remove(held)
            else:
                # The verdict arrived, then the task was cancelled before it could act on it.
                self._deliver(held.result())
            raise

    async def wait_blocked(self, count: int = 1) -> None:
        """Wait until at least ``count`` (an int >= 1) tasks are held at the gate.

        Returns at once if they already are. Blocks otherwise; cancellable.
        """
        count = _check_count("Gate.wait_blocked", count)
        if self._live() >= count:
            return
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (count, watcher)
        self._watchers.append(entry)
        try:
            await watcher
        finally:
            if entry in self._watchers:
                self._watchers.remove(entry)

    def release(self, count: int = 1) -> None:
        """Let the ``count`` oldest held tasks through; credit the rest to the next ``enter``."""
        count = _check_count("Gate.release", count)
        for _ in range(count):
            self._deliver(None)

    def fail(self, exc: BaseException, count: int = 1) -> None:
        """Make the ``count`` oldest held tasks raise ``exc``; credit the rest to later ``enter``s.

        Every failed task raises the same exception instance.
        """
        if not isinstance(exc, BaseException):
            raise TypeError(f"Gate.fail: exc must be an exception instance; got {exc!r}")
        count = _check_count("Gate.fail", count)
        for _ in range(count):
            self._deliver(exc)

    def release_all(self) -> None:
        """Let every held task through. Gives no credit: later tasks are held as before."""
        while self._held:
            held = self._held.popleft()
            if not held.done():
                held.set_result(None)

    def open(self) -> None:
        """Let every held task through, and every later one without holding it.

        Credits still waiting are dropped: from now on everyone passes.
        """
        self._is_open = True
        self._credits.clear()
        self.release_all()

    def _deliver(self, verdict: _Verdict) -> None:
        # A held task cancelled a moment ago still sits in _held until it resumes: skip it.
        while self._held:
            held = self._held.popleft()
            if not held.done():
                held.set_result(verdict)
                return
        if not self._is_open:
            self._credits.append(verdict)

    def _live(self) -> int:
        return sum(not held.done() for held in self._held)

    def _notify_watchers(self) -> None:
        blocked = self._live()
        for count, watcher in self._watchers:
            if count <= blocked and not watcher.done():
                watcher.set_result(None)
