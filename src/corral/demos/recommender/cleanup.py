"""What ``corral demo`` leaves behind, and how it stops on a signal.

A run makes a temporary directory ``corral-demo-<pid>-<random>`` (model files, checkpoints,
training shards: about 18 MB) and, with a Redis source, a stream
``corral-demo:<host>:<pid>:<random>``. Both are removed when the run ends, also after SIGINT
or SIGTERM (``interrupts``). A run that could not clean up (SIGKILL, a power cut) leaves
them; the next run removes those whose process is gone (``remove_stale_directories``,
``remove_stale_streams``): the pid in the name is not alive, and for a stream, the host is
this one (streams named ``corral-demo:<pid>:<random>``, by versions before the host was in
the name, count as this host's).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from corral.pipeline.producers.redis_writer import StreamWriter

__all__ = [
    "DIR_PREFIX",
    "STREAM_PREFIX",
    "DemoInterrupted",
    "interrupts",
    "make_directory",
    "pid_alive",
    "remove_stale_directories",
    "remove_stale_streams",
    "stream_name",
    "topic_name",
]

DIR_PREFIX = "corral-demo-"
STREAM_PREFIX = "corral-demo:"


class DemoInterrupted(SystemExit):
    """The demo stopped on ``signum`` after cleaning up; exits with 128 + ``signum`` (130 for
    SIGINT, 143 for SIGTERM), as a shell reports a process a signal ended."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_directory() -> Path:
    """A new ``corral-demo-<pid>-<random>`` directory in the system's temporary directory."""
    return Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-"))


def stream_name() -> str:
    return f"{STREAM_PREFIX}{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def topic_name() -> str:
    """A new Kafka topic's name: ``corral-demo.<host>.<pid>.<random>`` (the characters a
    topic name allows). A run killed before its cleanup leaves its topic behind."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:100]
    return f"corral-demo.{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


def remove_stale_directories(root: Path | None = None) -> list[Path]:
    """Remove the ``corral-demo-<pid>-*`` directories in ``root`` (default: the system's
    temporary directory) whose process is gone; returns them."""
    root = Path(tempfile.gettempdir()) if root is None else root
    removed = []
    for path in root.glob(f"{DIR_PREFIX}*"):
        pid = path.name[len(DIR_PREFIX) :].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _stale_stream(name: str, host: str) -> bool:
    parts = name[len(STREAM_PREFIX) :].split(":")
    if len(parts) == 3:  # <host>:<pid>:<random>
        on, pid = parts[0], parts[1]
    elif len(parts) == 2:  # <pid>:<random>, before the host was in the name
        on, pid = host, parts[0]
    else:
        return False
    return on == host and pid.isdigit() and not pid_alive(int(pid))


async def remove_stale_streams(writer: StreamWriter) -> list[str]:
    """Delete the ``corral-demo:`` streams of this host whose process is gone (their pending
    entries and consumer group go with them); returns their names."""
    host = socket.gethostname()
    stale = [s for s in await writer.streams(f"{STREAM_PREFIX}*") if _stale_stream(s, host)]
    if stale:
        await writer.delete(*stale)
    return stale


@contextlib.contextmanager
def interrupts(task: asyncio.Task[object]) -> Iterator[list[int]]:
    """While in the block, SIGINT and SIGTERM cancel ``task`` (once: the first signal puts
    the default handlers back, so a second one stops the process at once) and are appended
    to the list it yields. Does nothing outside the main thread, where signals cannot be
    handled."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal(signum: int) -> None:
        caught.append(signum)
        for s in signals:
            loop.remove_signal_handler(s)
        task.cancel()

    for s in signals:
        loop.add_signal_handler(s, on_signal, s)
    try:
        yield caught
    finally:
        if not caught:
            for s in signals:
                loop.remove_signal_handler(s)
