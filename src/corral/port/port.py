"""Ports: processes whose body is a worker OS process.

``Port("mymodel:Model", args={...})`` is an ``Actor``: spawn it, supervise it, link to it,
call it. Its ``init`` starts ``python -m corral.port mymodel:Model``, sends ``INIT`` with
``args`` and waits for ``READY`` (setup included). Then ``await pid.call(msg)`` sends
``msg`` to the worker's ``handle_call`` and returns its reply; many calls may be in flight,
matched by id, answered in any order; ``pid.cast(msg)`` goes to ``handle_cast``.

When the worker ends for any reason — exit, ``os._exit``, SIGKILL, segfault, OOM kill, or
corral stopping it because it broke the protocol — every pending call fails at once with
``PortExited`` (exit status or signal, and the last lines of the worker's stderr), and the
port process exits with that error as its reason, so links, monitors and its supervisor
hear about it. When the port process ends for any reason, its worker is stopped (``STOP``,
then SIGKILL after ``stop_timeout``). The worker's stderr goes to the ``corral.port``
logger, a line at a time, with the port's name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from corral._options import Options, is_int, is_number, option
from corral.errors import (
    Overloaded,
    PortCallError,
    PortExited,
    ProtocolError,
)
from corral.port.codec import Codec
from corral.port.frames import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, frame_header
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
from corral.runtime.messages import ExitReason
from corral.runtime.process import Actor, Caller, Pid

if TYPE_CHECKING:
    from corral.port.shm import SharedMemoryStore

__all__ = ["Port", "PortOptions"]

logger = logging.getLogger("corral.port")

_STDERR_TAIL: Final = 20
_HAS_MEMFD: Final = hasattr(os, "memfd_create")


def _is_handler_spec(value: object) -> bool:
    if type(value) is not str:
        return False
    module, sep, attr = value.partition(":")
    return bool(sep and module and attr)


@dataclass(frozen=True, kw_only=True)
class PortOptions(Options):
    """How a port starts and talks to its worker."""

    _what = "port"

    handler: str = option(
        "",
        doc="The worker's handler, 'module:Handler' (a class or zero-argument factory).",
        rule="a str like 'module:Handler'",
        check=_is_handler_spec,
    )
    args: Mapping[str, object] | None = option(
        None,
        doc="Keyword arguments for the handler's setup(); sent once, msgpack-encoded.",
        rule="a mapping with str keys or None",
        check=lambda v: v is None or (isinstance(v, Mapping) and all(type(k) is str for k in v)),
    )
    command: tuple[str, ...] | None = option(
        None,
        doc="Run this argv instead of `python -m corral.port HANDLER`; it must speak the "
        "corral port protocol.",
        rule="a tuple of str or None",
        check=lambda v: (
            v is None or (type(v) is tuple and len(v) > 0 and all(type(a) is str for a in v))
        ),
    )
    python: str = option(
        sys.executable,
        doc="The interpreter that runs the worker.",
        rule="a non-empty str",
        check=lambda v: type(v) is str and v != "",
    )
    env: Mapping[str, str] | None = option(
        None,
        doc="Extra environment variables for the worker (added to the parent's).",
        rule="a mapping of str to str or None",
        check=lambda v: (
            v is None
            or (
                isinstance(v, Mapping)
                and all(type(k) is str and type(x) is str for k, x in v.items())
            )
        ),
    )
    cwd: str | None = option(
        None,
        doc="The worker's working directory.",
        rule="a str or None",
        check=lambda v: v is None or type(v) is str,
    )
    max_frame_size: int = option(
        DEFAULT_MAX_FRAME_SIZE,
        doc="Largest frame either side accepts, in bytes.",
        rule="an int >= 1024",
        check=is_int(1024),
    )
    shm_threshold: int | None = option(
        1 << 20,
        doc="Arrays of this many bytes or more travel through shared memory; None: never.",
        rule="an int >= 0 or None",
        check=lambda v: v is None or (type(v) is int and v >= 0),
    )
    max_in_flight: int = option(
        1024,
        doc="Calls that may wait for the worker at once; more fail with Overloaded.",
        rule="an int >= 1",
        check=is_int(1),
    )
    start_timeout: float = option(
        60.0,
        doc="Seconds the worker gets to start and run setup().",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    stop_timeout: float = option(
        5.0,
        doc="Seconds the worker gets to stop after STOP before it is killed.",
        rule="a number >= 0",
        check=is_number(0),
    )
    spin: float = option(
        0.0002,
        doc="Seconds the worker polls for the next request before it blocks: saves two "
        "context switches per round trip for chatty callers, costs up to this much CPU "
        "after each burst. 0 disables.",
        rule="a number >= 0",
        check=is_number(0),
    )
    spares: int = option(
        1,
        doc="Ready workers the node keeps for these options so a restart adopts one "
        "instead of starting an interpreter and running setup (see corral.port.spares). "
        "Each costs an idle worker's memory.",
        rule="an int >= 0",
        check=is_int(0),
    )
    crash_on_error: bool = option(
        False,
        doc="If the handler raises, the worker exits (status 1) instead of replying with "
        "the error: 'let it crash' for handlers whose state an error may corrupt.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )

    def argv(self, shm_fd: int | None = None) -> list[str]:
        """The worker's command line; ``shm_fd``: its end of the shared-memory socket."""
        if self.command is not None:
            return list(self.command)
        argv = [self.python, "-m", "corral.port", self.handler]
        argv += ["--max-frame-size", str(self.max_frame_size), "--spin", repr(self.spin)]
        if self.crash_on_error:
            argv.append("--crash-on-error")
        if shm_fd is not None and self.shm_threshold is not None:
            argv += ["--shm-fd", str(shm_fd), "--shm-threshold", str(self.shm_threshold)]
        return argv

    @property
    def uses_shm(self) -> bool:
        """Whether large arrays go through shared memory: ``shm_threshold`` is set, the
        worker is corral's own (no ``command``) and the platform has memfd (Linux)."""
        return self.shm_threshold is not None and self.command is None and _HAS_MEMFD


