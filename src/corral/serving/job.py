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

from corral.serving.contract import Value
from corral.serving.fields import RawBatch, Sequences, fields_of, first_array, split, stack
from corral.serving.policy import Batch, Bucket, Request
from corral.serving.records import Result

__all__ = ["Job", "Payload", "arrived", "new_result", "payload_of", "split_output"]

Payload = tuple[Value, "asyncio.Future[Result]", bool, float | None]
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
    loop timer of its earliest deadline. Building one stacks the inputs (field by field for
    dict or tuple requests; padding the sequence axis to the batch's bucket with
    ``sequences``), which raises if they cannot be stacked. ``lengths`` are the requests'
    sequence lengths (None without sequence buckets), ``sequences`` the buckets;
    ``elements`` and ``padded_elements`` count the real and the padded sample positions
    (samples, or samples x sequence length), for the padding fraction."""

    __slots__ = (
        "attempts",
        "batch",
        "crashes",
        "elements",
        "futs",
        "inputs",
        "lengths",
        "padded_elements",
        "sequences",
        "single",
        "start",
        "started",
        "target",
        "timer",
    )

    def __init__(
        self,
        batch: Batch,
        *,
        crashes: int = 0,
        sequences: Sequences | None = None,
        raw: tuple[Callable[[object], object], Callable[[object, bool], Value]] | None = None,
    ) -> None:
        self.batch = batch
        # One C-level transposition of the payloads: inputs, futures, single flags.
        xs, futs, singles, _ = zip(*map(payload_of, batch.requests), strict=True)
        self.futs: tuple[asyncio.Future[Result], ...] = futs
        self.single = all(singles)
        self.sequences = sequences
        self.inputs: Value | RawBatch
        self.lengths: list[int] | None
        key = batch.key
        if raw is not None:  # preprocess_in="partition": the partition prepares the batch
            self.lengths = None
            self.target = 0
            self.elements = batch.size
            self.padded_elements = batch.padded_size
            sizes = [r.size for r in batch.requests]
            self.inputs = RawBatch(xs, sizes, singles, batch.padded_size, *raw, sequences)
        elif sequences is None or type(key) is not Bucket:
            self.lengths = None
            self.target = 0
            self.elements = batch.size
            self.padded_elements = batch.padded_size
            if type(xs[0]) is np.ndarray:
                self.inputs = _stack(batch, xs, singles, self.single)
            else:
                sizes = [r.size for r in batch.requests]
                self.inputs = stack(xs, sizes, singles, batch.padded_size, None, 0)
        else:
            target = self.target = key.length
            lengths = self.lengths = [
                first_sequence(sequences, x, one) for x, one in zip(xs, singles, strict=True)
            ]
            sizes = [r.size for r in batch.requests]
            self.elements = sum(n * size for n, size in zip(lengths, sizes, strict=True))
            self.padded_elements = batch.padded_size * target
            self.inputs = stack(xs, sizes, singles, batch.padded_size, sequences, target)
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


def first_sequence(sequences: Sequences, x: Value, single: bool) -> int:
    """The sequence length of a queued request (checked equal across fields at the door)."""
    axis = 0 if single else 1
    for key, arr in fields_of(x):
        if sequences.pad_of(key) is not None:
            return int(arr.shape[axis])
    return int(first_array(x).shape[axis])  # pragma: no cover - the door refused it


def split_output(name: str, job: Job, output: object) -> Sequence[object]:
    """Each request's rows of ``output``, in request order (then padding rows, which the
    caller ignores). ``output`` is one array whose first axis is the padded batch, or a dict
    or tuple (a list, from a port) of such arrays: each request then gets a dict or tuple of
    its rows. Raises ``ValueError`` naming the rule otherwise, so no request can ever be
    given another's rows."""
    batch = job.batch
    raw = job.inputs
    if type(raw) is RawBatch:  # prepared on the partition: what it learnt of the sequences
        job.lengths, job.target = raw.lengths, raw.target
        job.elements, job.padded_elements = raw.elements, raw.padded_elements
    if type(output) is not np.ndarray or output.shape[:1] != (batch.padded_size,):
        _check_structured(name, output, batch.padded_size)
        sizes = [r.size for r in batch.requests]
        singles = [payload_of(r)[2] for r in batch.requests]
        return split(output, sizes, singles, job.lengths, job.target, job.sequences)
    if job.lengths is not None:
        sizes = [r.size for r in batch.requests]
        singles = [payload_of(r)[2] for r in batch.requests]
        return split(output, sizes, singles, job.lengths, job.target, job.sequences)
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


def _check_structured(name: str, output: object, padded: int) -> None:
    """Raise ``ValueError`` unless ``output`` is a non-empty dict or tuple (list) of arrays
    whose first axis is ``padded``."""
    kind = type(output)
    if kind is dict or kind is tuple or kind is list:
        items = list(fields_of(output))
        bad = [
            (k, getattr(v, "shape", type(v).__name__))
            for k, v in items
            if type(v) is not np.ndarray or v.shape[:1] != (padded,)
        ]
        if items and not bad and (kind is not dict or all(type(k) is str for k, _ in items)):
            return
        got = f"a {kind.__name__} of {len(items)} items" + (
            f" ({', '.join(f'{k!r}: {s}' for k, s in bad)})" if bad else ""
        )
        raise ValueError(
            f"serving '{name}': the model returned {got} for a batch of {padded}; each output "
            "must be an array with that first axis"
        )
    got = str(getattr(output, "shape", kind.__name__))
    raise ValueError(
        f"serving '{name}': the model returned {got} for a batch of {padded}; it must return "
        "an array with that first axis (or a dict or tuple of them)"
    )
