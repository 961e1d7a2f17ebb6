"""The input contract at a serving's door: what one request may hold.

Pure: no loop, no server. ``conform`` turns what a caller passed into the array that will be
queued, or raises ``InvalidInput`` naming what was expected and what came. It runs on the
caller's side before the request is queued, so a request that breaks the contract fails
alone, at once, and never enters a batch.

- With an ``InputSpec`` (``input_spec=InputSpec((4,), "float32")``, the shape of one sample
  without the batch axis): a sample must have exactly that shape; an array's dtype must be
  the spec's or one numpy casts to it safely (``int32`` to ``float64``, not ``float64`` to
  ``float32``), and is then cast; a list or a number may be of the same kind (a list of
  floats for a ``float32`` spec, not of floats for an ``int64`` one). A ``run_batch`` input
  must be ``(n, *shape)``.
- Without one: any numeric or boolean array (or what ``np.asarray`` makes of a list or a
  number) is taken; requests of different shapes or dtypes are queued apart (``bucket``), so
  they never meet in one ``np.stack``.
- Never: ``None``, ``str``, ``dict`` or anything else that becomes an object or string
  array, whatever the spec.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from corral.errors import InvalidInput

__all__ = ["NUMERIC_KINDS", "Buckets", "InputSpec", "conform", "parse_input_spec"]

NUMERIC_KINDS = frozenset("biuf")
"""dtype kinds a request may carry: bool, signed, unsigned, float. Complex, strings, objects,
datetimes and void records are refused (the port codec and most models reject them too)."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One sample's shape (without the batch axis) and dtype.

    ``InputSpec((4,), "float32")``; ``shape`` holds ints >= 0, ``dtype`` is anything
    ``np.dtype`` accepts for a bool, int or float type.
    """

    shape: tuple[int, ...]
    dtype: np.dtype[np.generic]

    def __init__(self, shape: tuple[int, ...] | list[int], dtype: object) -> None:
        if not isinstance(shape, tuple | list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ValueError(f"InputSpec: shape must be a tuple of ints >= 0; got {shape!r}")
        try:
            dt = np.dtype(dtype)  # type: ignore[call-overload]
        except TypeError:
            raise ValueError(f"InputSpec: dtype must be a numpy dtype; got {dtype!r}") from None
        if dt.kind not in NUMERIC_KINDS:
            raise ValueError(f"InputSpec: dtype must be a bool, int or float type; got {dt}")
        object.__setattr__(self, "shape", tuple(shape))
        object.__setattr__(self, "dtype", dt)

    def describe(self) -> str:
        """``shape (4,) and dtype float32``: the expected side of an error."""
        return f"shape {self.shape} and dtype {self.dtype}"


def parse_input_spec(value: object) -> InputSpec | None:
    """``input_spec`` as given to a serving: an ``InputSpec``, a ``(shape, dtype)`` pair or
    None. Raises ``ValueError`` for anything else."""
    if value is None or isinstance(value, InputSpec):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return InputSpec(value[0], value[1])
    raise ValueError(f"expected an InputSpec, a (shape, dtype) pair or None; got {value!r}")


def _describe(x: object, arr: np.ndarray | None) -> str:
    if arr is None or not isinstance(x, np.ndarray | np.generic):
        kind = type(x).__name__
        if arr is None or arr.dtype.kind in "OUSV":
            return f"a {kind}"
        return f"a {kind} that makes shape {arr.shape} and dtype {arr.dtype}"
    return f"shape {arr.shape} and dtype {arr.dtype}"


def conform(name: str, x: object, spec: InputSpec | None, *, single: bool) -> np.ndarray:
    """``x`` as the array to queue, or ``InvalidInput``. ``single``: one sample (``run``);
    else a batch with a first axis (``run_batch``)."""
    arr: np.ndarray | None
    if type(x) is np.ndarray:
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError):  # ragged lists, objects numpy refuses
            arr = None
    if spec is not None:
        if single:
            shape = spec.shape
        else:
            shape = (arr.shape[0] if arr is not None and arr.ndim else -1, *spec.shape)
        if arr is not None and arr.shape == shape and arr.dtype.kind in NUMERIC_KINDS:
            if arr.dtype == spec.dtype:
                return arr
            # An array is cast only where nothing is lost; a list or a number (JSON's
            # floats are float64) within the same kind.
            safe = isinstance(x, np.ndarray)
            if np.can_cast(arr.dtype, spec.dtype, casting="safe" if safe else "same_kind"):
                return arr.astype(spec.dtype)
        expected = spec.describe() if single else f"shape (n, *{spec.shape}) and dtype {spec.dtype}"
        raise InvalidInput(name, expected, _describe(x, arr))
    if arr is None or arr.dtype.kind not in NUMERIC_KINDS:
        expected = "a bool, int or float array (or a list of numbers)"
        raise InvalidInput(name, expected, _describe(x, arr))
    return arr


class Buckets:
    """The implicit batch keys of a serving without an ``InputSpec``: requests of another
    sample shape or dtype get another key, so they are never queued together. The first
    dtype seen is the usual one and keys by shape alone (a tuple of ints hashes fast); any
    other dtype keys by ``(shape, dtype)``."""

    __slots__ = ("_usual",)

    def __init__(self) -> None:
        self._usual: np.dtype[np.generic] | None = None

    def key(self, arr: np.ndarray, single: bool) -> Hashable:
        """The bucket of ``arr`` (one sample if ``single``, else a batch of them)."""
        shape = arr.shape if single else arr.shape[1:]
        dtype = arr.dtype
        usual = self._usual
        if usual is None:
            self._usual = usual = dtype
        return shape if dtype is usual else (shape, dtype)
