"""What the workers of ``benchmarks/ports.py`` run: port handlers and their ``Pipe`` twins.

Each corral handler has a ``multiprocessing`` counterpart doing the same work, so the two
sides of a comparison differ only in the transport. The port's worker imports this module
by name (``ports.py`` puts ``benchmarks/`` on its ``PYTHONPATH``); the ``Pipe`` workers get
these functions as their ``Process`` targets.

numpy is imported inside ``Model.setup`` and ``pipe_model``, not at the top, so that the
crash case charges a fresh worker for the import, as a real model server would pay it.
"""

from __future__ import annotations

import os
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["PID", "Copy", "Echo", "Model", "pipe_echo", "pipe_model"]

PID = "pid"
"""The message every handler answers with its worker's OS process id."""

HIDDEN = 256
"""Width of the model's hidden layer."""

OUTPUTS = 10
"""Width of the model's output."""


class Echo:
    """Replies to every call with the message itself (``PID``: the worker's OS pid)."""

    def handle_call(self, msg: object) -> object:
        if isinstance(msg, str) and msg == PID:
            return os.getpid()
        return msg


class Copy:
    """Replies to an array with a copy of it: a new array, as a handler computing its
    result would return, rather than (a view of) the one it received
    (``PID``: the worker's OS pid)."""

    def handle_call(self, msg: object) -> object:
        if isinstance(msg, str) and msg == PID:
            return os.getpid()
        import numpy as np

        return np.array(msg, copy=True)


class _Mlp:
    """A two-layer perceptron with fixed random weights: the "small model"."""

    def __init__(self, inputs: int) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        self.w1 = rng.standard_normal((inputs, HIDDEN), dtype=np.float32)
        self.b1 = np.zeros(HIDDEN, dtype=np.float32)
        self.w2 = rng.standard_normal((HIDDEN, OUTPUTS), dtype=np.float32)
        self.b2 = np.zeros(OUTPUTS, dtype=np.float32)

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.floating[Any]]:
        hidden = x @ self.w1 + self.b1
        hidden[hidden < 0] = 0
        return hidden @ self.w2 + self.b2


class Model:
    """Imports numpy and builds a small model in ``setup``; a call with an ``(n, inputs)``
    float32 array returns the model's ``(n, 10)`` output (``PID``: the worker's OS pid)."""

    model: _Mlp

    def setup(self, inputs: int = 64) -> None:
        self.model = _Mlp(inputs)

    def handle_call(self, msg: object) -> object:
        if isinstance(msg, str) and msg == PID:
            return os.getpid()
        return self.model(msg)  # type: ignore[arg-type]


def pipe_echo(conn: Connection) -> None:
    """The ``Pipe`` twin of ``Echo``: send back whatever arrives, until ``None``."""
    recv, send = conn.recv, conn.send
    while True:
        msg = recv()
        if msg is None:
            return
        send(msg)


def pipe_model(conn: Connection, inputs: int) -> None:
    """The ``Pipe`` twin of ``Model``: build the model, then answer arrays until ``None``."""
    model = _Mlp(inputs)
    recv, send = conn.recv, conn.send
    while True:
        msg = recv()
        if msg is None:
            return
        send(model(msg))
