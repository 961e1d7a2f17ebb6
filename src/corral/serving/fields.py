"""Structured requests and outputs, and sequence buckets: pure functions on arrays.

A request's value is one array, or a dict (or tuple) of arrays, its *fields*; a model's
output likewise. Requests are stacked field by field into a batch of the same structure
(``stack``), and the batch's output is shared out field by field (``split``): each request
gets its rows of every output field, in the output's own structure.

``Sequences`` declares sequence buckets: the lengths a sequence axis (the first axis of a
sample, the second of a batch) is padded to, which fields carry that axis and each field's
pad value. A request of sequence length ``n`` goes to the smallest bucket ``>= n``; its batch
is padded to the batch's bucket length (a request promoted into a larger bucket is padded
further), and an output field that keeps the sequence axis is cut back to the request's own
length (``unpad``): which fields keep it cannot be told from shapes alone (a pooled vector of
4 in a bucket of 4 looks like 4 tokens), so ``unpad`` says: ``"auto"`` cuts fields of 3 axes
or more whose second axis is the bucket length (per-token vectors, ``(batch, length,
hidden)``), ``True`` every field whose second axis is the bucket length, a tuple of output
field names (positions for a tuple output, ``None`` for a plain array) exactly those, and
``False`` none.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence

import numpy as np

from corral.errors import InvalidInput
from corral.serving.contract import Value

__all__ = [
    "FieldKey",
    "RawBatch",
    "Sequences",
    "fields_of",
    "first_array",
    "rebuild",
    "split",
    "stack",
]

FieldKey = str | int | None
"""A field's name (dict), position (tuple), or None for a plain array."""

PadValue = int | float | bool

Unpad = bool | str | tuple[str | int | None, ...]
"""Which output fields keep the sequence axis: ``"auto"``, ``True``, ``False`` or names."""


def fields_of(x: object) -> Iterator[tuple[FieldKey, np.ndarray]]:
    """``(key, array)`` for each field of ``x`` (one ``(None, x)`` for a plain array)."""
    if type(x) is dict:
        yield from x.items()
    elif type(x) is tuple or type(x) is list:
        yield from enumerate(x)
    else:
        yield None, x  # type: ignore[misc]


def first_array(x: Value) -> np.ndarray:
    """The first field of ``x`` (``x`` itself for an array)."""
    return next(fields_of(x))[1]


def rebuild(template: object, values: Sequence[object]) -> object:
    """``values`` (one per field of ``template``, in its order) in ``template``'s structure:
    a dict with its keys, a tuple (a list, as a port's output arrives, becomes a tuple)."""
    if type(template) is dict:
        return dict(zip(template, values, strict=True))
    if type(template) is tuple or type(template) is list:
        return tuple(values)
    return values[0]


