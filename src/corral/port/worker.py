"""The worker: ``python -m corral.port [--erlang] MODULE:HANDLER``.

A worker is the OS process that runs a handler; this module is its program. It imports
``MODULE``, builds ``HANDLER`` (a class, or any callable returning the handler object) and
serves frames from its stdin, writing replies to its stdout:

- ``setup(**args)`` runs once, with the ``args`` the port was given (optional);
- ``handle_call(msg)`` answers a call; its return value is the reply. If it raises, the
  caller gets ``PortCallError`` with this traceback and the worker goes on; with
  ``--crash-on-error`` the worker exits instead (status 1), as "let it crash" wants;
- ``handle_cast(msg)`` takes a cast (optional). If it raises, the traceback goes to stderr
  (the port's log) and the worker goes on; with ``--crash-on-error`` it exits (status 1);
- ``terminate()`` runs on a graceful stop (optional).

The pieces, each in its own module: ``corral.port.wire`` (frames on the real stdin and
stdout, moved out of the handler's way before it is imported), ``corral.port.hooks`` (the
handler: loading it and calling its hooks, plain or ``async def``), a dialect
(``corral.port.msgpack_dialect`` by default; ``corral.port.erlang`` with ``--erlang``, so
an Erlang or Elixir program can drive the worker) and ``corral.port.serve``, the one serve
loop both dialects share. ``--help`` lists the exit statuses.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Final

from corral.port.frames import DEFAULT_MAX_FRAME_SIZE
from corral.port.hooks import Handler
from corral.port.serve import Dialect, serve
from corral.port.wire import Wire, protect_stdio

__all__ = ["Handler", "clients_dir", "main"]


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
    in_fd, out_fd = protect_stdio()
    wire = Wire(in_fd, out_fd, args.max_frame_size, spin=args.spin)
    dialect = _dialect(args)
    handler = dialect.start(wire, args.handler)
    serve(wire, dialect, handler, crash_on_error=args.crash_on_error)


def _dialect(args: argparse.Namespace) -> Dialect:
    if args.erlang:
        from corral.port.erlang import ErlangDialect

        return ErlangDialect(max_inflated_size=args.max_frame_size)
    from corral.port.codec import Codec
    from corral.port.msgpack_dialect import MsgpackDialect

    store = None
    if args.shm_fd is not None:
        from corral.port.shm import SharedMemoryStore

        store = SharedMemoryStore(args.shm_fd)
    codec = Codec(store=store, shm_threshold=args.shm_threshold, where="corral.port worker")
    return MsgpackDialect(codec)
