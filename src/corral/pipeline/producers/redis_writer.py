"""``StreamWriter``: the feeding end of a Redis stream, for the code that feeds a pipeline's
Redis Streams producer (a demo, a test, a bridge)::

    from corral.pipeline.producers.redis_writer import StreamWriter

    async with StreamWriter("redis://localhost:6379/0", "events") as writer:
        ids = await writer.add([{"user": "196", "item": "242"}])   # one pipelined XADD each

Not a producer (it has no ``PRODUCER``). It imports redis-py lazily, on ``async with``, as
the producer module does (``pip install 'corral[redis]'``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from corral.pipeline.producers._broker import redact
from corral.pipeline.producers.stopping import check_cancelled

if TYPE_CHECKING:
    from corral.pipeline.producers.redis_streams import RedisClient as Redis

__all__ = ["StreamWriter"]

_URL = re.compile(r"^(redis|rediss|unix)://")


class StreamWriter:
    """The other end of the stream, for the code that feeds it (a demo, a test, a bridge):
    ``async with StreamWriter(url, stream) as w: await w.add([{...}, ...])``.

    ``add`` appends entries with one pipelined ``XADD`` each (one round trip for all);
    ``pending(group)`` is the group's count of delivered, unacknowledged entries;
    ``length()`` is ``XLEN``; ``delete()`` removes the stream and its groups (or, given
    names, those streams); ``streams(match)`` lists the streams whose names match.
    """

    def __init__(self, url: str, stream: str) -> None:
        if not isinstance(url, str) or not _URL.match(url):
            raise ValueError(
                f"StreamWriter: url must start with redis://, rediss:// or unix://; got {url!r}"
            )
        if not (type(stream) is str and stream != ""):
            raise ValueError(f"StreamWriter: stream must be a non-empty str; got {stream!r}")
        self.url, self.stream = url, stream
        self._client: Redis | None = None

    async def __aenter__(self) -> StreamWriter:
        from corral.pipeline.producers.redis_streams import open_client

        client = open_client(
            self.url, by="corral's StreamWriter", protocol=2, socket_connect_timeout=10.0
        )
        try:
            await client.ping()
        except Exception as exc:
            await client.aclose()
            raise ConnectionError(f"StreamWriter: cannot reach {redact(self.url)}: {exc}") from exc
        self._client = client
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _connected(self) -> Redis:
        if self._client is None:
            raise RuntimeError("StreamWriter: use it as `async with StreamWriter(...) as w`")
        return self._client

    async def add(self, entries: Sequence[Mapping[str, str | bytes | int | float]]) -> list[str]:
        """Append ``entries`` in order; returns their ids.

        Cancellable. redis-py can lose a cancel that comes while it sends (Python 3.11's
        ``wait_for``; see ``corral.pipeline.producers.stopping``): ``add`` then raises the
        ``CancelledError`` itself once the entries are added, so a loop over ``add`` ends on
        one cancel (or Ctrl-C). Hence: do not call it from cleanup code that handles a cancel.
        """
        async with self._connected().pipeline(transaction=False) as pipe:
            for fields in entries:
                pipe.xadd(self.stream, dict(fields))  # type: ignore[arg-type]
            ids = await pipe.execute()
        check_cancelled()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    async def length(self) -> int:
        return int(await self._connected().xlen(self.stream))

    async def pending(self, group: str) -> int:
        summary = await self._connected().xpending(self.stream, group)
        return int(summary["pending"] if isinstance(summary, dict) else summary[0])

    async def delete(self, *streams: str) -> None:
        """Delete this writer's stream, or the ``streams`` named, with their groups."""
        await self._connected().delete(*(streams or (self.stream,)))

    async def streams(self, match: str = "*") -> list[str]:
        """The names of the streams matching the glob ``match`` (SCAN ... TYPE stream)."""
        client = self._connected()
        names = [k async for k in client.scan_iter(match=match, count=1000, _type="stream")]
        return sorted(k.decode() if isinstance(k, bytes) else str(k) for k in names)