class Sequences:
    """Sequence buckets (see the module docstring): ``lengths`` in increasing order; ``pad``
    a number (every field has the sequence axis and is padded with it) or a mapping of field
    names (dict requests) or positions (tuple requests) to pad values (only those fields have
    the axis); ``unpad``: which output fields keep the axis and are cut back to each
    request's length (see the module docstring)."""

    __slots__ = ("_all", "_pad", "lengths", "unpad")

    def __init__(
        self,
        lengths: Sequence[int],
        pad: PadValue | Mapping[str | int, PadValue] = 0,
        *,
        unpad: Unpad = "auto",
    ) -> None:
        self.lengths = tuple(sorted(set(lengths)))
        self._all = not isinstance(pad, Mapping)
        self._pad: Mapping[FieldKey, PadValue] | PadValue = (
            dict(pad.items()) if isinstance(pad, Mapping) else pad
        )
        self.unpad = unpad

    def keeps_axis(self, key: FieldKey, arr: np.ndarray, target: int) -> bool:
        """Whether output field ``key`` (``arr``, batch first) keeps the sequence axis of a
        batch padded to ``target``, and is cut back per request."""
        unpad = self.unpad
        if unpad is False or arr.ndim < 2 or arr.shape[1] != target:
            return False
        if unpad == "auto":
            return arr.ndim >= 3
        if unpad is True:
            return True
        return key in unpad

    def pad_of(self, key: FieldKey) -> PadValue | None:
        """The pad value of field ``key``, or None if it has no sequence axis."""
        if self._all:
            return self._pad  # type: ignore[return-value]
        return self._pad.get(key)  # type: ignore[union-attr]

    def length(self, name: str, x: Value, single: bool) -> int:
        """The sequence length of request ``x``: its sequenced fields' (equal) size on the
        sequence axis. ``InvalidInput`` if they disagree or none has the axis."""
        axis = 0 if single else 1
        sizes: dict[FieldKey, int] = {}
        for key, arr in fields_of(x):
            if self.pad_of(key) is not None:
                if arr.ndim <= axis:
                    raise InvalidInput(
                        name,
                        f"an array with a sequence axis (axis {axis})",
                        f"shape {arr.shape}",
                        field=_where(key),
                    )
                sizes[key] = arr.shape[axis]
        if not sizes:
            raise InvalidInput(
                name,
                f"a request with the sequence fields {sorted(map(str, self._pad))}",  # type: ignore[arg-type]
                "none of them",
            )
        if len(set(sizes.values())) > 1:
            raise InvalidInput(
                name, "sequence fields of one length", f"lengths {sizes}", field="input"
            )
        return next(iter(sizes.values()))

    def bucket(self, name: str, length: int) -> tuple[int, int]:
        """``(index, bucket length)`` of a sequence of ``length``: the smallest bucket that
        holds it. ``InvalidInput`` if it is longer than the largest (or empty)."""
        i = bisect.bisect_left(self.lengths, length)
        if length < 1 or i == len(self.lengths):
            raise InvalidInput(
                name,
                f"a sequence of 1 to {self.lengths[-1]} items (sequence_buckets={self.lengths})",
                f"length {length}",
            )
        return i, self.lengths[i]

    def cut(self, x: Value, length: int) -> Value:
        """One sample ``x`` with its sequenced fields cut to at most ``length`` (a warm-up
        sample for a shorter bucket)."""
        out = [arr if self.pad_of(key) is None else arr[:length] for key, arr in fields_of(x)]
        return rebuild(x, out)  # type: ignore[return-value]

    def group(self, x: Value, single: bool) -> Hashable:
        """What requests of one bucket must share besides it: each field's sample shape
        without the sequence axis, and dtype."""
        out = []
        for key, arr in fields_of(x):
            shape = arr.shape if single else arr.shape[1:]
            if self.pad_of(key) is not None:
                shape = shape[1:]
            out.append((key, shape, arr.dtype.str))
        return tuple(out)


def _where(key: FieldKey) -> str:
    return "input" if key is None else f"input field {key!r}"


def stack(
    xs: Sequence[Value],
    sizes: Sequence[int],
    singles: Sequence[bool],
    padded_size: int,
    sequences: Sequences | None,
    target: int,
) -> Value:
    """The requests ``xs`` (``sizes[i]`` samples each; one sample without a batch axis where
    ``singles[i]``) stacked field by field into one batch of ``padded_size`` samples (zero
    rows after the real ones); a sequenced field's sequence axis padded to ``target`` with
    its pad value."""
    template = xs[0]
    out: list[np.ndarray] = []
    for key, first in fields_of(template):
        pad = None if sequences is None else sequences.pad_of(key)
        column = [_field(x, key) for x in xs]
        one = singles[0]
        sample = first.shape if one else first.shape[1:]
        if pad is not None:
            sample = (target, *sample[1:])
            arr = np.full((padded_size, *sample), pad, dtype=first.dtype)
        else:
            arr = np.zeros((padded_size, *sample), dtype=first.dtype)
        offset = 0
        for x, size, single in zip(column, sizes, singles, strict=True):
            shape = x.shape if single else x.shape[1:]
            fits = (
                shape[1:] == sample[1:] and shape[0] <= target
                if pad is not None
                else (shape == sample)
            )
            if not fits:
                raise ValueError(
                    f"cannot stack inputs of shapes {sorted({str(c.shape) for c in column})}"
                )
            if pad is not None:
                n = shape[0]
                if single:
                    arr[offset, :n] = x
                else:
                    arr[offset : offset + size, :n] = x
            elif single:
                arr[offset] = x
            else:
                arr[offset : offset + size] = x
            offset += size
        out.append(arr)
    return rebuild(template, out)  # type: ignore[return-value]


