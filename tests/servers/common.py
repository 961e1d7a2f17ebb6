"""Start a server binary on a free loopback port in a temporary directory, and stop it.

::

    binary = require_binary("redis-server", "redis-server")   # skips, or fails under CI=true
    port = free_port()
    with ServerProcess("redis", [binary, "--port", str(port)], cwd=tmp, port=port) as server:
        ...                                                    # server.port accepts connections

The project's rule for missing binaries lives in ``require_binary``: a test may skip with a
reason when a server binary is missing, except under ``CI=true``, where it fails.

``ServerProcess.start`` waits until the port accepts a TCP connection, by polling a connect
with a short real-time bound: that is waiting for an external process, the one kind of wait
the tests allow; it never sleeps for luck. The server's stdout and stderr go to a log file in
its directory, quoted in the error when it does not come up or dies early. Stopping sends
SIGTERM, waits a bounded time, then SIGKILLs; a server never outlives the test session.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest

__all__ = [
    "ServerNotReady",
    "ServerProcess",
    "free_port",
    "require_binary",
    "wait_accepting",
]

LOOPBACK = "127.0.0.1"


def require_binary(name: str, debian_package: str) -> str:
    """The path of the executable ``name``; if it is missing, skip the test with a reason
    naming ``debian_package`` — or, under ``CI=true``, fail it (CI must have every server)."""
    path = shutil.which(name)
    if path is not None:
        return path
    how = f"install Debian's {debian_package} (make debs)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} not found: CI must have it; {how}", pytrace=False)
    pytest.skip(f"{name} not found; {how} to run this")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on now (the OS picks it).

    The port is free when this returns; another process could take it before the server
    binds it, which the server's start then reports (it does not come up).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServerNotReady(RuntimeError):
    """A server did not accept connections in time, or exited while starting."""


def wait_accepting(
    port: int,
    *,
    host: str = LOOPBACK,
    timeout: float = 20.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until ``host:port`` accepts a TCP connection; poll every 10 ms for at most
    ``timeout`` real seconds. Raises ``ServerNotReady`` on timeout, or at once if
    ``process`` (the server) has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise ServerNotReady(f"exited with status {process.returncode} before accepting")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise ServerNotReady(f"{host}:{port} did not accept a connection in {timeout:g} s")
        time.sleep(0.01)  # polling an external process for readiness, bounded by `timeout`


class ServerProcess:
    """A server OS process listening on ``port`` of the loopback, run in ``cwd``.

    ``start`` launches ``argv`` (stdout and stderr to ``cwd/<name>.log``, its own process
    group) and waits until the port accepts connections; ``stop`` ends it. Use it as a
    context manager. ``env`` is added to the environment of the server.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        port: int,
        env: dict[str, str] | None = None,
        start_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = cwd
        self.port = port
        self.host = LOOPBACK
        self.env = env
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_path = cwd / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ServerProcess {self.name} {self.host}:{self.port} {state}>"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        """What the server wrote to stdout and stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> Self:
        """Launch the server and wait until it accepts connections (``ServerNotReady``,
        with its log, if it does not within ``start_timeout`` seconds)."""
        if self.process is not None:
            raise RuntimeError(f"{self!r}: already started")
        self.cwd.mkdir(parents=True, exist_ok=True)
        env = None if self.env is None else {**os.environ, **self.env}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_accepting(
                self.port, host=self.host, timeout=self.start_timeout, process=self.process
            )
        except ServerNotReady as exc:
            self.stop()
            raise ServerNotReady(
                f"{self.name} ({' '.join(self.argv)}): {exc}; its log:\n{self.log()}"
            ) from None
        return self

    def stop(self) -> None:
        """End the server: SIGTERM to its process group, then SIGKILL after
        ``stop_timeout`` seconds. No effect if it is not running."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        # A server that forked helpers (rabbitmq's epmd, say) leaves them in its group.
        _signal_group(process, signal.SIGKILL)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
