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
- Structured requests: a ``dict`` of str to arrays (``{"input_ids": ..., "attention_mask":
  ...}``) or a ``tuple`` of numpy arrays (a tuple of numbers is one array, as before; with a
  tuple ``input_spec`` any tuple is structured); each field is conformed as above, against
  its own spec when ``input_spec`` is a dict of ``InputSpec`` (the same field names) or a
  tuple of them.
  An ``InputSpec`` dimension may be ``None``: any size (a sequence axis).
- Never: ``None``, ``str`` or anything else that becomes an object or string array, whatever
  the spec.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

import numpy as np

from corral.errors import InvalidInput

__all__ = [
    "NUMERIC_KINDS",
    "Buckets",
    "InputSpec",
    "Spec",
    "Value",
    "conform",
    "example_input",
    "parse_input_spec",
    "signature",
]

NUMERIC_KINDS = frozenset("biuf")
"""dtype kinds a request may carry: bool, signed, unsigned, float. Complex, strings, objects,
datetimes and void records are refused (the port codec and most models reject them too)."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One sample's shape (without the batch axis) and dtype.

    ``InputSpec((4,), "float32")``; ``shape`` holds ints >= 0, or ``None`` for an axis of any
    size (``InputSpec((None,), "int64")``: token ids of any length); ``dtype`` is anything
    ``np.dtype`` accepts for a bool, int or float type.
    """

    shape: tuple[int | None, ...]
    dtype: np.dtype[np.generic]

    def __init__(self, shape: tuple[int | None, ...] | list[int | None], dtype: object) -> None:
        if not isinstance(shape, tuple | list) or not all(
            d is None or (type(d) is int and d >= 0) for d in shape
        ):
            raise ValueError(
                f"InputSpec: shape must be a tuple of ints >= 0 (or None: any size); got {shape!r}"
            )
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
        return f"shape {_shape_text(self.shape)} and dtype {self.dtype}"

    def fits(self, shape: tuple[int, ...]) -> bool:
        """Whether one sample of ``shape`` has this spec's shape (``None``: any size)."""
        mine = self.shape
        return len(shape) == len(mine) and all(
            d is None or d == s for d, s in zip(mine, shape, strict=True)
        )


