"""The worker's serve loop, one for both dialects: ``serve(wire, dialect, handler)``.

The wire (``corral.port.wire``) carries frames; a ``Dialect`` says what the frames mean:
``corral.port.msgpack_dialect`` speaks corral's own protocol to a ``Port``,
``corral.port.erlang`` speaks Erlang's External Term Format to an Erlang or Elixir program.
A dialect turns each frame into a ``Request`` — a call, a cast or a stop — and encodes the
answer to a call; this module decides what runs when, the same way for both:

- with a plain ``handle_call`` the worker answers requests one at a time, in order, and
  writes the replies to all the frames of one read in one system call;
- with an ``async def handle_call`` (msgpack only: Erlang mode refuses one at start) it runs
  calls concurrently on an event loop and replies in completion order; a cast is awaited
  before the next frame is read;
- if ``handle_call`` raises, the caller gets the dialect's error reply and the worker goes
  on; with ``crash_on_error`` the worker exits with status 1 instead;
- a result the dialect cannot encode becomes an error reply for that call (a ``TypeError``
  or whatever the encoder raised), with or without ``crash_on_error``: the handler did not
  raise;
- a cast goes to ``corral.port.hooks.deliver_cast``, which logs a raise and goes on (or
  exits, status 1, with ``crash_on_error``);
- at EOF, or after ``STOP``, in-flight calls finish, their replies are written, and
  ``terminate()`` runs (awaited if async).

A frame that is not a valid request ends the worker with status 3: the dialect writes why
to stderr (``corral.port.hooks.die``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias

from corral.port.hooks import (
    deliver_cast,
    deliver_cast_async,
    die,
    hook,
    run_awaitable,
    terminate_handler,
)
from corral.port.protocol import describe_exception

if TYPE_CHECKING:
    import asyncio

    from corral.port.wire import Wire

__all__ = ["CALL", "CAST", "STOP", "Dialect", "Request", "serve"]

Kind: TypeAlias = Literal["call", "cast", "stop"]
CALL: Final = "call"
CAST: Final = "cast"
STOP: Final = "stop"

Request: TypeAlias = tuple[Kind, object, object]
"""``(kind, ref, body)``, what a dialect makes of one frame:

- ``(CALL, ref, body)``: ``body`` goes to ``handle_call``; ``ref`` is the dialect's own,
  to address the reply (a call id, an Erlang ref);
- ``(CAST, None, body)``: ``body`` goes to ``handle_cast``; no answer;
- ``(STOP, None, None)``: answer what is in flight, run ``terminate()``, exit 0.

A plain tuple, not a class: the worker makes one per request on its hot path.
"""


class Dialect(Protocol):
    """What the frames on a worker's wire mean. Every method runs in the worker's one
    thread; ``parse`` and ``start`` end the worker (``hooks.die``) instead of returning
    when the other side broke the protocol."""

    def start(self, wire: Wire, spec: str) -> object:
        """Load the handler ``spec`` and run its setup, with whatever handshake the dialect
        has; the ready handler. A handler that cannot be set up ends the worker with
        status 2, reported as the dialect reports it."""
        ...

    def parse(self, frame: bytes | memoryview) -> Request:
        """The request in one frame."""
        ...

    def reply(self, ref: object, result: object) -> bytes:
        """The frame that answers the call ``ref`` with ``result``; raises if ``result``
        has no form in this dialect."""
        ...

    def error(self, ref: object, exc: BaseException) -> bytes:
        """The frame that answers the call ``ref`` with the error ``exc``; never raises."""
        ...


def serve(wire: Wire, dialect: Dialect, handler: object, *, crash_on_error: bool = False) -> None:
    """Serve requests from ``wire`` to ``handler`` (as ``dialect.start`` returned it) until
    EOF or ``STOP``, then run its ``terminate()``. Blocks; the module docstring says what
    runs when and what a raising hook does."""
    session = _Session(wire, dialect, handler, crash_on_error=crash_on_error)
    if inspect.iscoroutinefunction(session.handle_call):
        run_awaitable(session.serve_concurrently())
    else:
        session.serve_in_order()
    terminate_handler(handler)


class _Session:
    def __init__(
        self, wire: Wire, dialect: Dialect, handler: object, *, crash_on_error: bool
    ) -> None:
        handle_call = hook(handler, "handle_call")
        if handle_call is None:
            raise TypeError(f"corral.port: {handler!r} has no handle_call")
        self.handle_call: Callable[..., object] = handle_call
        self.handle_cast = hook(handler, "handle_cast")
        self.wire = wire
        self.parse = dialect.parse
        self.reply = dialect.reply
        self.error = dialect.error
        self.crash_on_error = crash_on_error

    def encode(self, ref: object, result: object) -> bytes:
        try:
            return self.reply(ref, result)
        except Exception as exc:  # the result has no form on this wire
            return self.error(ref, exc)

    # -- a plain handle_call: in order, replies batched per read ---------------------------

    def serve_in_order(self) -> None:
        read_frames, write, parse = self.wire.read_frames, self.wire.write, self.parse
        handle_call = self.handle_call
        while (frames := read_frames()) is not None:
            replies: list[bytes] = []
            for frame in frames:
                kind, ref, body = parse(frame)
                if kind == CALL:
                    try:
                        result = handle_call(body)
                    except Exception as exc:
                        if self.crash_on_error:
                            raise  # ends the worker with the traceback, status 1
                        replies.append(self.error(ref, exc))
                    else:
                        replies.append(self.encode(ref, result))
                elif kind == CAST:
                    deliver_cast(self.handle_cast, body, crash_on_error=self.crash_on_error)
                else:
                    if replies:
                        write(replies)
                    return
            if replies:
                write(replies)

    # -- an async handle_call: concurrent, replies in completion order ---------------------

    async def serve_concurrently(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        wire, parse = self.wire, self.parse
        tasks: set[asyncio.Task[None]] = set()
        inbox: asyncio.Queue[list[bytes | memoryview] | None] = asyncio.Queue()

        def on_readable() -> None:
            try:
                frames = wire.read_frames()
            except BlockingIOError:
                return
            inbox.put_nowait(frames)
            if frames is None:
                loop.remove_reader(wire.in_fd)

        os.set_blocking(wire.in_fd, False)
        loop.add_reader(wire.in_fd, on_readable)
        try:
            stopped = False
            while not stopped and (frames := await inbox.get()) is not None:
                for frame in frames:
                    kind, ref, body = parse(frame)
                    if kind == CALL:
                        task = loop.create_task(self.answer(ref, body))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif kind == CAST:
                        await deliver_cast_async(
                            self.handle_cast, body, crash_on_error=self.crash_on_error
                        )
                    else:
                        stopped = True
                        break
            if tasks:
                await asyncio.wait(tasks)
        finally:
            loop.remove_reader(wire.in_fd)

    async def answer(self, ref: object, body: object) -> None:
        try:
            result = self.handle_call(body)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            if self.crash_on_error:
                die(describe_exception(exc)["traceback"], 1)
            reply = self.error(ref, exc)
        else:
            reply = self.encode(ref, result)
        self.wire.write([reply])