class _WorkerProtocol(asyncio.SubprocessProtocol):
    def __init__(self, worker: _Worker) -> None:
        self.worker = worker

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        assert isinstance(data, bytes)
        if fd == 1:
            self.worker.on_stdout(data)
        else:
            self.worker.on_stderr(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.worker.stdout_closed = True
            self.worker.maybe_finished()

    def process_exited(self) -> None:
        self.worker.exited = True
        self.worker.maybe_finished()


class _Worker:
    """One worker OS process and its wire. Lives on the loop; owned by one Port."""

    def __init__(self, options: PortOptions, name: str, on_down: Callable[[PortExited], None]):
        self.options = options
        self.name = name
        self.on_down = on_down
        self.codec = Codec(shm_threshold=options.shm_threshold or 0, where=f"port {name}")
        self.decoder = FrameDecoder(options.max_frame_size, where=f"port {name}")
        self.pending: dict[int, Caller] = {}
        self.next_id = 0
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.ready: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_TAIL)
        self.stderr_partial = b""
        self.breach = ""
        self.exited = False
        self.stdout_closed = False
        self.down: PortExited | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.store: SharedMemoryStore | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        env = None
        if self.options.env is not None:
            env = {**os.environ, **self.options.env}
        child_end = self.open_shm() if self.options.uses_shm else None
        try:
            transport, _ = await loop.subprocess_exec(
                lambda: _WorkerProtocol(self),
                *self.options.argv(None if child_end is None else child_end.fileno()),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=env,
                cwd=self.options.cwd,
                start_new_session=True,  # a Ctrl-C meant for the parent must not hit workers
                pass_fds=() if child_end is None else (child_end.fileno(),),
            )
        except BaseException:
            self.close_shm()
            raise
        finally:
            if child_end is not None:
                child_end.close()  # the worker has its copy; ours would hide its death
        self.transport = transport
        self.stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]
        self.send([INIT, PROTOCOL_VERSION, dict(self.options.args or {})])
        async with asyncio.timeout(self.options.start_timeout):
            await self.ready

    def open_shm(self) -> socket.socket:
        """Make the shared-memory channel: our end goes to the codec's store, the other
        end (returned) to the worker."""
        from corral.port.shm import SharedMemoryStore

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.store = SharedMemoryStore(ours.detach(), where=f"port {self.name}")
        self.codec = Codec(
            store=self.store,
            shm_threshold=self.options.shm_threshold or 0,
            where=f"port {self.name}",
        )
        return theirs

    def close_shm(self) -> None:
        """Close our end: records the worker sent but we never read are freed with it."""
        if self.store is not None:
            self.store.close()

    @property
    def os_pid(self) -> int | None:
        return None if self.transport is None else self.transport.get_pid()

    def adopt(self, name: str, on_down: Callable[[PortExited], None]) -> None:
        """Hand a ready spare to its port: errors and logs now carry the port's name."""
        self.name = name
        self.on_down = on_down
        self.codec.rename(f"port {name}")
        self.decoder.where = f"port {name}"

    # -- sending ---------------------------------------------------------------------------

    def send(self, message: list[object]) -> None:
        body = self.codec.dumps(message)
        if len(body) > self.options.max_frame_size:
            raise ProtocolError(
                f"port {self.name}: message of {len(body)} bytes exceeds max_frame_size="
                f"{self.options.max_frame_size}"
            )
        assert self.stdin is not None
        self.stdin.writelines((frame_header(len(body)), body))

    def call(self, msg: object, caller: Caller) -> None:
        if self.down is not None:
            caller.fail(self.down)
            return
        if len(self.pending) >= self.options.max_in_flight:
            caller.fail(
                Overloaded(
                    f"port {self.name}: {len(self.pending)} calls in flight "
                    f"(max_in_flight={self.options.max_in_flight}); the worker is slower "
                    "than its callers"
                )
            )
            return
        call_id = self.next_id = self.next_id + 1
        try:
            self.send([CALL, call_id, msg])
        except (TypeError, ProtocolError) as exc:
            caller.fail(exc)
            return
        self.pending[call_id] = caller

    def cast(self, msg: object) -> None:
        if self.down is None:
            self.send([CAST, msg])

    # -- receiving -------------------------------------------------------------------------

    def on_stdout(self, data: bytes) -> None:
        if self.breach:
            return
        try:
            for frame in self.decoder.feed(data):
                self.dispatch(self.codec.loads(frame))
        except ProtocolError as exc:
            sample = bytes(data[:32])
            self.kill(f"the worker broke the protocol ({exc}); first bytes: {sample!r}")

    def dispatch(self, message: object) -> None:
        if isinstance(message, list) and len(message) == 3:
            kind, ident, body = message
            if kind == REPLY:
                caller = self.pending.pop(ident, None)
                if caller is not None:
                    caller.reply(body)
                return
            if kind == ERROR and isinstance(body, dict):
                caller = self.pending.pop(ident, None)
                if caller is not None:
                    caller.fail(self.remote_error(body))
                return
            if kind == READY and not self.ready.done():
                self.ready.set_result(body if isinstance(body, dict) else {})
                return
            if kind == INIT_FAILED and isinstance(body, dict) and not self.ready.done():
                self.ready.set_exception(self.remote_error(body))
                return
        raise ProtocolError(f"port {self.name}: unexpected message {message!r:.200}")

    def remote_error(self, info: dict[str, object]) -> PortCallError:
        return PortCallError(
            self.name,
            str(info.get("type", "Exception")),
            str(info.get("message", "")),
            str(info.get("traceback", "")),
        )

    def on_stderr(self, data: bytes) -> None:
        lines = (self.stderr_partial + data).split(b"\n")
        self.stderr_partial = lines.pop()
        if len(self.stderr_partial) > 8192:
            lines.append(self.stderr_partial)
            self.stderr_partial = b""
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.stderr_tail.append(line)
                logger.warning("port %s: %s", self.name, line)

    # -- ending ----------------------------------------------------------------------------

    def kill(self, breach: str = "") -> None:
        if breach and not self.breach:
            self.breach = breach
        if self.transport is not None and not self.exited:
            try:
                self.transport.kill()
            except ProcessLookupError:
                pass

    def maybe_finished(self) -> None:
        if not (self.exited and self.stdout_closed) or self.down is not None:
            return
        assert self.transport is not None
        code = self.transport.get_returncode()
        if self.stderr_partial:
            self.on_stderr(b"\n")
        detail = self.breach
        if not detail and self.stderr_tail:
            detail = "last stderr: " + " | ".join(list(self.stderr_tail)[-3:])
        if code is not None and code < 0:
            down = PortExited(self.name, signal=-code, detail=detail)
        else:
            down = PortExited(self.name, status=code, detail=detail)
        self.down = down
        pending, self.pending = self.pending, {}
        for caller in pending.values():
            caller.fail(down)
        if not self.ready.done():
            self.ready.set_exception(down)
            self.ready.exception()  # start() may have given up already: nobody else reads it
        self.transport.close()
        self.close_shm()
        if not self.finished.done():
            self.finished.set_result(None)
        self.on_down(down)

    async def reap(self) -> None:
        """Kill the worker (if running) and wait until it is gone and its pipes closed."""
        if self.transport is None:
            return
        self.kill()
        await asyncio.shield(self.finished)

    async def stop(self, timeout: float) -> None:
        """Ask the worker to finish (STOP, then EOF), kill it after ``timeout`` seconds."""
        if self.transport is None or self.down is not None:
            return
        finished = self.finished
        try:
            self.send([STOP])
            assert self.stdin is not None
            self.stdin.close()
        except (OSError, RuntimeError):
            pass
        try:
            async with asyncio.timeout(timeout):
                await finished
        except TimeoutError:
            logger.warning(
                "port %s: worker did not stop within %g s; killing it", self.name, timeout
            )
            self.kill()
            await finished


