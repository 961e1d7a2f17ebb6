"""A cut batch on its way through partitions (``Job``), what a queued request carries, and
how a batch's output is shared out to its requests (``split_output``, pure).

The server queues each request with a ``Payload`` (its input, its caller's future, whether
it is one sample, its deadline budget); a ``Job`` holds a cut batch's stacked inputs and its
requests' futures, and counts the attempts to run it and the partition crashes it has been
through (a job split off a crashed one inherits the count).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from operator import attrgetter

import numpy as np

from corral.serving.policy import Batch, Request
from corral.serving.records import Result

__all__ = ["Job", "Payload", "arrived", "new_result", "payload_of", "split_output"]

Payload = tuple[np.ndarray, "asyncio.Future[Result]", bool, float | None]
"""What a queued request carries: input, the caller's future, one sample?, deadline budget."""

payload_of: Callable[[Request], Payload] = attrgetter("payload")
"""``request.payload`` as a ``Payload`` (a C getter: no ``typing.cast`` call on the hot path)."""

arrived: Callable[[Request], float] = attrgetter("arrived")
"""``request.arrived`` (for ``np.fromiter(map(arrived, requests), ...)``)."""

new_result = tuple.__new__
"""Builds a ``Result`` without its Python-level ``__new__`` (one per request)."""


class Job:
    """A cut batch on its way through partitions: ``futs`` are its requests' futures (in
    order), ``single`` whether every request is one sample (row i answers request i);
    ``started`` is when its first attempt began, ``start`` when its current one did;
    ``crashes`` how many partition crashes its requests have been through; ``timer`` the
    loop timer of its earliest deadline. Building one stacks the inputs, which raises if they
    cannot be stacked."""

    __slots__ = (
        "attempts",
        "batch",
        "crashes",
        "futs",
        "inputs",
        "single",
        "start",
        "started",
        "timer",
    )

    def __init__(self, batch: Batch, *, crashes: int = 0) -> None:
        self.batch = batch
        # One C-level transposition of the payloads: inputs, futures, single flags.
        xs, futs, singles, _ = zip(*map(payload_of, batch.requests), strict=True)
        self.futs: tuple[asyncio.Future[Result], ...] = futs
        self.single = all(singles)
        self.inputs = _stack(batch, xs, singles, self.single)
        self.attempts = 0
        self.crashes = crashes
        self.started = 0.0
        self.start = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def live(self) -> list[Request]:
        """The requests whose callers still wait (not answered, expired or cancelled)."""
        return [r for r, f in zip(self.batch.requests, self.futs, strict=True) if not f.done()]

    def close(self) -> None:
        """The job is over (answered, failed or split): stop its deadline timer."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _stack(
    batch: Batch, xs: tuple[np.ndarray, ...], singles: tuple[bool, ...], single: bool
) -> np.ndarray:
    """The batch's inputs as one array, padded with zero rows to ``batch.padded_size``."""
    if single and batch.pad == 0:
        # np.array builds the same array as np.stack for equal shapes, ~3x faster; the
        # server queues requests of different shapes apart, so they never meet here.
        out = np.array(xs)
        if out.dtype.kind == "O" or out.ndim != xs[0].ndim + 1:
            raise ValueError(f"cannot stack inputs of shapes {sorted({x.shape for x in xs})}")
        return out
    first = xs[0]
    shape = first.shape if singles[0] else first.shape[1:]
    out = np.zeros((batch.padded_size, *shape), dtype=first.dtype)
    offset = 0
    for request, x, one in zip(batch.requests, xs, singles, strict=True):
        if one:
            out[offset] = x
        else:
            out[offset : offset + request.size] = x
        offset += request.size
    return out


def split_output(name: str, job: Job, output: object) -> Sequence[np.ndarray]:
    """Each request's rows of ``output``, in request order (then padding rows, which the
    caller ignores). Raises ``ValueError`` naming the rule when ``output`` is not one array
    whose first axis is the padded batch: a tuple of arrays is refused outright, so no
    request can ever be given another's rows."""
    batch = job.batch
    if type(output) is not np.ndarray or output.shape[:1] != (batch.padded_size,):
        if isinstance(output, tuple | list | dict):
            got = f"a {type(output).__name__} of {len(output)} items"
            hint = "; structured outputs are not supported yet: return one array"
        else:
            got = str(getattr(output, "shape", type(output).__name__))
            hint = ""
        raise ValueError(
            f"serving '{name}': the model returned {got} for a batch of {batch.padded_size}; "
            f"it must return an array with that first axis{hint}"
        )
    if job.single:
        return output  # type: ignore[return-value]  # row i is request i's
    rows: list[np.ndarray] = []
    offset = 0
    for request in batch.requests:
        size = request.size
        single = payload_of(request)[2]
        rows.append(output[offset] if single else output[offset : offset + size])
        offset += size
    return rows
