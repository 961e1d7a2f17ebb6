"""What the broker producers (Redis Streams, RabbitMQ, NATS JetStream, Kafka) share: one
outage rule and the pieces that carry it out.

Not a producer (it has no ``PRODUCER``; the underscore keeps ``producer={"module": ...}``
from naming it). Its names are public for the producer modules that import them.

The outage rule, the same for every broker:

- **Start.** A producer stage connects within its ``timeout`` option (seconds, default 10):
  it tries every ``CONNECT_RETRY`` seconds, so a stage restarted while its broker restarts
  waits for it. Past ``timeout`` the start fails with ``ConnectionError`` naming the URL
  (password masked, ``redact``) and the last error. A refused login is not retried.
- **Running.** A broker that goes away (a connection closed, lost or timed out) ends the
  stage with ``ConnectionError`` (``BrokerStage.fail``): no producer rides out an outage in
  place. Its supervisor restarts it, and the new stage connects as at start; the broker
  delivers again what was taken and not acknowledged (at-least-once).
- So an outage shorter than ``timeout`` costs one restart of each producer stage; a longer
  one shows as a failed start every ``timeout`` seconds, which the supervisor retries for as
  long as that pace stays within its restart intensity (3 in 5 s: a ``timeout`` above
  5 / 3 s). Errors that are not outages (a Redis group deleted, an entry that is gone) are
  handled by the producer and do not end the stage.

``Demand`` is the owed-demand book of the pull producers (Redis, NATS, Kafka): ``handle_demand``
adds to it and wakes the producer's fetch task, which waits in ``wanted`` while nothing is
owed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from corral.runtime import self_pid

if TYPE_CHECKING:
    from corral.runtime import Pid

__all__ = ["CONNECT_RETRY", "BrokerStage", "Demand", "connect_with_retry", "redact"]

T = TypeVar("T")

CONNECT_RETRY: Final = 0.25
"""Seconds between connection attempts while a stage starts (within ``timeout``)."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``******``, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:******@{host}"))


async def connect_with_retry(
    attempt: Callable[[], Awaitable[T]],
    *,
    timeout: float,
    retry_on: tuple[type[BaseException], ...],
    fatal: tuple[type[BaseException], ...] = (),
    where: str,
    url: str,
    last_error: Callable[[], BaseException | None] = lambda: None,
) -> T:
    """Call ``attempt`` every ``CONNECT_RETRY`` seconds until it returns, for at most
    ``timeout`` seconds; an exception in ``retry_on`` and not in ``fatal`` (a refused
    login) is tried again, any other propagates.

    Raises ``ConnectionError`` ("<where>: cannot connect to <redacted url>: <last error>")
    when time runs out. ``last_error`` may name a better last error than the exception
    (a client that reports failed attempts through a callback). Cancellable.
    """
    last: BaseException | None = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    return await attempt()
                except retry_on as exc:
                    if isinstance(exc, fatal):
                        raise
                    last = exc
                await asyncio.sleep(CONNECT_RETRY)
    except TimeoutError as exc:
        error = last_error() or last or exc
        raise ConnectionError(f"{where}: cannot connect to {redact(url)}: {error!r}") from exc


class Demand:
    """What a pull producer owes its stage, and its fetch task's wake-up.

    ``add`` (from ``handle_demand``) owes more and wakes the task; the task waits in
    ``wanted`` and says what it emitted with ``emitted``; ``stop`` forgives everything and
    wakes the task for good.
    """

    __slots__ = ("_wanted", "owed", "stopping")

    def __init__(self) -> None:
        self.owed = 0
        self.stopping = False
        self._wanted = asyncio.Event()

    def add(self, n: int) -> None:
        self.owed += n
        self._wanted.set()

    def emitted(self, n: int) -> None:
        self.owed -= n

    def stop(self) -> None:
        """Owe nothing from now on; ``wanted`` returns 0."""
        self.stopping = True
        self.owed = 0
        self._wanted.set()

    async def wanted(self) -> int:
        """Wait until something is owed; return it (0 once stopping)."""
        while self.owed <= 0 and not self.stopping:
            self._wanted.clear()
            await self._wanted.wait()
        return 0 if self.stopping else self.owed


class BrokerStage:
    """The producer stage a broker producer runs in, as its client library's callbacks and
    its fetch task see it: ``fail`` ends the stage once with ``ConnectionError``.

    ``bind`` (in ``init``, in the stage's task) records the stage. ``closing`` is set by
    ``fail`` and by the producer's own ``terminate``; a failure after that is not reported.
    """

    __slots__ = ("_pid", "_redelivery", "_where", "closing")

    def __init__(self, where: str, redelivery: str) -> None:
        self._where = where
        self._redelivery = redelivery
        self._pid: Pid | None = None
        self.closing = False

    def bind(self) -> None:
        self._pid = self_pid()

    def fail(self, what: str) -> None:
        """End the stage: ``ConnectionError("<where>: <what>; the stage restarts and
        <redelivery>")``. Runs in any task or callback on the loop."""
        if self.closing or self._pid is None:
            return
        self.closing = True
        self._pid.exit(
            ConnectionError(f"{self._where}: {what}; the stage restarts and {self._redelivery}")
        )
