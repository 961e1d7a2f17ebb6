"""The worker side of a port: ``python -m corral.port MODULE:HANDLER``.

The worker imports ``MODULE``, builds ``HANDLER`` (a class, or any callable returning the
handler object) and serves frames from its stdin, writing replies to its stdout:

- ``setup(**args)`` runs once, with the ``args`` the port was given (optional);
- ``handle_call(msg)`` answers a call; its return value is the reply. If it raises, the
  caller gets ``PortCallError`` with this traceback and the worker goes on; with
  ``--crash-on-error`` the worker exits instead (status 1), as "let it crash" wants;
- ``handle_cast(msg)`` takes a cast (optional). If it raises, the traceback goes to stderr
  (the port's log) and the worker goes on; with ``--crash-on-error`` it exits (status 1);
- ``terminate()`` runs on a graceful stop (optional).

Hooks may be plain functions or coroutine functions; ``corral.port.hooks`` calls them the
same way in both wire modes. ``--help`` lists the exit statuses.

With plain ``handle_call`` the worker handles requests one at a time, in order, and
batches its replies (one write for all the requests that arrived together). With
``async def handle_call`` it runs them concurrently on an event loop and replies in
completion order.

The real stdin and stdout carry frames only: before importing the handler, the worker moves
them to private descriptors, points fd 1 at stderr and fd 0 at /dev/null, so a stray
``print`` (or a C library writing to stdout) lands in the port's log instead of corrupting
the protocol.

With ``--erlang`` the worker speaks Erlang's External Term Format instead of msgpack, so an
Erlang or Elixir program can drive it (see ``corral.port.erlang``).
"""

from __future__ import annotations

import argparse
import inspect
import os
import select
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NoReturn

from corral.errors import ProtocolError
from corral.port.codec import Codec
from corral.port.frames import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, frame_header
from corral.port.hooks import (
    SetupFailed,
    deliver_cast,
    deliver_cast_async,
    die,
    hook,
    load_handler,
    run_awaitable,
    setup_handler,
    terminate_handler,
)
from corral.port.protocol import (
    CALL,
    CAST,
    ERROR,
    EXIT_PROTOCOL_ERROR,
    EXIT_SETUP_FAILED,
    INIT,
    INIT_FAILED,
    PROTOCOL_VERSION,
    READY,
    REPLY,
    STOP,
    describe_exception,
)

if TYPE_CHECKING:
    import asyncio

__all__ = ["Handler", "Wire", "clients_dir", "load_handler", "main"]

_READ_SIZE: Final = 1 << 18
_IOV_MAX: Final = 512


class Handler:
    """An optional base class for port handlers; every hook has a harmless default."""

    def setup(self, **args: object) -> None:
        """Runs once in the worker before the first message."""

    def handle_call(self, msg: object) -> object:
        """Answers a call; the default echoes the message back."""
        return msg

    def handle_cast(self, msg: object) -> None:
        """Takes a cast; the default ignores it."""

    def terminate(self) -> None:
        """Runs on a graceful stop."""


class Wire:
    """Blocking frame I/O on the private protocol descriptors."""

    def __init__(self, in_fd: int, out_fd: int, max_frame_size: int) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.decoder = FrameDecoder(max_frame_size, where="corral.port worker")
        self.spin = 0.0
        self.poller = select.poll()
        self.poller.register(in_fd, select.POLLIN)

    def read_frames(self) -> list[bytes | memoryview] | None:
        """Block for input; the frames it completes (maybe none), or None at EOF.

        Before blocking, it polls for up to ``spin`` seconds: a caller that sends its next
        request right after a reply then finds the worker awake, which saves two context
        switches per round trip at the cost of that much CPU after each burst.
        """
        if self.spin > 0.0:
            deadline = time.perf_counter() + self.spin
            poll = self.poller.poll
            while not poll(0) and time.perf_counter() < deadline:
                pass
        data = os.read(self.in_fd, _READ_SIZE)
        if not data:
            return None
        try:
            return list(self.decoder.feed(data))
        except ProtocolError as exc:
            die(str(exc), EXIT_PROTOCOL_ERROR)

    def write(self, bodies: Sequence[bytes]) -> None:
        parts: list[bytes] = []
        for body in bodies:
            parts.append(frame_header(len(body)))
            parts.append(body)
        while parts:
            chunk = parts[:_IOV_MAX]
            written = os.writev(self.out_fd, chunk)
            total = sum(len(p) for p in chunk)
            if written == total:
                del parts[:_IOV_MAX]
                continue
            # Partial write: drop what went out, keep the rest of the first unfinished part.
            for index, part in enumerate(chunk):
                if written < len(part):
                    parts[: index + 1] = [part[written:]]
                    break
                written -= len(part)


