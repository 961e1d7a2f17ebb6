"""The msgpack dialect: how a worker speaks to a corral ``Port``.

Frames hold the msgpack arrays of ``corral.port.protocol``, encoded by a ``Codec`` (numpy
arrays as extensions, large ones through shared memory). The handshake: the port sends
``[INIT, version, args]``; the worker runs ``setup(**args)`` and answers ``[READY, version,
{"pid": ...}]``, or ``[INIT_FAILED, version, error]`` and exits with status 2 if the
versions differ or the handler could not be imported, built or set up (its traceback also
goes to stderr). EOF before ``INIT`` exits 0. Anything else first, a message before
``READY`` was sent, an undecodable frame or an unknown message ends the worker with status
3 (``EXIT_PROTOCOL_ERROR``), its reason on stderr.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Final, NoReturn

from corral.errors import ProtocolError
from corral.port.hooks import SetupFailed, die, setup_handler
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
from corral.port.serve import CALL as CALL_REQUEST
from corral.port.serve import CAST as CAST_REQUEST
from corral.port.serve import STOP as STOP_KIND
from corral.port.serve import Request

if TYPE_CHECKING:
    from corral.port.codec import Codec
    from corral.port.wire import Wire

__all__ = ["MsgpackDialect"]


class MsgpackDialect:
    """corral's own protocol, encoded by ``codec``; a ``corral.port.serve.Dialect``."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec

    def start(self, wire: Wire, spec: str) -> object:
        """The handshake (see the module docstring); the ready handler."""
        frames: list[bytes | memoryview] = []
        while not frames:
            got = wire.read_frames()
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
                wire,
                ValueError(
                    f"protocol version mismatch: port speaks {version}, "
                    f"worker speaks {PROTOCOL_VERSION}"
                ),
            )
        if not isinstance(args, dict):
            die(f"INIT args must be a map; got {args!r}", EXIT_PROTOCOL_ERROR)
        try:
            handler = setup_handler(spec, args)
        except SetupFailed as failed:
            self._init_failed(wire, failed.cause)
        wire.write([self.codec.dumps([READY, PROTOCOL_VERSION, {"pid": os.getpid()}])])
        if len(frames) > 1:
            die("a message came before READY was sent", EXIT_PROTOCOL_ERROR)
        return handler

    def _init_failed(self, wire: Wire, exc: BaseException) -> NoReturn:
        info = describe_exception(exc)
        print(info["traceback"], file=sys.stderr, end="", flush=True)
        wire.write([self.codec.dumps([INIT_FAILED, PROTOCOL_VERSION, info])])
        os._exit(EXIT_SETUP_FAILED)

    def _decode(self, frame: bytes | memoryview) -> object:
        try:
            return self.codec.loads(frame)
        except ProtocolError as exc:
            die(str(exc), EXIT_PROTOCOL_ERROR)

    def parse(self, frame: bytes | memoryview) -> Request:
        """``[CALL, id, msg]``, ``[CAST, msg]`` or ``[STOP]``."""
        try:
            message = self.codec.loads(frame)
        except ProtocolError as exc:
            die(str(exc), EXIT_PROTOCOL_ERROR)
        if type(message) is list and message:
            kind = message[0]
            if kind == CALL and len(message) == 3:
                return (CALL_REQUEST, message[1], message[2])
            if kind == CAST and len(message) == 2:
                return (CAST_REQUEST, None, message[1])
            if kind == STOP:
                return STOP_REQUEST
        return _unknown(message)

    def reply(self, ref: object, result: object) -> bytes:
        """``[REPLY, id, result]``; ``TypeError`` (or the codec's error) if ``result``
        cannot be encoded."""
        return self.codec.dumps([REPLY, ref, result])

    def error(self, ref: object, exc: BaseException) -> bytes:
        """``[ERROR, id, {"type", "message", "traceback"}]``."""
        return self.codec.dumps([ERROR, ref, describe_exception(exc)])


STOP_REQUEST: Final[Request] = (STOP_KIND, None, None)


def _unknown(message: object) -> NoReturn:
    die(f"unknown message {message!r}", EXIT_PROTOCOL_ERROR)