def _field(x: Value, key: FieldKey) -> np.ndarray:
    if key is None:
        return x  # type: ignore[return-value]
    return x[key]  # type: ignore[index]


def split(
    output: object,
    sizes: Sequence[int],
    singles: Sequence[bool],
    lengths: Sequence[int] | None,
    target: int,
    sequences: Sequences | None = None,
) -> list[object]:
    """Each request's share of ``output`` (an array, or a dict / tuple / list of arrays
    whose first axis is the padded batch, checked by the caller), in ``output``'s structure:
    request ``i`` gets its rows of every field (one row where ``singles[i]``); with
    ``lengths`` and ``sequences``, a field that keeps the sequence axis of a batch padded to
    ``target`` (``Sequences.keeps_axis``) is cut to ``lengths[i]`` on it."""
    columns: list[list[object]] = []
    for key, arr in fields_of(output):
        keeps_axis = (
            lengths is not None and sequences is not None and sequences.keeps_axis(key, arr, target)
        )
        rows: list[object] = []
        offset = 0
        for i, (size, single) in enumerate(zip(sizes, singles, strict=True)):
            if single:
                row = arr[offset]
                if keeps_axis:
                    row = row[: lengths[i]]  # type: ignore[index]
            else:
                row = arr[offset : offset + size]
                if keeps_axis:
                    row = row[:, : lengths[i]]  # type: ignore[index]
            rows.append(row)
            offset += size
        columns.append(rows)
    return [rebuild(output, [col[i] for col in columns]) for i in range(len(sizes))]


class RawBatch:
    """A batch whose requests are still what the callers sent (``preprocess_in=
    "partition"``): ``prepare()``, called on the partition's thread, runs ``preprocess`` on
    each request and ``conform`` (given as ``check``), then stacks them like any batch —
    with sequence buckets, padded to the smallest bucket that holds the longest request.
    It records ``lengths``, ``target``, ``elements`` and ``padded_elements`` for the
    server, which reads them once the batch has run. An exception (a request the hook or
    the contract refuses) fails the batch like a model error: ``isolate_errors`` finds it."""

    __slots__ = (
        "_check",
        "_preprocess",
        "elements",
        "items",
        "lengths",
        "padded_elements",
        "padded_size",
        "sequences",
        "singles",
        "sizes",
        "target",
    )

    def __init__(
        self,
        items: Sequence[object],
        sizes: Sequence[int],
        singles: Sequence[bool],
        padded_size: int,
        preprocess: Callable[[object], object],
        check: Callable[[object, bool], Value],
        sequences: Sequences | None,
    ) -> None:
        self.items = items
        self.sizes = sizes
        self.singles = singles
        self.padded_size = padded_size
        self.sequences = sequences
        self._preprocess = preprocess
        self._check = check
        self.lengths: list[int] | None = None
        self.target = 0
        self.elements = sum(sizes)
        self.padded_elements = padded_size

    def prepare(self) -> Value:
        """The stacked batch (blocks for the hook's and the stacking's compute)."""
        values = [
            self._check(self._preprocess(x), one)
            for x, one in zip(self.items, self.singles, strict=True)
        ]
        sizes = self.sizes
        for i, (value, one) in enumerate(zip(values, self.singles, strict=True)):
            if not one and first_array(value).shape[0] != sizes[i]:
                raise ValueError(
                    f"preprocess turned a batch of {sizes[i]} samples into "
                    f"{first_array(value).shape[0]}"
                )
        seq = self.sequences
        if seq is not None:
            lengths = [
                seq.length("partition", v, one) for v, one in zip(values, self.singles, strict=True)
            ]
            self.target = seq.bucket("partition", max(lengths))[1]
            self.lengths = lengths
            self.elements = sum(n * k for n, k in zip(lengths, sizes, strict=True))
            self.padded_elements = self.padded_size * self.target
        return stack(values, sizes, self.singles, self.padded_size, seq, self.target)
