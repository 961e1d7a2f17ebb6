"""``WorkerProcess``: the parent's handle on one worker OS process.

A worker is the OS process that runs a handler (``python -m corral.port``, see
``corral.port.worker``). A ``WorkerProcess`` starts one, speaks the msgpack protocol of
``corral.port.protocol`` to it over its stdin and stdout, matches replies to calls by id,
logs its stderr on ``corral.port`` a line at a time, and notices its death. It is not a
process of the runtime: it lives on the node's event loop and belongs to one owner at a
time — the ``Port`` that adopted it, or the spare pool (``corral.port.spares``) while it
waits as a spare — which passes ``on_down`` and is told, once, with ``PortExited``, when the
worker is gone for any reason (exit, signal, a broken protocol that made us kill it).

Nothing here blocks: ``start``, ``stop`` and ``reap`` are coroutines that can be cancelled
(``reap`` is shielded: a cancelled reap still kills and reaps the worker). Every other method
returns at once; ``call`` answers through its ``Caller``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from corral import telemetry
from corral.errors import Overloaded, PortCallError, PortExited, ProtocolError
from corral.port.codec import Codec
from corral.port.frames import FrameDecoder, frame_header
from corral.port.protocol import (
    CALL,
    CAST,
    ERROR,
    INIT,
    INIT_FAILED,
    PROTOCOL_VERSION,
    READY,
    REPLY,
    STOP,
)

if TYPE_CHECKING:
    from corral.port.options import PortOptions
    from corral.port.shm import SharedMemoryStore
    from corral.runtime.process import Caller

__all__ = ["WorkerProcess"]

logger = logging.getLogger("corral.port")

_STDERR_TAIL: Final = 20

WORKER_EXITED_EVENT: Final = ("corral", "port", "worker_exited")
"""A worker OS process ended (public API; see docs/ports.md). Metadata: ``port`` (its
name), ``os_pid``, ``reason`` (``"stopped"``: corral stopped or reaped it; ``"breach"``:
corral killed it for breaking the protocol; ``"signal"``: a signal it did not get from
corral killed it; ``"exit_status"``: it exited by itself), ``error`` (the ``PortExited``)."""


class _Pipes(asyncio.SubprocessProtocol):
    def __init__(self, worker: WorkerProcess) -> None:
        self.worker = worker

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        if fd == 1:
            self.worker._on_stdout(data)
        else:
            self.worker._on_stderr(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.worker._stdout_closed = True
            self.worker._maybe_finished()

    def process_exited(self) -> None:
        self.worker._exited = True
        self.worker._maybe_finished()


class WorkerProcess:
    """The parent's handle on one worker OS process, started with ``options``.

    ``name`` labels its errors and log lines (``port <pid> <handler>``). ``on_down(error)``
    is called once, on the event loop, when the worker is gone for any reason; by then
    every pending call has failed with the same ``PortExited``, which ``down`` holds.
    Construct it on the event loop that will run it; it starts nothing until ``start``.
    """

    def __init__(self, options: PortOptions, name: str, on_down: Callable[[PortExited], None]):
        self.options = options
        """The options the worker was started with."""
        self.name = name
        """Its label in errors and logs; ``adopt`` changes it."""
        self._on_down = on_down
        self._codec = Codec(shm_threshold=options.shm_threshold or 0, where=f"port {name}")
        self._decoder = FrameDecoder(options.max_frame_size, where=f"port {name}")
        self._pending: dict[int, Caller] = {}
        self._next_id = 0
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._ready: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self._stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)
        self._stderr_partial = b""
        self._breach = ""
        self._stopping = False  # stop() or reap() ended it: its exit is "stopped"
        self._exited = False
        self._stdout_closed = False
        self.down: PortExited | None = None
        """Why the worker is gone; None while it runs (or before it started)."""
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._store: SharedMemoryStore | None = None

    async def start(self) -> None:
        """Start the worker, send ``INIT`` with ``options.args`` and wait for ``READY``
        (its setup included), at most ``options.start_timeout`` seconds (then
        ``TimeoutError``). ``PortCallError`` with the remote traceback if setup raised,
        ``PortExited`` if the worker died first. On failure the caller reaps it."""
        loop = asyncio.get_running_loop()
        env = None
        if self.options.env is not None:
            env = {**os.environ, **self.options.env}
        child_end = self._open_shm() if self.options.uses_shm else None
        spawn = loop.create_task(
            loop.subprocess_exec(
                lambda: _Pipes(self),
                *self.options.argv(None if child_end is None else child_end.fileno()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=self.options.cwd,
                start_new_session=True,  # a Ctrl-C meant for the parent must not hit workers
                pass_fds=() if child_end is None else (child_end.fileno(),),
            )
        )
        try:
            transport, _ = await _spawned(spawn)
        except BaseException:
            if spawn.done() and not spawn.cancelled() and spawn.exception() is None:
                # Cancelled while spawning: the worker exists; the caller's reap kills it.
                self._transport = spawn.result()[0]
            else:
                self._close_shm()
            raise
        finally:
            if child_end is not None:
                child_end.close()  # the worker has its copy; ours would hide its death
        self._transport = transport
        self._stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]
        self._send([INIT, PROTOCOL_VERSION, dict(self.options.args or {})])
        async with asyncio.timeout(self.options.start_timeout):
            await self._ready

    def _open_shm(self) -> socket.socket:
        """Make the shared-memory channel: our end goes to the codec's store, the other
        end (returned) to the worker."""
        from corral.port.shm import SharedMemoryStore

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._store = SharedMemoryStore(ours.detach(), where=f"port {self.name}")
        self._codec = Codec(
            store=self._store,
            shm_threshold=self.options.shm_threshold or 0,
            where=f"port {self.name}",
        )
        return theirs

    def _close_shm(self) -> None:
        """Close our end: records the worker sent but we never read are freed with it."""
        if self._store is not None:
            self._store.close()

    @property
    def os_pid(self) -> int | None:
        """The worker's OS process id; None before ``start`` spawned it."""
        return None if self._transport is None else self._transport.get_pid()

    def adopt(self, name: str, on_down: Callable[[PortExited], None]) -> None:
        """Hand a ready spare to a new owner: errors and logs now carry ``name``, and
        ``on_down`` is the one told of its death."""
        self.name = name
        self._on_down = on_down
        self._codec.rename(f"port {name}")
        self._decoder.where = f"port {name}"

    # -- sending ---------------------------------------------------------------------------

    def _send(self, message: list[object]) -> None:
        body = self._codec.dumps(message)
        if len(body) > self.options.max_frame_size:
            raise ProtocolError(
                f"port {self.name}: message of {len(body)} bytes exceeds max_frame_size="
                f"{self.options.max_frame_size}"
            )
        assert self._stdin is not None
        self._stdin.writelines((frame_header(len(body)), body))

    def call(self, msg: object, caller: Caller) -> None:
        """Send ``msg`` to the handler's ``handle_call``; ``caller`` gets the reply, or
        ``PortCallError``, ``PortExited``, ``Overloaded`` (beyond ``max_in_flight``), or
        the ``TypeError``/``ProtocolError`` of a message that cannot be sent."""
        if self.down is not None:
            caller.fail(self.down)
            return
        if len(self._pending) >= self.options.max_in_flight:
            caller.fail(
                Overloaded(
                    f"port {self.name}: {len(self._pending)} calls in flight "
                    f"(max_in_flight={self.options.max_in_flight}); the worker is slower "
                    "than its callers"
                )
            )
            return
        call_id = self._next_id = self._next_id + 1
        try:
            self._send([CALL, call_id, msg])
        except (TypeError, ProtocolError) as exc:
            caller.fail(exc)
            return
        self._pending[call_id] = caller

    def cast(self, msg: object) -> None:
        """Send ``msg`` to the handler's ``handle_cast``; nothing once the worker is down.
        ``TypeError`` if it cannot be encoded."""
        if self.down is None:
            self._send([CAST, msg])

    # -- receiving -------------------------------------------------------------------------

    def _on_stdout(self, data: bytes) -> None:
        if self._breach:
            return
        try:
            for frame in self._decoder.feed(data):
                self._dispatch(self._codec.loads(frame))
        except ProtocolError as exc:
            sample = bytes(data[:32])
            self._kill(f"the worker broke the protocol ({exc}); first bytes: {sample!r}")

    def _dispatch(self, message: object) -> None:
        if isinstance(message, list) and len(message) == 3:
            kind, ident, body = message
            if kind == REPLY:
                caller = self._pending.pop(ident, None)
                if caller is not None:
                    caller.reply(body)
                return
            if kind == ERROR and isinstance(body, dict):
                caller = self._pending.pop(ident, None)
                if caller is not None:
                    caller.fail(self._remote_error(body))
                return
            if kind == READY and not self._ready.done():
                self._ready.set_result(body if isinstance(body, dict) else {})
                return
            if kind == INIT_FAILED and isinstance(body, dict) and not self._ready.done():
                self._ready.set_exception(self._remote_error(body))
                return
        raise ProtocolError(f"port {self.name}: unexpected message {message!r:.200}")

    def _remote_error(self, info: dict[str, object]) -> PortCallError:
        return PortCallError(
            self.name,
            str(info.get("type", "Exception")),
            str(info.get("message", "")),
            str(info.get("traceback", "")),
        )

    def _on_stderr(self, data: bytes) -> None:
        lines = (self._stderr_partial + data).split(b"\n")
        self._stderr_partial = lines.pop()
        if len(self._stderr_partial) > 8192:
            lines.append(self._stderr_partial)
            self._stderr_partial = b""
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                logger.warning("port %s: %s", self.name, line)

    # -- ending ----------------------------------------------------------------------------

    def _kill(self, breach: str = "") -> None:
        if breach and not self._breach:
            self._breach = breach
        if self._transport is not None and not self._exited:
            try:
                self._transport.kill()
            except ProcessLookupError:
                pass

    def _maybe_finished(self) -> None:
        if not (self._exited and self._stdout_closed) or self.down is not None:
            return
        assert self._transport is not None
        code = self._transport.get_returncode()
        if self._stderr_partial:
            self._on_stderr(b"\n")
        detail = self._breach
        if not detail and self._stderr_tail:
            detail = "last stderr: " + " | ".join(list(self._stderr_tail)[-3:])
        if code is not None and code < 0:
            down = PortExited(self.name, signal=-code, detail=detail)
        else:
            down = PortExited(self.name, status=code, detail=detail)
        self.down = down
        if self._stopping:
            kind = "stopped"
        elif self._breach:
            kind = "breach"
        else:
            kind = "signal" if down.signal is not None else "exit_status"
        telemetry.emit(
            WORKER_EXITED_EVENT,
            {},
            {"port": self.name, "os_pid": self._transport.get_pid(), "reason": kind,
             "error": down},
        )  # fmt: skip
        pending, self._pending = self._pending, {}
        for caller in pending.values():
            caller.fail(down)
        if not self._ready.done():
            self._ready.set_exception(down)
            self._ready.exception()  # start() may have given up already: nobody else reads it
        self._transport.close()
        self._close_shm()
        if not self._finished.done():
            self._finished.set_result(None)
        self._on_down(down)

    async def reap(self) -> None:
        """Kill the worker (if running) and wait until it is gone and its pipes closed."""
        if self._transport is None:
            return
        self._stopping = True
        self._kill()
        await asyncio.shield(self._finished)

    async def stop(self, timeout: float) -> None:
        """Ask the worker to finish (STOP, then EOF), kill it after ``timeout`` seconds."""
        if self._transport is None or self.down is not None:
            return
        finished = self._finished
        self._stopping = True
        try:
            self._send([STOP])
            assert self._stdin is not None
            self._stdin.close()
        except (OSError, RuntimeError):
            pass
        try:
            async with asyncio.timeout(timeout):
                await finished
        except TimeoutError:
            logger.warning(
                "port %s: worker did not stop within %g s; killing it", self.name, timeout
            )
            self._kill()
            await finished


async def _spawned(
    spawn: asyncio.Task[tuple[asyncio.SubprocessTransport, asyncio.BaseProtocol]],
) -> tuple[asyncio.SubprocessTransport, asyncio.BaseProtocol]:
    """The spawn's result; a cancel waits for the spawn to finish, then propagates.

    Python 3.11's ``subprocess_exec`` cancelled mid-spawn kills the child but lets its pipes
    connect afterwards, unowned (``unclosed transport`` at exit), and a second cancel there
    leaves the child to exit after the loop has closed. So the spawn is never cancelled: it
    finishes, the caller takes the worker and reaps it like any other.
    """
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(spawn)
        except asyncio.CancelledError as exc:
            if spawn.done():
                raise
            cancelled = exc
            continue
        if cancelled is not None:
            raise cancelled
        return result
