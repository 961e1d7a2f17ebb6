"""Ending a producer's own tasks in bounded time, whatever its client library does with a cancel.

Not a producer (it has no ``PRODUCER``): the helpers the broker producers share to stop.

Why: on Python 3.11, ``asyncio.wait_for`` returns the result of an awaitable that finished in
the same loop turn as a cancel of the waiting task, and the ``CancelledError`` is lost (the
task's ``cancelling()`` count stays above 0; Python 3.12 rewrote ``wait_for`` on
``asyncio.timeout``). redis-py, nats-py and aiormq read replies through ``wait_for``, so a
task looping on a client call under live traffic ignores most single cancels: measured, a
loop over ``StreamWriter.add`` against a local redis-server ignored 29 of 30. A stop that
cancels once and waits without limit then hangs.

So a producer that owns a task stops it in three layers, each enough on its own most of the
time:

1. a stopping flag the task's loop checks each turn (set before anything else);
2. ``check_cancelled()`` after each client call in the loop: it raises the lost cancel;
3. ``stop_task()``: cancel, wait a little, cancel again... up to ``STOP_TIMEOUT`` seconds,
   then give up with a logged error naming the task (it is left to end at its next flag check).

A one-off call with a time limit (close a connection, cancel a consumer) goes through
``call_within``: ``asyncio.timeout`` around the call relies on the very cancel that can be
lost, and then waits as long as the call does; ``call_within`` runs the call in a task of its
own and waits for it with ``asyncio.wait``, which a cancel always interrupts.

``STOP_TIMEOUT`` stays below a stage's default shutdown (5 s), past which its supervisor kills
the stage: a producer's ``terminate`` that waits on its tasks through ``stop_task`` always ends
before that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

__all__ = ["RECANCEL_INTERVAL", "STOP_TIMEOUT", "call_within", "check_cancelled", "stop_task"]

T = TypeVar("T")

logger = logging.getLogger("corral.pipeline")

STOP_TIMEOUT: Final = 2.0
"""Seconds ``stop_task`` keeps cancelling a task before it gives up (after any grace)."""

RECANCEL_INTERVAL: Final = 0.01
"""Seconds between two cancels of a task that has not ended."""


def check_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was cancelled and the cancel was lost.

    Call it right after a client-library call in a loop (see the module docstring). A task
    that is handling a cancel on purpose (cleanup in ``except CancelledError``) also counts as
    cancelled, so do not call it from cleanup code.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling() > 0:
        raise asyncio.CancelledError


async def stop_task(
    task: asyncio.Task[Any], *, where: str, grace: float = 0.0, timeout: float = STOP_TIMEOUT
) -> bool:
    """End ``task`` and wait for it: at most ``grace + timeout`` seconds.

    Set the task's stopping flag first. For ``grace`` seconds this only waits (a task that
    finishes its current step and sees the flag ends cleanly); then it cancels the task every
    ``RECANCEL_INTERVAL`` seconds, for up to ``timeout`` seconds. Returns True when the task
    has ended (an exception it ended with is logged, not raised), False when it gave up: an
    error names the task and says why, and the task is left running.

    If the caller is cancelled meanwhile, the task is cancelled once more and the
    ``CancelledError`` propagates without waiting.
    """
    loop = asyncio.get_running_loop()
    try:
        if grace > 0 and not task.done():
            await asyncio.wait([task], timeout=grace)
        deadline = loop.time() + timeout
        while not task.done():
            left = deadline - loop.time()
            if left <= 0:
                logger.error(
                    "%s: gave up stopping task %r after %g s: it ignored %d cancels (its "
                    "client library swallows CancelledError); it is left running",
                    where,
                    task.get_name(),
                    timeout,
                    task.cancelling(),
                )
                return False
            task.cancel()
            await asyncio.wait([task], timeout=min(RECANCEL_INTERVAL, left))
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.cancelled() and task.exception() is not None:
        logger.error("%s: task %r had failed", where, task.get_name(), exc_info=task.exception())
    return True


async def call_within(coro: Coroutine[Any, Any, T], *, timeout: float, where: str) -> T:
    """Await ``coro`` for at most ``timeout`` seconds (plus ``STOP_TIMEOUT`` to end it), in a
    task of its own, and return its result or raise its exception.

    Raises ``TimeoutError`` when it did not finish in time (it is stopped with
    ``stop_task``). If the caller is cancelled meanwhile, the call's task is cancelled and the
    ``CancelledError`` propagates at once, whether or not the call heeds it.
    """
    task = asyncio.ensure_future(coro)
    try:
        await asyncio.wait([task], timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        await stop_task(task, where=where)
        raise TimeoutError(f"{where}: not done within {timeout:g} s")
    return task.result()