def _shape_text(shape: tuple[int | None, ...]) -> str:
    if all(d is not None for d in shape):
        return str(shape)
    inner = ", ".join("*" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


Spec: TypeAlias = "InputSpec | dict[str, InputSpec] | tuple[InputSpec, ...]"
"""An input contract: one array's, or one per field of a dict or tuple request."""

Value: TypeAlias = "np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]"
"""A conformed request: one array, or a dict or tuple of them (its fields)."""


def parse_input_spec(value: object) -> Spec | None:
    """``input_spec`` as given to a serving: an ``InputSpec``, a ``(shape, dtype)`` pair, a
    dict of field names to either, a tuple of ``InputSpec`` (one per tuple field), or None.
    Raises ``ValueError`` for anything else."""
    if value is None or isinstance(value, InputSpec):
        return value
    if isinstance(value, Mapping):
        if not value or not all(type(k) is str for k in value):
            raise ValueError(
                f"a dict input_spec must map field names (str) to specs; got {value!r}"
            )
        return {k: _one_spec(v, k) for k, v in value.items()}
    if isinstance(value, tuple) and value and all(isinstance(v, InputSpec) for v in value):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return InputSpec(value[0], value[1])
    raise ValueError(
        "expected an InputSpec, a (shape, dtype) pair, a dict of field names to those, a "
        f"tuple of InputSpec or None; got {value!r}"
    )


def example_input(spec: Spec) -> Value:
    """One sample of zeros that meets ``spec`` (an axis of any size has length 1): a
    warm-up input."""
    if isinstance(spec, InputSpec):
        return np.zeros(tuple(1 if d is None else d for d in spec.shape), spec.dtype)
    if isinstance(spec, dict):
        return {k: example_input(v) for k, v in spec.items()}  # type: ignore[misc]
    return tuple(example_input(v) for v in spec)  # type: ignore[misc]


def _one_spec(value: object, field: str) -> InputSpec:
    spec = parse_input_spec(value)
    if not isinstance(spec, InputSpec):
        raise ValueError(f"field {field!r}: expected an InputSpec or a (shape, dtype) pair")
    return spec


def _describe(x: object, arr: np.ndarray | None) -> str:
    if arr is None or not isinstance(x, np.ndarray | np.generic):
        kind = type(x).__name__
        if arr is None or arr.dtype.kind in "OUSV":
            return f"a {kind}"
        return f"a {kind} that makes shape {arr.shape} and dtype {arr.dtype}"
    return f"shape {arr.shape} and dtype {arr.dtype}"


def conform(name: str, x: object, spec: Spec | None, *, single: bool) -> Value:
    """``x`` as the value to queue (an array, or a dict or tuple of arrays), or
    ``InvalidInput``. ``single``: one sample (``run``); else a batch with a first axis
    (``run_batch``), the same in every field."""
    if type(x) is dict:
        return _conform_dict(name, x, spec, single)
    if type(x) is tuple and (
        isinstance(spec, tuple) or (spec is None and x and all(type(v) is np.ndarray for v in x))
    ):
        return _conform_tuple(name, x, spec, single)
    if spec is not None and not isinstance(spec, InputSpec):
        expected = "a dict of arrays" if isinstance(spec, dict) else "a tuple of arrays"
        raise InvalidInput(name, f"{expected} ({_spec_text(spec)})", f"a {type(x).__name__}")
    return _conform_array(name, x, spec, single=single)


def _conform_dict(name: str, x: dict[object, object], spec: Spec | None, single: bool) -> Value:
    if not x or not all(type(k) is str for k in x):
        raise InvalidInput(name, "a dict of field names (str) to arrays", f"keys {list(x)!r}")
    if spec is not None:
        if not isinstance(spec, dict):
            raise InvalidInput(name, _spec_text(spec), "a dict")
        if x.keys() != spec.keys():
            raise InvalidInput(name, f"a dict of fields {sorted(spec)}", f"fields {sorted(x)}")  # type: ignore[type-var]
    out = {
        str(k): _conform_array(
            name, v, None if spec is None else spec[str(k)], single=single, field=str(k)
        )
        for k, v in x.items()
    }
    if not single:
        _same_batch(name, out)
    return out


def _conform_tuple(name: str, x: tuple[object, ...], spec: Spec | None, single: bool) -> Value:
    if spec is not None and (not isinstance(spec, tuple) or len(spec) != len(x)):
        raise InvalidInput(name, _spec_text(spec), f"a tuple of {len(x)} items")
    specs: tuple[InputSpec | None, ...] = (None,) * len(x) if spec is None else spec
    out = tuple(
        _conform_array(name, v, specs[i], single=single, field=str(i)) for i, v in enumerate(x)
    )
    if not single:
        _same_batch(name, dict(enumerate(out)))
    return out


def _same_batch(name: str, fields: Mapping[str, np.ndarray] | Mapping[int, np.ndarray]) -> None:
    sizes = {str(k): (a.shape[0] if a.ndim else None) for k, a in fields.items()}
    if len(set(sizes.values())) != 1:
        raise InvalidInput(
            name, "fields with the same first (batch) axis", f"first axes {sizes}", field="input"
        )


def _spec_text(spec: Spec) -> str:
    if isinstance(spec, InputSpec):
        return spec.describe()
    if isinstance(spec, dict):
        return "a dict of " + ", ".join(f"{k!r}: {v.describe()}" for k, v in spec.items())
    return "a tuple of " + ", ".join(v.describe() for v in spec)


def _conform_array(
    name: str, x: object, spec: InputSpec | None, *, single: bool, field: str | None = None
) -> np.ndarray:
    where = "input" if field is None else f"input field {field!r}"
    arr: np.ndarray | None
    if type(x) is np.ndarray:
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except (ValueError, TypeError):  # ragged lists, objects numpy refuses
            arr = None
    if spec is not None:
        if arr is not None and arr.dtype.kind in NUMERIC_KINDS:
            shape = arr.shape if single else arr.shape[1:]
            if (single or arr.ndim) and spec.fits(shape):
                if arr.dtype == spec.dtype:
                    return arr
                # An array is cast only where nothing is lost; a list or a number (JSON's
                # floats are float64) within the same kind.
                safe = isinstance(x, np.ndarray)
                if np.can_cast(arr.dtype, spec.dtype, casting="safe" if safe else "same_kind"):
                    return arr.astype(spec.dtype)
        expected = (
            spec.describe()
            if single
            else f"shape (n, *{_shape_text(spec.shape)}) and dtype {spec.dtype}"
        )
        raise InvalidInput(name, expected, _describe(x, arr), field=where)
    if arr is None or arr.dtype.kind not in NUMERIC_KINDS:
        expected = "a bool, int or float array (or a list of numbers)"
        raise InvalidInput(name, expected, _describe(x, arr), field=where)
    return arr


def signature(x: Value, single: bool) -> Hashable:
    """What requests batched together must share: each field's sample shape and dtype
    (a dict's fields by name, in sorted order)."""
    if type(x) is dict:
        return tuple(
            (k, v.shape if single else v.shape[1:], v.dtype.str) for k, v in sorted(x.items())
        )
    if type(x) is tuple:
        return tuple((v.shape if single else v.shape[1:], v.dtype.str) for v in x)
    arr: np.ndarray = x  # type: ignore[assignment]
    return (arr.shape if single else arr.shape[1:], arr.dtype.str)


class Buckets:
    """The implicit batch keys of a serving without an ``InputSpec``: requests of another
    sample shape or dtype get another key, so they are never queued together. The first
    dtype seen is the usual one and keys by shape alone (a tuple of ints hashes fast); any
    other dtype keys by ``(shape, dtype)``."""

    __slots__ = ("_usual",)

    def __init__(self) -> None:
        self._usual: np.dtype[np.generic] | None = None

    def key(self, arr: Value, single: bool) -> Hashable:
        """The bucket of ``arr`` (one sample if ``single``, else a batch of them); a dict
        or tuple request's is its ``signature``."""
        if type(arr) is not np.ndarray:
            return ("fields", signature(arr, single))
        shape = arr.shape if single else arr.shape[1:]
        dtype = arr.dtype
        usual = self._usual
        if usual is None:
            self._usual = usual = dtype
        return shape if dtype is usual else (shape, dtype)