class Port(Actor):
    """A process whose body is a worker OS process running ``handler``.

    Options are ``PortOptions`` fields, as keywords. Calls wait as any call (5 s by
    default: pass ``timeout=`` to ``pid.call`` for slow models). A call beyond
    ``max_in_flight`` fails with ``Overloaded``; a message that cannot be encoded fails the
    call with ``TypeError``; neither harms the port.
    """

    def __init__(self, handler: str, **options: object) -> None:
        self.options = PortOptions(handler=handler, **options)  # type: ignore[arg-type]
        self._worker: _Worker | None = None

    @property
    def os_pid(self) -> int | None:
        """The worker's OS process id (None before it started)."""
        return None if self._worker is None else self._worker.os_pid

    @staticmethod
    def os_pid_of(pid: Pid) -> int | None:
        """The worker OS process id of the port running as ``pid``: None before its worker
        started or after the port ended. ``TypeError`` if ``pid`` is not a port's. For tools
        and tests that signal the worker (``os.kill(Port.os_pid_of(pid), SIGKILL)``)."""
        port = Port.running_as(pid)
        if port is not None:
            return port.os_pid
        if pid.alive:
            raise TypeError(f"Port.os_pid_of: {pid} is not a port; it runs {pid.actor_type}")
        return None

    def _label(self) -> str:
        return f"{self.pid} {self.options.handler}"

    async def init(self) -> None:
        node = self.node
        spare = None
        if self.options.spares:
            from corral.port.spares import take_spare

            spare = await take_spare(node, self.options)
        if spare is not None:
            spare.adopt(self._label(), self._worker_down)
            worker = spare
        else:
            worker = _Worker(self.options, self._label(), self._worker_down)
        self._worker = worker
        # Whatever ends this process (kill included), the worker goes too, and the node
        # waits for it to be reaped before it finishes stopping.
        self.pid.add_exit_callback(lambda _reason: node.add_cleanup(worker.reap()))
        if spare is not None:
            return
        try:
            await worker.start()
        except BaseException:
            await worker.reap()
            raise

    def _worker_down(self, down: PortExited) -> None:
        self.pid.send_system(_WorkerDown(down))

    def handle_call(self, msg: object) -> object:
        assert self._worker is not None
        self._worker.call(msg, self.defer_reply())
        return None

    def handle_cast(self, msg: object) -> None:
        assert self._worker is not None
        self._worker.cast(msg)

    def handle_info(self, msg: object) -> None:
        if isinstance(msg, _WorkerDown):
            raise msg.error
        super().handle_info(msg)

    async def terminate(self, reason: ExitReason) -> None:
        if self._worker is not None:
            await self._worker.stop(self.options.stop_timeout)


@dataclass(frozen=True)
class _WorkerDown:
    error: PortExited