def _protect_stdio() -> tuple[int, int]:
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    return in_fd, out_fd


class _Server:
    def __init__(self, wire: Wire, codec: Codec, *, crash_on_error: bool) -> None:
        self.wire = wire
        self.codec = codec
        self.crash_on_error = crash_on_error
        self.handler: object = None

    # -- start-up --------------------------------------------------------------------------

    def handshake(self, spec: str) -> None:
        frames: list[bytes | memoryview] = []
        while not frames:
            got = self.wire.read_frames()
            if got is None:
                os._exit(0)  # the port went away before saying anything
            frames = got
        message = self._decode(frames[0])
        if not (isinstance(message, list) and len(message) == 3 and message[0] == INIT):
            die(f"expected an INIT message first; got {message!r}", EXIT_PROTOCOL_ERROR)
        version: object = message[1]
        args: object = message[2]
        if version != PROTOCOL_VERSION:
            self._init_failed(
                ValueError(
                    f"protocol version mismatch: port speaks {version}, "
                    f"worker speaks {PROTOCOL_VERSION}"
                )
            )
        if not isinstance(args, dict):
            die(f"INIT args must be a map; got {args!r}", EXIT_PROTOCOL_ERROR)
        try:
            self.handler = setup_handler(spec, args)
        except SetupFailed as failed:
            self._init_failed(failed.cause)
        self.wire.write([self.codec.dumps([READY, PROTOCOL_VERSION, {"pid": os.getpid()}])])
        if len(frames) > 1:
            die("a message came before READY was sent", EXIT_PROTOCOL_ERROR)

    def _init_failed(self, exc: BaseException) -> NoReturn:
        info = describe_exception(exc)
        print(info["traceback"], file=sys.stderr, end="", flush=True)
        self.wire.write([self.codec.dumps([INIT_FAILED, PROTOCOL_VERSION, info])])
        os._exit(EXIT_SETUP_FAILED)

    def _decode(self, frame: bytes | memoryview) -> object:
        try:
            return self.codec.loads(frame)
        except ProtocolError as exc:
            die(str(exc), EXIT_PROTOCOL_ERROR)

    # -- serving ---------------------------------------------------------------------------

    def serve(self) -> None:
        handle_call = hook(self.handler, "handle_call")
        assert handle_call is not None
        if inspect.iscoroutinefunction(handle_call):
            run_awaitable(self._serve_async())
            return
        handle_cast = hook(self.handler, "handle_cast")
        dumps = self.codec.dumps
        while True:
            frames = self.wire.read_frames()
            if frames is None:
                return
            replies: list[bytes] = []
            for frame in frames:
                message = self._decode(frame)
                kind = message[0] if isinstance(message, list) and message else None
                if kind == CALL and len(message) == 3:  # type: ignore[arg-type]
                    call_id: object = message[1]  # type: ignore[index]
                    body: object = message[2]  # type: ignore[index]
                    try:
                        result = handle_call(body)
                        replies.append(dumps([REPLY, call_id, result]))
                    except Exception as exc:
                        replies.append(self._error_reply(call_id, exc))
                elif kind == CAST and len(message) == 2:  # type: ignore[arg-type]
                    deliver_cast(
                        handle_cast,
                        message[1],  # type: ignore[index]
                        crash_on_error=self.crash_on_error,
                    )
                elif kind == STOP:
                    if replies:
                        self.wire.write(replies)
                    return
                else:
                    die(f"unknown message {message!r}", EXIT_PROTOCOL_ERROR)
            if replies:
                self.wire.write(replies)

    def _error_reply(self, call_id: object, exc: Exception) -> bytes:
        if self.crash_on_error:
            raise exc
        try:
            return self.codec.dumps([ERROR, call_id, describe_exception(exc)])
        except TypeError as encode_error:  # the message itself could not be encoded
            return self.codec.dumps([ERROR, call_id, describe_exception(encode_error)])

    async def _serve_async(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        handle_call = hook(self.handler, "handle_call")
        handle_cast = hook(self.handler, "handle_cast")
        assert handle_call is not None
        tasks: set[asyncio.Task[None]] = set()
        done = asyncio.Event()
        inbox: asyncio.Queue[list[bytes | memoryview] | None] = asyncio.Queue()

        def on_readable() -> None:
            try:
                frames = self.wire.read_frames()
            except BlockingIOError:
                return
            inbox.put_nowait(frames)
            if frames is None:
                loop.remove_reader(self.wire.in_fd)

        async def answer(call_id: object, body: object) -> None:
            try:
                result = handle_call(body)
                if inspect.isawaitable(result):
                    result = await result
                reply = self.codec.dumps([REPLY, call_id, result])
            except Exception as exc:
                if self.crash_on_error:
                    die(describe_exception(exc)["traceback"], 1)
                reply = self._error_reply(call_id, exc)
            self.wire.write([reply])

        os.set_blocking(self.wire.in_fd, False)
        loop.add_reader(self.wire.in_fd, on_readable)
        try:
            while not done.is_set():
                frames = await inbox.get()
                if frames is None:
                    break
                for frame in frames:
                    message = self._decode(frame)
                    kind = message[0] if isinstance(message, list) and message else None
                    if kind == CALL and len(message) == 3:  # type: ignore[arg-type]
                        task = loop.create_task(answer(message[1], message[2]))  # type: ignore[index]
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif kind == CAST and len(message) == 2:  # type: ignore[arg-type]
                        await deliver_cast_async(
                            handle_cast,
                            message[1],  # type: ignore[index]
                            crash_on_error=self.crash_on_error,
                        )
                    elif kind == STOP:
                        done.set()
                        break
                    else:
                        die(f"unknown message {message!r}", EXIT_PROTOCOL_ERROR)
            if tasks:
                await asyncio.wait(tasks)
        finally:
            loop.remove_reader(self.wire.in_fd)

    def terminate(self) -> None:
        terminate_handler(self.handler)


def clients_dir() -> str:
    """The directory that holds the Erlang and Elixir clients shipped with corral:
    ``corral_port.erl`` (a gen_server) and ``corral_port.ex`` (``Corral.Port``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "clients")


_EPILOG: Final = """exit status:
  0  the port closed stdin, or sent STOP (msgpack) / stop (--erlang)
  1  the handler raised with --crash-on-error (or the worker itself failed)
  2  the handler could not be imported, built or set up; or, with --erlang, its
     handle_call is async; or the command line is invalid
  3  the port sent something that broke the protocol: an undecodable frame or term,
     an oversized frame or compressed term, an unknown message
  a worker killed by signal N has no status; Erlang's exit_status reports 128+N
"""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m corral.port",
        description="Run a corral port worker.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("handler", nargs="?", help="the handler to serve, as module:Handler")
    parser.add_argument(
        "--clients-dir",
        action="store_true",
        help="print the directory of the Erlang and Elixir clients (corral_port.erl, "
        "corral_port.ex) and exit",
    )
    parser.add_argument("--erlang", action="store_true", help="speak Erlang's term format")
    parser.add_argument(
        "--crash-on-error",
        action="store_true",
        help="exit (status 1) when the handler raises, instead of replying with the error",
    )
    parser.add_argument(
        "--max-frame-size",
        type=int,
        default=DEFAULT_MAX_FRAME_SIZE,
        help="largest frame, and largest inflated compressed term, the worker accepts, in "
        f"bytes (default {DEFAULT_MAX_FRAME_SIZE})",
    )
    parser.add_argument(
        "--spin",
        type=float,
        default=0.0,
        help="seconds to poll for the next request before blocking (default 0: a worker "
        "started by hand, e.g. from Erlang, does not spin; corral's Port passes its spin "
        "option, 0.0002 by default)",
    )
    parser.add_argument("--shm-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--shm-threshold", type=int, default=1 << 20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.handler is None and not args.clients_dir:
        parser.error("the handler is required, as module:Handler")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Run a worker until its port closes our stdin or says STOP."""
    args = _parse(argv)
    if args.clients_dir:
        print(clients_dir())
        return
    in_fd, out_fd = _protect_stdio()
    wire = Wire(in_fd, out_fd, args.max_frame_size)
    wire.spin = max(0.0, args.spin)
    if args.erlang:
        from corral.port.erlang import serve_erlang

        serve_erlang(wire, args.handler, crash_on_error=args.crash_on_error)
        return
    store = None
    if args.shm_fd is not None:
        from corral.port.shm import SharedMemoryStore

        store = SharedMemoryStore(args.shm_fd)
    codec = Codec(store=store, shm_threshold=args.shm_threshold, where="corral.port worker")
    server = _Server(wire, codec, crash_on_error=args.crash_on_error)
    server.handshake(args.handler)
    server.serve()
    server.terminate()
