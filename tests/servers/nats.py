"""A real NATS server with JetStream for the tests (Debian package ``nats-server``).

``NatsServer.start_in(directory)`` runs ``nats-server -a 127.0.0.1 -p PORT -js -sd DIR``:
its own free loopback port, JetStream's file store in ``directory``, no monitoring port, no
cluster. It starts in milliseconds; ``restart()`` stops it and starts it again on the same
port with the same store (durable consumers survive), for the tests that need that.

Fixtures (registered for every test by ``servers.fixtures``):

- ``nats_server`` (session): one server for the session, started on first use; skips (fails
  under ``CI=true``) when ``nats-server`` is missing;
- ``nats_private_server`` (function): a server of this test's own, for tests that stop or
  restart it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servers.common import ServerProcess, free_port, require_binary

__all__ = ["NatsServer", "nats_private_server", "nats_server"]


class NatsServer(ServerProcess):
    """``nats-server`` with JetStream on a free loopback port, its store in ``directory``."""

    @classmethod
    def start_in(cls, directory: Path, binary: str | None = None) -> NatsServer:
        """Start one (``ServerNotReady`` if it does not come up) and return it."""
        binary = binary or require_binary("nats-server", "nats-server")
        port = free_port()
        argv = [
            binary,
            "-a", "127.0.0.1",
            "-p", str(port),
            "-js",
            "-sd", str(directory / "jetstream"),
            "-n", f"corral-test-{port}",
        ]  # fmt: skip
        server = cls("nats", argv, cwd=directory, port=port)
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def restart(self) -> None:
        """Stop the server (SIGTERM: JetStream flushes its store) and start it again on the
        same port with the same store."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One ``nats-server -js`` for the test session (skipped where missing, not in CI)."""
    binary = require_binary("nats-server", "nats-server")
    server = NatsServer.start_in(tmp_path_factory.mktemp("nats"), binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def nats_private_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A ``nats-server -js`` for this test alone (it may stop or restart it)."""
    binary = require_binary("nats-server", "nats-server")
    server = NatsServer.start_in(tmp_path, binary)
    try:
        yield server
    finally:
        server.stop()
