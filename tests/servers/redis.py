"""A real ``redis-server`` for the tests (Debian package ``redis-server``).

``RedisServer.start(directory)`` runs one on a free loopback port with persistence off
(``--save '' --appendonly no``), its files in ``directory``; ``url`` is ``redis://`` for it.

Fixtures (registered for every test by ``servers.fixtures``):

- ``redis_server`` (session): one server for the whole test session, started on first use;
  skips (fails under ``CI=true``) when ``redis-server`` is missing;
- ``redis_url`` (function): that server's URL with its data flushed first, so each test
  starts from an empty database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.common import ServerProcess, free_port, require_binary

__all__ = ["RedisServer", "redis_server", "redis_url"]


class RedisServer(ServerProcess):
    """``redis-server`` on a free loopback port, without persistence, in ``directory``."""

    @classmethod
    def start_in(
        cls, directory: Path, binary: str | None = None, *, port: int | None = None
    ) -> RedisServer:
        """Start one on ``port`` (default: a free one) and return it; ``ServerNotReady`` if
        it does not come up."""
        binary = binary or require_binary("redis-server", "redis-server")
        port = free_port() if port is None else port
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(directory),
            "--protected-mode", "no",
        ]  # fmt: skip
        server = cls("redis", argv, cwd=directory, port=port)
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def flush(self) -> None:
        """Delete every key (FLUSHALL), synchronously."""
        import redis

        with redis.Redis(host=self.host, port=self.port) as client:
            client.flushall()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` for the test session (skipped where it is missing, but not in CI)."""
    binary = require_binary("redis-server", "redis-server")
    server = RedisServer.start_in(tmp_path_factory.mktemp("redis"), binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, its data flushed for this test."""
    redis_server.flush()
    return redis_server.url
