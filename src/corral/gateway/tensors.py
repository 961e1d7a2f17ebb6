"""Tensors of the Open Inference Protocol (KServe v2) as numpy arrays, both ways.

Pure: no loop, no HTTP. A request tensor arrives as JSON (``data``, flat in row-major order
or nested as its shape) or, with the binary tensor data extension, as raw little-endian bytes
after the JSON header (its ``parameters.binary_data_size`` says how many). Either way it is
checked against its declared ``shape`` and ``datatype`` and becomes an array; nothing is
coerced silently (a float in an ``INT32`` tensor, or an int out of its type's range, is a
``BadRequest``). Binary inputs are not copied: the array is a view of the request body.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

import numpy as np

from corral.gateway.problems import BadRequest

__all__ = [
    "DATATYPES",
    "datatype_of",
    "decode_tensor",
    "encode_tensor",
    "json_depth",
]

DATATYPES: Final[Mapping[str, np.dtype[np.generic]]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
"""The v2 numeric datatypes, as little-endian numpy dtypes. ``BYTES`` is taken too, as JSON
strings only (``"data": ["a text", ...]``), and reaches the serving as a numpy str array: for
a serving whose ``preprocess`` hook turns text into arrays (a tokenizer); any other serving
refuses it (400). ``BF16`` is not taken."""

_NAMES: Final = ", ".join([*DATATYPES, "BYTES"])
_BY_DTYPE: Final = {dt.newbyteorder("="): name for name, dt in DATATYPES.items()}
_STRINGS: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN: Final = np.frombuffer(b"[{", np.uint8)
_CLOSE: Final = np.frombuffer(b"]}", np.uint8)


def json_depth(body: bytes) -> int:
    """The deepest nesting of arrays and objects in the JSON text ``body`` (0 for a scalar),
    computed without parsing it, so a hostile body cannot make the parser recurse."""
    bare = _STRINGS.sub(b"", body)
    if not bare:
        return 0
    codes = np.frombuffer(bare, np.uint8)
    steps = np.isin(codes, _OPEN).astype(np.int32) - np.isin(codes, _CLOSE).astype(np.int32)
    if not steps.any():
        return 0
    return int(np.cumsum(steps).max())


def datatype_of(dtype: np.dtype[np.generic]) -> str | None:
    """The v2 datatype name of ``dtype``, or None when v2 cannot carry it."""
    return _BY_DTYPE.get(dtype.newbyteorder("="))


def _shape(field: str, value: object) -> tuple[int, ...]:
    if type(value) is not list or not all(type(d) is int and d >= 0 for d in value):
        raise BadRequest(f"{field}.shape", "a list of ints >= 0", value)
    return tuple(value)


def decode_tensor(
    field: str, tensor: object, binary: memoryview | None, offset: int
) -> tuple[str, np.ndarray, int]:
    """Tensor ``field`` (``"inputs[0]"``) of a request as ``(name, array, offset)``.

    ``binary`` is the body after the JSON header (binary extension), ``offset`` where this
    tensor's bytes start in it; the returned offset is where the next tensor's start.
    Raises ``BadRequest`` naming the field and the rule it breaks."""
    if not isinstance(tensor, dict):
        raise BadRequest(field, "an object with name, shape, datatype and data", tensor)
    name = tensor.get("name")
    if type(name) is not str or not name:
        raise BadRequest(f"{field}.name", "a non-empty str", name)
    shape = _shape(field, tensor.get("shape"))
    datatype = tensor.get("datatype")
    if datatype == "BYTES":
        return name, _strings(field, shape, tensor), offset
    dtype = DATATYPES.get(datatype) if type(datatype) is str else None
    if dtype is None or type(datatype) is not str:
        raise BadRequest(f"{field}.datatype", f"one of {_NAMES}", datatype)
    count = math.prod(shape)
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f"{field}.parameters", "an object", parameters)
    size = parameters.get("binary_data_size")
    if size is not None:
        return name, _from_binary(field, shape, dtype, count, size, binary, offset), offset + size
    if "data" not in tensor:
        raise BadRequest(f"{field}.data", "present (or parameters.binary_data_size given)")
    return name, _from_json(field, shape, dtype, datatype, count, tensor["data"]), offset


def _strings(field: str, shape: tuple[int, ...], tensor: dict[str, object]) -> np.ndarray:
    """A ``BYTES`` tensor's JSON strings as a str array of ``shape``."""
    parameters = tensor.get("parameters")
    if isinstance(parameters, dict) and "binary_data_size" in parameters:
        raise BadRequest(f"{field}.parameters.binary_data_size", "absent for BYTES (JSON only)")
    data = tensor.get("data")
    flat: list[object] = []
    stack = [data]
    while stack:  # nesting is bounded by the body's checked JSON depth
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        else:
            flat.append(item)
    if not isinstance(data, list) or not all(type(s) is str for s in flat):
        raise BadRequest(f"{field}.data", "a list of strings for datatype BYTES", data)
    count = math.prod(shape)
    if len(flat) != count:
        raise BadRequest(
            f"{field}.data", f"{count} values for shape {list(shape)}", f"{len(flat)} values"
        )
    return np.array(flat, dtype=np.str_).reshape(shape)


