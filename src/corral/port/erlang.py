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

The hooks follow the same rules as in msgpack mode (``corral.port.hooks``): ``setup``,
``handle_cast`` and ``terminate`` may be ``async def`` and are awaited; a ``handle_cast``
that raises is logged to stderr and the worker goes on (with ``--crash-on-error`` it exits
with status 1, as a raising ``handle_call`` does). ``handle_call`` must be a plain function
here: the worker answers one term at a time, in order.

Terms map to Python values as ``corral.port.etf`` documents (atoms are ``Atom``, a ``str``;
binaries are ``bytes``; ``nil`` is ``None``; ndarrays travel as ``{ndarray, Dtype, Shape,
Data}``). A compressed term may inflate to at most ``--max-frame-size`` bytes. A frame that
is not a valid term makes the worker write why to stderr and exit with status 3, which
``exit_status`` reports; closing the port (EOF) makes it exit 0. docs/ports.md lists every
exit status.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from corral.port import etf
from corral.port.hooks import (
    SetupFailed,
    deliver_cast,
    die,
    hook,
    log_exception,
    setup_handler,
    terminate_handler,
)
from corral.port.protocol import EXIT_PROTOCOL_ERROR, EXIT_SETUP_FAILED, describe_exception

if TYPE_CHECKING:
    from collections.abc import Callable

    from corral.port.worker import Wire

__all__ = ["error_term", "serve_erlang"]

_CALL = etf.Atom("call")
_CAST = etf.Atom("cast")
_STOP = etf.Atom("stop")
_REPLY = etf.Atom("reply")
_ERROR = etf.Atom("error")


def error_term(exc: BaseException) -> tuple[bytes, bytes, bytes]:
    """``{Type, Message, Traceback}``, three binaries, for an exception sent to Erlang."""
    info = describe_exception(exc)
    return info["type"].encode(), info["message"].encode(), info["traceback"].encode()


def serve_erlang(wire: Wire, spec: str, *, crash_on_error: bool) -> None:
    """Load the handler, run its setup, then serve terms until EOF or ``stop``."""
    try:
        handler = setup_handler(spec, {})
    except SetupFailed as failed:
        log_exception(failed.cause)
        raise SystemExit(EXIT_SETUP_FAILED) from None
    handle_call = hook(handler, "handle_call")
    assert handle_call is not None  # load_handler checked it
    if inspect.iscoroutinefunction(handle_call):
        die(
            f"{spec}: handle_call must be a plain function in Erlang mode, which answers "
            "one term at a time; got an async def",
            EXIT_SETUP_FAILED,
        )
    handle_cast = hook(handler, "handle_cast")
    max_inflated_size = wire.decoder.max_frame_size

    def answer(call: object) -> tuple[bool, object]:
        try:
            return True, handle_call(call)
        except Exception as exc:
            if crash_on_error:
                raise
            return False, error_term(exc)

    while True:
        frames = wire.read_frames()
        if frames is None:
            break
        replies: list[bytes] = []
        for frame in frames:
            try:
                term = etf.decode(frame, max_inflated_size=max_inflated_size)
            except etf.EtfError as exc:
                die(f"undecodable term: {exc}", EXIT_PROTOCOL_ERROR)
            if isinstance(term, etf.Atom) and term == _STOP:
                if replies:
                    wire.write(replies)
                terminate_handler(handler)
                return
            reply = _serve_term(term, answer, handle_cast, crash_on_error=crash_on_error)
            if reply is not None:
                replies.append(reply)
        if replies:
            wire.write(replies)
    terminate_handler(handler)


def _serve_term(
    term: object,
    answer: Callable[[object], tuple[bool, object]],
    handle_cast: Callable[..., object] | None,
    *,
    crash_on_error: bool,
) -> bytes | None:
    """The encoded reply to one request term, or None for a cast."""
    head = term[0] if isinstance(term, tuple) and term else None
    size = len(term) if isinstance(term, tuple) else 0
    if isinstance(head, etf.Atom) and head == _CAST and size == 2:
        deliver_cast(handle_cast, term[1], crash_on_error=crash_on_error)  # type: ignore[index]
        return None
    if isinstance(head, etf.Atom) and head == _CALL and size == 3:
        ref: object = term[1]  # type: ignore[index]
        ok, result = answer(term[2])  # type: ignore[index]

        def wrap(ok: bool, result: object) -> object:
            return (_REPLY if ok else _ERROR, ref, result)
    else:
        ok, result = answer(term)

        def wrap(ok: bool, result: object) -> object:
            return result if ok else (_ERROR, result)

    try:
        return etf.encode(wrap(ok, result))
    except (TypeError, ValueError) as exc:  # the result has no Erlang form
        return etf.encode(wrap(False, error_term(exc)))
