"""Erlang mode: ``python -m corral.port --erlang MODULE:HANDLER``.

The same worker, speaking Erlang's External Term Format over ``{packet, 4}`` on its stdin
and stdout, so an Erlang or Elixir program can drive it. ``corral_port.erl`` and
``corral_port.ex`` (``python -m corral.port --clients-dir``) wrap this in a gen_server; by
hand it is::

    Port = open_port({spawn, "python3 -m corral.port --erlang mymodel:Model"},
                     [{packet, 4}, binary, exit_status]),
    port_command(Port, term_to_binary({call, make_ref(), {predict, [1.0, 2.0]}})),
    receive {Port, {data, Bin}} -> binary_to_term(Bin) end.

There is no handshake: the handler's ``setup()`` runs with no arguments before the first
term is read. Each term is one request:

=============================  ====================================================
the program sends              the worker answers
=============================  ====================================================
``{call, Ref, Msg}``           ``{reply, Ref, Result}``, or ``{error, Ref, {Type,
                               Message, Traceback}}`` (three binaries) if the handler
                               raised or its result has no Erlang form
``{cast, Msg}``                nothing; ``handle_cast(Msg)``
``stop``                       nothing; ``terminate()`` runs and the worker exits 0
any other term ``T``           ``handle_call(T)``'s result, or ``{error, {Type,
                               Message, Traceback}}`` if the handler raised
=============================  ====================================================

``ErlangDialect`` is this mode's ``corral.port.serve.Dialect``: the serve loop is the
msgpack mode's own, so the hooks follow the same rules (``corral.port.hooks``,
``corral.port.serve``): ``setup``, ``handle_cast`` and ``terminate`` may be ``async def``
and are awaited; a ``handle_cast`` that raises is logged to stderr and the worker goes on
(with ``--crash-on-error`` it exits with status 1, as a raising ``handle_call`` does).
``handle_call`` must be a plain function here (an ``async def`` one ends the worker with
status 2 at start): the worker answers one term at a time, in order.

Terms map to Python values as ``corral.port.etf`` documents (atoms are ``Atom``, a ``str``;
binaries are ``bytes``; ``nil`` is ``None``; ndarrays travel as ``{ndarray, Dtype, Shape,
Data}``). A compressed term may inflate to at most ``--max-frame-size`` bytes. A frame that
is not a valid term makes the worker write why to stderr and exit with status 3, which
``exit_status`` reports; closing the port (EOF) makes it exit 0. docs/ports.md lists every
exit status.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Final

from corral.port import etf
from corral.port.hooks import SetupFailed, die, hook, log_exception, setup_handler
from corral.port.protocol import EXIT_PROTOCOL_ERROR, EXIT_SETUP_FAILED, describe_exception
from corral.port.serve import CALL, CAST, STOP, Request

if TYPE_CHECKING:
    from corral.port.wire import Wire

__all__ = ["ErlangDialect", "error_term"]

_CALL = etf.Atom("call")
_CAST = etf.Atom("cast")
_STOP = etf.Atom("stop")
_REPLY = etf.Atom("reply")
_ERROR = etf.Atom("error")
_BARE: Final = object()
"""The ``ref`` of a call that came as a bare term: its reply is bare too."""


def error_term(exc: BaseException) -> tuple[bytes, bytes, bytes]:
    """``{Type, Message, Traceback}``, three binaries, for an exception sent to Erlang."""
    info = describe_exception(exc)
    return info["type"].encode(), info["message"].encode(), info["traceback"].encode()


class ErlangDialect:
    """Erlang's External Term Format; a ``corral.port.serve.Dialect``. A compressed term
    may inflate to at most ``max_inflated_size`` bytes."""

    def __init__(self, max_inflated_size: int) -> None:
        self.max_inflated_size = max_inflated_size

    def start(self, wire: Wire, spec: str) -> object:
        """No handshake: load the handler and run ``setup()`` with no arguments. A failure
        writes its traceback to stderr and exits with status 2, as an ``async def
        handle_call`` does."""
        try:
            handler = setup_handler(spec, {})
        except SetupFailed as failed:
            log_exception(failed.cause)
            raise SystemExit(EXIT_SETUP_FAILED) from None
        if inspect.iscoroutinefunction(hook(handler, "handle_call")):
            die(
                f"{spec}: handle_call must be a plain function in Erlang mode, which answers "
                "one term at a time; got an async def",
                EXIT_SETUP_FAILED,
            )
        return handler

    def parse(self, frame: bytes | memoryview) -> Request:
        """``{call, Ref, Msg}``, ``{cast, Msg}``, ``stop``, or any other term as a call."""
        try:
            term = etf.decode(frame, max_inflated_size=self.max_inflated_size)
        except etf.EtfError as exc:
            die(f"undecodable term: {exc}", EXIT_PROTOCOL_ERROR)
        if isinstance(term, tuple) and term and isinstance(term[0], etf.Atom):
            if term[0] == _CALL and len(term) == 3:
                return (CALL, term[1], term[2])
            if term[0] == _CAST and len(term) == 2:
                return (CAST, None, term[1])
        elif isinstance(term, etf.Atom) and term == _STOP:
            return (STOP, None, None)
        return (CALL, _BARE, term)

    def reply(self, ref: object, result: object) -> bytes:
        """``{reply, Ref, Result}``, or ``Result`` itself for a bare term; ``TypeError`` or
        ``ValueError`` if ``result`` has no Erlang form."""
        if ref is _BARE:
            return etf.encode(result)
        return etf.encode((_REPLY, ref, result))

    def error(self, ref: object, exc: BaseException) -> bytes:
        """``{error, Ref, {Type, Message, Traceback}}``, or ``{error, {...}}`` for a bare
        term."""
        if ref is _BARE:
            return etf.encode((_ERROR, error_term(exc)))
        return etf.encode((_ERROR, ref, error_term(exc)))