def _from_binary(
    field: str,
    shape: tuple[int, ...],
    dtype: np.dtype[np.generic],
    count: int,
    size: object,
    binary: memoryview | None,
    offset: int,
) -> np.ndarray:
    where = f"{field}.parameters.binary_data_size"
    if binary is None:
        raise BadRequest(where, "used only with the Inference-Header-Content-Length header")
    expected = count * dtype.itemsize
    if type(size) is not int or size != expected:
        raise BadRequest(where, f"{expected} (shape x {dtype.itemsize}-byte elements)", size)
    if offset + size > len(binary):
        raise BadRequest(where, f"within the binary data ({len(binary) - offset} bytes left)", size)
    raw = binary[offset : offset + size]
    if dtype.kind == "b" and np.frombuffer(raw, np.uint8).max(initial=0) > 1:
        raise BadRequest(f"{field} data", "BOOL bytes of 0 or 1")
    return np.frombuffer(raw, dtype).reshape(shape)


def _from_json(
    field: str,
    shape: tuple[int, ...],
    dtype: np.dtype[np.generic],
    datatype: str,
    count: int,
    data: object,
) -> np.ndarray:
    where = f"{field}.data"
    if not isinstance(data, list):
        raise BadRequest(where, "a list of numbers (flat or nested as the shape)", data)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise BadRequest(where, "a regular nesting of numbers (not ragged)") from None
    if arr.size != count:
        raise BadRequest(where, f"{count} values for shape {list(shape)}", f"{arr.size} values")
    kind = arr.dtype.kind
    if count == 0:
        return np.zeros(shape, dtype)
    if dtype.kind == "b":
        ok = kind == "b"
        rule = "true or false values for datatype BOOL"
    elif dtype.kind in "iu":
        ok = kind in "iu"
        rule = f"integers for datatype {datatype}"
    else:
        ok = kind in "iuf"
        rule = f"numbers for datatype {datatype}"
    if not ok:
        raise BadRequest(where, rule)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)  # type: ignore[type-var]
        low, high = arr.min(), arr.max()
        if low < info.min or high > info.max:
            raise BadRequest(where, f"integers from {info.min} to {info.max} for {datatype}")
    return arr.astype(dtype, copy=False).reshape(shape)


def encode_tensor(
    name: str, arr: np.ndarray, *, binary: bool
) -> tuple[dict[str, object], bytes | None]:
    """Output ``arr`` as a v2 tensor object and, when ``binary``, its raw little-endian bytes
    (the object then carries ``parameters.binary_data_size`` instead of ``data``). Raises
    ``TypeError`` for a dtype v2 cannot carry."""
    datatype = datatype_of(arr.dtype)
    if datatype is None:
        raise TypeError(f"the model returned dtype {arr.dtype}, which the v2 protocol cannot carry")
    tensor: dict[str, object] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
    if binary:
        raw = np.ascontiguousarray(arr, DATATYPES[datatype]).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        return tensor, raw
    tensor["data"] = arr.ravel().tolist()
    return tensor, None
