"""Erlang mode: ``python -m corral.port --erlang MODULE:HANDLER``.

The same worker, speaking Erlang's External Term Format over ``{packet, 4}`` on its stdin
and stdout, so an Erlang or Elixir program can drive it::

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
                               Message}}`` if the handler raised (binaries)
``{cast, Msg}``                nothing; ``handle_cast(Msg)``
``stop``                       nothing; ``terminate()`` runs and the worker exits 0
any other term ``T``           ``handle_call(T)``'s result, or ``{error, {Type,
                               Message}}`` if the handler raised
=============================  ====================================================

Terms map to Python values as ``corral.port.etf`` documents (atoms are ``Atom``, a ``str``;
binaries are ``bytes``; ``nil`` is ``None``; ndarrays travel as ``{ndarray, Dtype, Shape,
Data}``). A frame that is not a valid term makes the worker write why to stderr and exit
with status 3, which ``exit_status`` reports; closing the port (EOF) makes it exit 0.
"""

from __future__ import annotations

import inspect
import sys
from typing import TYPE_CHECKING

from corral.port import etf
from corral.port.protocol import EXIT_PROTOCOL_ERROR, EXIT_SETUP_FAILED, describe_exception

if TYPE_CHECKING:
    from corral.port.worker import _Wire

__all__ = ["serve_erlang"]

_CALL = etf.Atom("call")
_CAST = etf.Atom("cast")
_STOP = etf.Atom("stop")
_REPLY = etf.Atom("reply")
_ERROR = etf.Atom("error")


def _error_term(exc: BaseException) -> tuple[bytes, bytes]:
    info = describe_exception(exc)
    return info["type"].encode(), info["message"].encode()


def serve_erlang(wire: _Wire, spec: str, *, crash_on_error: bool) -> None:
    """Load the handler, run its setup, then serve terms until EOF or ``stop``."""
    from corral.port.worker import _die, _hook, load_handler

    try:
        handler = load_handler(spec)
        setup = _hook(handler, "setup")
        if setup is not None:
            setup()
    except Exception as exc:
        print(describe_exception(exc)["traceback"], file=sys.stderr, end="", flush=True)
        raise SystemExit(EXIT_SETUP_FAILED) from None
    handle_call = _hook(handler, "handle_call")
    handle_cast = _hook(handler, "handle_cast")
    assert handle_call is not None
    if inspect.iscoroutinefunction(handle_call):
        _die("async handlers are not supported in Erlang mode", EXIT_SETUP_FAILED)

    def answer(call: object) -> tuple[bool, object]:
        try:
            return True, handle_call(call)
        except Exception as exc:
            if crash_on_error:
                raise
            return False, _error_term(exc)

    while True:
        frames = wire.read_frames()
        if frames is None:
            break
        replies: list[bytes] = []
        for frame in frames:
            try:
                term = etf.decode(frame)
            except etf.EtfError as exc:
                _die(f"undecodable term: {exc}", EXIT_PROTOCOL_ERROR)
            if isinstance(term, etf.Atom) and term == _STOP:
                if replies:
                    wire.write(replies)
                terminate = _hook(handler, "terminate")
                if terminate is not None:
                    terminate()
                return
            head = term[0] if isinstance(term, tuple) and term else None
            if (
                isinstance(term, tuple)
                and len(term) == 2
                and isinstance(head, etf.Atom)
                and head == _CAST
            ):
                if handle_cast is not None:
                    handle_cast(term[1])
                continue
            if (
                isinstance(term, tuple)
                and len(term) == 3
                and isinstance(head, etf.Atom)
                and head == _CALL
            ):
                ok, result = answer(term[2])
                reply: object = (_REPLY if ok else _ERROR, term[1], result)
            else:
                ok, result = answer(term)
                reply = result if ok else (_ERROR, result)
            try:
                replies.append(etf.encode(reply))
            except (TypeError, ValueError) as exc:
                replies.append(etf.encode((_ERROR, _error_term(exc))))
        if replies:
            wire.write(replies)
    terminate = _hook(handler, "terminate")
    if terminate is not None:
        terminate()
