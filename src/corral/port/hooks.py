"""A handler and its hooks, called the same way whichever dialect the worker speaks.

A handler is a class (or a zero-argument factory) named ``module:Handler``; ``Handler`` is
an optional base class for it. Both dialects, msgpack (``corral.port.msgpack_dialect``) and
Erlang (``corral.port.erlang``), load and set up a handler through these functions, and
the one serve loop (``corral.port.serve``) casts to it and terminates it through them, so
the two modes cannot drift apart on what a hook may be or what happens when one raises:

- any hook may be a plain function or a coroutine function; an awaitable result is run to
  completion before the worker reads on (``run_hook``);
- an exception from ``handle_cast`` is written to stderr (the port's log) with its
  traceback and the worker goes on; with ``crash_on_error`` it ends the worker, status 1;
- an exception from the handler's import, construction or ``setup`` is ``SetupFailed``;
  the caller reports it in its own protocol and exits with ``EXIT_SETUP_FAILED`` (2).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import NoReturn

from corral.port.protocol import describe_exception

__all__ = [
    "Handler",
    "SetupFailed",
    "deliver_cast",
    "deliver_cast_async",
    "die",
    "hook",
    "load_handler",
    "log_exception",
    "run_hook",
    "setup_handler",
    "terminate_handler",
]


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


class SetupFailed(Exception):
    """The handler could not be imported, built or set up; ``cause`` is why."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def load_handler(spec: str) -> object:
    """Import ``module:attr`` (``attr`` may be dotted) and build the handler from it."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"corral.port: handler must look like 'module:Handler'; got {spec!r}")
    target: object = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise TypeError(f"corral.port: {spec} is not a class or factory; got {target!r}")
    handler = target()
    if not callable(getattr(handler, "handle_call", None)):
        raise TypeError(f"corral.port: {spec} built {handler!r}, which has no handle_call")
    return handler


def hook(handler: object, name: str) -> Callable[..., object] | None:
    """The handler's hook ``name``, or None when it has none."""
    found = getattr(handler, name, None)
    return found if callable(found) else None


def run_hook(function: Callable[..., object], *args: object, **kwargs: object) -> object:
    """Call a hook; when it returns an awaitable (an ``async def`` hook), run that to
    completion on a fresh event loop and return its result. Blocks until done."""
    result = function(*args, **kwargs)
    if inspect.isawaitable(result):
        return run_awaitable(result)
    return result


def run_awaitable(awaitable: object) -> object:
    """Run an awaitable to completion on a fresh event loop; asyncio is imported only by
    workers whose handlers are async, to keep cold starts short."""
    import asyncio

    async def wait() -> object:
        return await awaitable  # type: ignore[misc]

    return asyncio.run(wait())


def setup_handler(spec: str, args: Mapping[str, object]) -> object:
    """Load the handler and run its ``setup(**args)`` (awaited if async).

    Raises ``SetupFailed`` wrapping whatever the import, construction or setup raised.
    """
    try:
        handler = load_handler(spec)
        setup = hook(handler, "setup")
        if setup is not None:
            run_hook(setup, **args)
    except Exception as exc:
        raise SetupFailed(exc) from exc
    return handler


def log_exception(exc: BaseException) -> None:
    """Write ``exc``'s traceback to stderr, which the port logs."""
    print(describe_exception(exc)["traceback"], file=sys.stderr, end="", flush=True)


def deliver_cast(
    handle_cast: Callable[..., object] | None, body: object, *, crash_on_error: bool
) -> None:
    """Give a cast to ``handle_cast`` (awaited if async); see the module docstring for
    what happens when it raises."""
    if handle_cast is None:
        return
    try:
        run_hook(handle_cast, body)
    except Exception as exc:
        if crash_on_error:
            raise
        log_exception(exc)


async def deliver_cast_async(
    handle_cast: Callable[..., object] | None, body: object, *, crash_on_error: bool
) -> None:
    """``deliver_cast`` for a worker already inside an event loop."""
    if handle_cast is None:
        return
    try:
        result = handle_cast(body)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:
        if crash_on_error:
            die(describe_exception(exc)["traceback"], 1)
        log_exception(exc)


def terminate_handler(handler: object) -> None:
    """Run the handler's ``terminate()`` (awaited if async), if it has one."""
    terminate = hook(handler, "terminate")
    if terminate is not None:
        run_hook(terminate)


def die(message: str, status: int) -> NoReturn:
    """Write ``message`` to stderr and end the worker at once with ``status``."""
    print(f"corral.port worker: {message}", file=sys.stderr, flush=True)
    os._exit(status)
