"""A cut batch on its way through partitions (``Job``), and what a queued request carries.

The server queues each request with a ``Payload`` (its input, its caller's future, whether
it is one sample, its deadline budget); a ``Job`` holds a cut batch's stacked inputs and its
requests' futures, and counts the attempts to run it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from operator import attrgetter

import numpy as np

from corral.serving.policy import Batch, Request
from corral.serving.records import Result

__all__ = ["Job", "Payload", "arrived", "new_result", "payload_of"]

Payload = tuple[np.ndarray, "asyncio.Future[Result]", bool, float | None]
"""What a queued request carries: input, the caller's future, one sample?, deadline budget."""

payload_of: Callable[[Request], Payload] = attrgetter("payload")
"""``request.payload`` as a ``Payload`` (a C getter: no ``typing.cast`` call on the hot path)."""

arrived: Callable[[Request], float] = attrgetter("arrived")
"""``request.arrived`` (for ``sum(map(arrived, requests))``)."""

new_result = tuple.__new__
"""Builds a ``Result`` without its Python-level ``__new__`` (one per request)."""


class Job:
    """A cut batch on its way through partitions: ``futs`` are its requests' futures (in
    order), ``single`` whether every request is one sample (row i answers request i);
    ``started`` is when its first attempt began, ``start`` when its current one did."""

    __slots__ = ("attempts", "batch", "futs", "inputs", "single", "start", "started")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        # One C-level transposition of the payloads: inputs, futures, single flags.
        xs, futs, singles, _ = zip(*map(payload_of, batch.requests), strict=True)
        self.futs: tuple[asyncio.Future[Result], ...] = futs
        self.single = all(singles)
        self.inputs = _stack(batch, xs, singles, self.single)
        self.attempts = 0
        self.started = 0.0
        self.start = 0.0


def _stack(
    batch: Batch, xs: tuple[np.ndarray, ...], singles: tuple[bool, ...], single: bool
) -> np.ndarray:
    """The batch's inputs as one array, padded with zero rows to ``batch.padded_size``."""
    if single and batch.pad == 0:
        try:
            # np.array builds the same array as np.stack for equal shapes, ~3x faster.
            return np.array(xs)
        except ValueError:
            return np.stack(xs)  # unequal shapes: np.stack's error, as before
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
