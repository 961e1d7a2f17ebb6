"""``encode``: a Python value to the bytes ``term_to_binary`` would give.

``corral.port.etf``'s docstring maps every Python value to its term.
"""

from __future__ import annotations

import functools
import math
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from corral.port.etf.tags import (
    ARRAY_KINDS,
    ATOM_UTF8_EXT,
    BINARY_EXT,
    BIT_BINARY_EXT,
    COMPRESSED,
    EXPORT_EXT,
    INTEGER_EXT,
    LARGE_BIG_EXT,
    LARGE_TUPLE_EXT,
    LIST_EXT,
    MAP_EXT,
    MAX_ATOM_CHARS,
    MAX_DEPTH,
    NEW_FLOAT_EXT,
    NEW_PID_EXT,
    NEW_PORT_EXT,
    NEWER_REFERENCE_EXT,
    NIL_EXT,
    PID_NEW,
    PORT_NEW,
    PORT_V4,
    SMALL_ATOM_UTF8_EXT,
    SMALL_BIG_EXT,
    SMALL_INTEGER_EXT,
    SMALL_TUPLE_EXT,
    STRING_EXT,
    TAG_F64,
    TAG_I32,
    TAG_U16,
    TAG_U32,
    TAG_U32_U8,
    U32,
    V4_PORT_EXT,
    VERSION,
)
from corral.port.etf.terms import (
    Atom,
    BitBinary,
    ErlangFun,
    ErlangPid,
    ErlangPort,
    ErlangRef,
    ImproperList,
    OpaqueTerm,
)

if TYPE_CHECKING:
    import numpy as np

_U32_MAX: Final = 0xFFFFFFFF


class _Encoded:
    """Bytes already encoded (a dict key), queued on the encoder's stack."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


_TAIL: Final = object()
_VERSION_BYTE: Final = bytes((VERSION,))
_Chunk = bytes | bytearray | memoryview


def encode(term: object, *, compressed: int | None = None) -> bytes:
    """Encode ``term`` as ``term_to_binary`` would (see the module's mapping table).

    ``compressed`` is a zlib level from 0 to 9; as with ``term_to_binary``, the result is
    compressed only when that makes it smaller. Raises ``TypeError`` for a value of a type
    that has no Erlang form and ``ValueError`` for one out of Erlang's range. Pure CPU work.
    """
    if compressed is not None:
        if isinstance(compressed, bool) or not isinstance(compressed, int):
            raise TypeError(f"encode: compressed must be an int or None; got {compressed!r}")
        if not 0 <= compressed <= 9:
            raise ValueError(f"encode: compressed must be a zlib level 0..9; got {compressed}")
    chunks: list[_Chunk] = [_VERSION_BYTE]
    _encode_into(chunks, term, 0)
    data = b"".join(chunks)
    size = len(data) - 1
    if compressed is not None and size <= _U32_MAX:
        packed = zlib.compress(memoryview(data)[1:], compressed)
        if len(packed) + 5 < size:
            return _VERSION_BYTE + TAG_U32.pack(COMPRESSED, size) + packed
    return data


def _encode_into(out: list[_Chunk], term: object, depth: int) -> None:
    stack: list[tuple[object, int]] = [(term, depth)]
    writers = _WRITERS
    while stack:
        value, level = stack.pop()
        writer = writers.get(type(value))
        if writer is not None:
            writer(out, value)
        elif isinstance(value, tuple | list | dict | ImproperList):
            _encode_container(out, stack, value, level)
        elif value is _TAIL:
            out.append(_NIL_BYTES)
        elif (writer := _writer_for(value)) is not None:
            writer(out, value)
        else:
            stack.append((_from_numpy(value), level))


def _writer_for(value: object) -> _Writer | None:
    """The writer for an instance of a subclass (an IntEnum, numpy.float64), if any."""
    for kind in type(value).__mro__[1:]:
        writer = _WRITERS.get(kind)
        if writer is not None:
            return writer
    return None


def _write_float(out: list[_Chunk], value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"encode: Erlang has no inf or nan floats; got {value!r}")
    out.append(TAG_F64.pack(NEW_FLOAT_EXT, value))


def _write_int(out: list[_Chunk], value: int) -> None:
    if 0 <= value <= 0xFF:
        out.append(bytes((SMALL_INTEGER_EXT, value)))
    elif -(1 << 31) <= value < 1 << 31:
        out.append(TAG_I32.pack(INTEGER_EXT, value))
    else:
        out.append(_encode_big(value))


def _encode_big(value: int) -> bytes:
    magnitude = -value if value < 0 else value
    size = (magnitude.bit_length() + 7) // 8
    digits = magnitude.to_bytes(size, "little")
    if size <= 0xFF:
        return bytes((SMALL_BIG_EXT, size, value < 0)) + digits
    if size > _U32_MAX:
        raise ValueError(f"encode: an integer of {size} bytes is too large for Erlang")
    return TAG_U32_U8.pack(LARGE_BIG_EXT, size, value < 0) + digits


@functools.lru_cache(maxsize=1024)
def _atom_bytes(text: str) -> bytes:
    if len(text) > MAX_ATOM_CHARS:
        raise ValueError(
            f"encode: an atom has at most {MAX_ATOM_CHARS} characters; got {len(text)}"
        )
    data = text.encode("utf-8")
    if len(data) <= 0xFF:
        return bytes((SMALL_ATOM_UTF8_EXT, len(data))) + data
    return TAG_U16.pack(ATOM_UTF8_EXT, len(data)) + data


def _write_binary(out: list[_Chunk], value: bytes | bytearray | memoryview) -> None:
    if isinstance(value, memoryview) and (
        value.format != "B" or value.ndim != 1 or not value.c_contiguous
    ):
        value = value.tobytes()
    if len(value) > _U32_MAX:
        raise ValueError(f"encode: a binary of {len(value)} bytes is too large for Erlang")
    out += (TAG_U32.pack(BINARY_EXT, len(value)), value)


def _write_str(out: list[_Chunk], value: str) -> None:
    _write_binary(out, value.encode("utf-8"))


def _write_bit_binary(out: list[_Chunk], value: BitBinary) -> None:
    out += (TAG_U32_U8.pack(BIT_BINARY_EXT, len(value.data), value.bits), value.data)


def _write_opaque(out: list[_Chunk], value: OpaqueTerm) -> None:
    out.append(value._raw if value._raw is not None else _encode_opaque(value))


_NIL_BYTES: Final = bytes((NIL_EXT,))
_Writer = Callable[[list[_Chunk], Any], None]
_WRITERS: Final[dict[type, _Writer]] = {
    int: _write_int,
    float: _write_float,
    bool: lambda out, value: out.append(_atom_bytes("true" if value else "false")),
    type(None): lambda out, value: out.append(_atom_bytes("nil")),
    Atom: lambda out, value: out.append(_atom_bytes(value)),
    str: _write_str,
    bytes: _write_binary,
    bytearray: _write_binary,
    memoryview: _write_binary,
    BitBinary: _write_bit_binary,
    ErlangPid: _write_opaque,
    ErlangPort: _write_opaque,
    ErlangRef: _write_opaque,
    ErlangFun: _write_opaque,
    _Encoded: lambda out, value: out.append(value.data),
}
"""How to write a value that holds no other values, by its exact type."""


def _encode_container(
    out: list[_Chunk],
    stack: list[tuple[object, int]],
    value: tuple[object, ...] | list[object] | dict[object, object] | ImproperList,
    level: int,
) -> None:
    size = len(value.items) if isinstance(value, ImproperList) else len(value)
    if size and level >= MAX_DEPTH:
        raise ValueError(
            f"encode: the term nests deeper than {MAX_DEPTH} levels (MAX_DEPTH); "
            "a list or dict that contains itself does this"
        )
    if isinstance(value, tuple):
        out.append(
            bytes((SMALL_TUPLE_EXT, size)) if size <= 0xFF else TAG_U32.pack(LARGE_TUPLE_EXT, size)
        )
        _write_items(out, stack, value, level + 1)
    elif isinstance(value, list):
        string = _as_string(value)
        if string is not None:
            out += (TAG_U16.pack(STRING_EXT, size), string)
        elif size:
            out.append(TAG_U32.pack(LIST_EXT, size))
            stack.append((_TAIL, level + 1))
            _write_items(out, stack, value, level + 1)
        else:
            out.append(_NIL_BYTES)
    elif isinstance(value, ImproperList):
        out.append(TAG_U32.pack(LIST_EXT, size))
        stack.append((value.tail, level + 1))
        _write_items(out, stack, value.items, level + 1)
    else:
        out.append(TAG_U32.pack(MAP_EXT, size))
        _write_map(out, stack, value, level + 1)


def _write_items(
    out: list[_Chunk], stack: list[tuple[object, int]], items: Sequence[object], level: int
) -> None:
    """Write the leading items that hold no others now; queue the rest, in order, on stack."""
    writers = _WRITERS
    for index, item in enumerate(items):
        writer = writers.get(type(item))
        if writer is None:
            stack += ((rest, level) for rest in reversed(items[index:]))
            return
        writer(out, item)


def _as_string(items: list[object]) -> bytes | None:
    """The STRING_EXT payload for a list of ints 0..255 (as Erlang writes one), else None."""
    if not items or len(items) > 0xFFFF:
        return None
    if not all(issubclass(kind, int) and kind is not bool for kind in set(map(type, items))):
        return None
    try:
        return bytes(items)  # type: ignore[arg-type]  # every item is an int, checked above
    except ValueError:  # an int outside 0..255
        return None


def _write_map(
    out: list[_Chunk], stack: list[tuple[object, int]], value: dict[object, object], level: int
) -> None:
    """Write a dict's entries, keys first encoded alone to refuse two that Erlang sees as one."""
    seen: dict[bytes, object] = {}
    entries: list[object] = []
    for key, item in value.items():
        chunks: list[_Chunk] = []
        _encode_into(chunks, key, level)
        encoded = b"".join(chunks)
        if encoded in seen:
            raise ValueError(
                f"encode: dict keys {seen[encoded]!r} and {key!r} are the same Erlang term; "
                "an Erlang map cannot hold a key twice"
            )
        seen[encoded] = key
        entries += (_Encoded(encoded), item)
    _write_items(out, stack, entries, level)


def _encode_opaque(value: OpaqueTerm) -> bytes:
    """A pid, port, reference or fun built in Python (decoded ones keep their bytes)."""
    if isinstance(value, ErlangPid):
        return (
            bytes((NEW_PID_EXT,))
            + _atom_bytes(value.node)
            + PID_NEW.pack(value.id, value.serial, value.creation)
        )
    if isinstance(value, ErlangPort):
        if value.id <= _U32_MAX:
            body = PORT_NEW.pack(value.id, value.creation)
            return bytes((NEW_PORT_EXT,)) + _atom_bytes(value.node) + body
        body = PORT_V4.pack(value.id, value.creation)
        return bytes((V4_PORT_EXT,)) + _atom_bytes(value.node) + body
    if isinstance(value, ErlangRef):
        words = struct.pack(f">{len(value.ids)}I", *value.ids)
        head = TAG_U16.pack(NEWER_REFERENCE_EXT, len(value.ids))
        return head + _atom_bytes(value.node) + U32.pack(value.creation) + words
    if value.function is None:
        raise ValueError(
            "encode: a local fun can only be sent back as it was decoded; "
            f"an ErlangFun built in Python needs a function name; got {value!r}"
        )
    return (
        bytes((EXPORT_EXT,))
        + _atom_bytes(value.module)
        + _atom_bytes(value.function)
        + bytes((SMALL_INTEGER_EXT, value.arity))
    )


def _from_numpy(value: object) -> object:
    """The Erlang form of a numpy array or scalar; TypeError for anything else."""
    if "numpy" in sys.modules:  # an array can only exist once numpy is imported
        import numpy as np

        if isinstance(value, np.ndarray):
            return _array_term(value)
        if isinstance(value, np.generic) and value.dtype.kind in "biuf":
            kind = value.dtype.kind
            return bool(value) if kind == "b" else int(value) if kind in "iu" else float(value)
    raise TypeError(
        f"encode: cannot encode a value of type {type(value).__module__}."
        f"{type(value).__qualname__}; Erlang terms come from None, bool, int, float, str, "
        "bytes, Atom, tuple, list, dict, numpy arrays and corral.port.etf's term classes"
    )


def _array_term(array: np.ndarray) -> tuple[object, ...]:
    import numpy as np

    if array.dtype.kind not in ARRAY_KINDS:
        raise TypeError(
            f"encode: cannot encode an ndarray of dtype {array.dtype}; "
            "only bool, int, uint, float and complex arrays have an Erlang form"
        )
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return (Atom("ndarray"), array.dtype.str.encode("ascii"), array.shape, data.data)
