"""Erlang's External Term Format: ``term_to_binary`` and ``binary_to_term`` for Python.

``encode(term)`` gives the bytes ``term_to_binary`` would give (version byte 131 first), and
``decode(data)`` reads what ``term_to_binary`` wrote, so an Erlang or Elixir program can talk
to a corral worker over ``{packet, 4}``. Pure Python, no pickle, no eval.

The mapping, both directions:

=====================================  ==========================  =============================
Erlang term (ETF tags)                 ``decode`` gives            ``encode`` takes
=====================================  ==========================  =============================
atom ``true`` / ``false``              ``True`` / ``False``        ``bool``
atom ``nil``                           ``None``                    ``None``
any other atom (ATOM_UTF8_EXT,         ``Atom`` (a ``str``)        ``Atom`` (UTF-8, <= 255
SMALL_ATOM_UTF8_EXT; ATOM_EXT and                                  characters)
SMALL_ATOM_EXT as latin-1)
integer (SMALL_INTEGER_EXT,            ``int``                     ``int`` of any size; numpy
INTEGER_EXT, SMALL_BIG_EXT,                                        integer scalars
LARGE_BIG_EXT)
float (NEW_FLOAT_EXT; FLOAT_EXT)       ``float``                   finite ``float``; numpy float
                                                                   scalars. inf and nan raise
                                                                   ``ValueError``
binary (BINARY_EXT)                    ``bytes``                   ``bytes``, ``bytearray``,
                                                                   ``memoryview``, and ``str``
                                                                   as UTF-8
bitstring (BIT_BINARY_EXT)             ``BitBinary``               ``BitBinary``
``[]`` (NIL_EXT)                       ``[]``                      ``[]``
proper list (LIST_EXT, STRING_EXT)     ``list`` (a STRING_EXT      ``list``; all ints 0..255 go
                                       gives a list of ints)       as STRING_EXT, as Erlang does
improper list ``[a, b | c]``           ``ImproperList``            ``ImproperList``
tuple (SMALL_TUPLE_EXT,                ``tuple``                   ``tuple`` (and subclasses)
LARGE_TUPLE_EXT)
``{ndarray, Dtype, Shape, Data}``      ``numpy.ndarray``           ``numpy.ndarray``
map (MAP_EXT)                          ``dict``                    ``dict``
pid (NEW_PID_EXT, PID_EXT)             ``ErlangPid``               ``ErlangPid``
port (V4_PORT_EXT, NEW_PORT_EXT,       ``ErlangPort``              ``ErlangPort``
PORT_EXT)
reference (NEWER_REFERENCE_EXT,        ``ErlangRef``               ``ErlangRef``
NEW_REFERENCE_EXT, REFERENCE_EXT)
fun (NEW_FUN_EXT, EXPORT_EXT)          ``ErlangFun``               ``ErlangFun``
compressed term (tag 80, zlib)         the term inside             ``encode(t, compressed=6)``
=====================================  ==========================  =============================

Choices worth knowing:

- ``None`` is the atom ``nil``, as in Elixir: a handler that returns nothing answers ``nil``,
  and an Elixir ``nil`` arrives as ``None``. Erlang's ``undefined`` stays
  ``Atom("undefined")``. Like ``Atom("true")``, which is the atom ``true`` and so decodes to
  ``True``, ``Atom("nil")`` encodes to ``nil`` and decodes to ``None``.
- ``Atom`` is a ``str`` subclass equal to its text (``Atom("ok") == "ok"``), so handlers can
  match on plain strings. A ``str`` encodes as a UTF-8 *binary* (Elixir's strings), which
  decodes to ``bytes``: decoding never guesses whether a binary is text; call
  ``.decode()`` on the ones you expect to be.
- Round trips: ``decode(encode(x)) == x`` for every value in the right column whose form is
  the one ``decode`` returns (no ``str``, no ``Atom`` spelled ``true``/``false``/``nil``);
  for the rest, ``encode(decode(encode(x))) == encode(x)``. Pids, ports, references and
  funs re-encode to the very bytes they were decoded from, so a worker can answer a
  ``{self(), make_ref(), Request}`` with the caller's own pid and reference.
- Maps: a ``dict`` key must be hashable, so a map with a list or map key (or with two keys
  Python holds equal, such as ``1`` and ``1.0``) does not decode: ``EtfError``. A ``dict``
  whose keys would become the same Erlang term (``"a"`` and ``b"a"``) does not encode:
  ``ValueError``.
- A local fun can only be echoed back as it was decoded; an ``ErlangFun`` built in Python
  with a ``function`` name encodes as ``fun Module:Function/Arity`` (EXPORT_EXT).
- Arrays: an ndarray travels as the 4-tuple ``{ndarray, <<"<f4">>, {2, 3}, <<Data>>}``:
  the atom ``ndarray``, ``dtype.str`` as a binary (byte order included; kinds bool, int,
  uint, float and complex only), the shape as a tuple of integers (``{}`` for a 0-d array)
  and the raw bytes in C order. Decoding that exact shape gives a read-only ndarray that is
  a view of the input buffer, with no copy: copy it if you reuse the buffer. The view may
  be unaligned for its dtype (numpy handles that; ``numpy.require(a, requirements="A")``
  makes an aligned copy for a library that insists). A 4-tuple that starts with the atom
  ``ndarray`` but is not a valid array is an ``EtfError``. numpy is imported only when an
  array is encoded or decoded.
- A bitstring whose last byte is full (BIT_BINARY_EXT with 8 bits) decodes to ``bytes``,
  as Erlang reads it; bits past the end of a bitstring are cleared, as Erlang does.

Errors: every malformed input raises ``EtfError`` saying what is wrong and at which byte
offset: a bad version byte, an unknown or unsupported tag (ATOM_CACHE_REF and the
distribution header belong to the distribution protocol, LOCAL_EXT to one node), truncated
data, a length larger than the bytes that remain (checked before anything is allocated, so
a 4 GB length in ten bytes fails at once), invalid UTF-8 in an atom, an atom over 255
characters, a non-finite float, trailing bytes, corrupt zlib data or more of it than the
compressed header claims (zlib output is never inflated past that size, itself at most
1032 times the compressed bytes), and nesting deeper than ``MAX_DEPTH`` (1000) containers.
``EtfError`` is a ``corral.errors.ProtocolError``. Decoding and encoding are iterative: deep
terms cost no stack.
``encode`` raises ``TypeError`` naming the type of a value it cannot encode and
``ValueError`` for a value out of Erlang's range (an inf, an atom too long, nesting too
deep, which is also how a cyclic list shows up).
"""

from __future__ import annotations

import functools
import math
import re
import struct
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from corral.errors import ProtocolError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "MAX_DEPTH",
    "Atom",
    "BitBinary",
    "ErlangFun",
    "ErlangPid",
    "ErlangPort",
    "ErlangRef",
    "EtfError",
    "ImproperList",
    "decode",
    "encode",
]

MAX_DEPTH: Final = 1000
"""The deepest a term may nest: a term inside ``MAX_DEPTH`` containers decodes, one more
level raises ``EtfError`` (``ValueError`` when encoding)."""

VERSION: Final = 131

# Tags, named as in the ETF documentation (erts/doc/src/erl_ext_dist.xml).
COMPRESSED: Final = 80
NEW_FLOAT_EXT: Final = 70
BIT_BINARY_EXT: Final = 77
NEW_PID_EXT: Final = 88
NEW_PORT_EXT: Final = 89
NEWER_REFERENCE_EXT: Final = 90
SMALL_INTEGER_EXT: Final = 97
INTEGER_EXT: Final = 98
FLOAT_EXT: Final = 99
ATOM_EXT: Final = 100
REFERENCE_EXT: Final = 101
PORT_EXT: Final = 102
PID_EXT: Final = 103
SMALL_TUPLE_EXT: Final = 104
LARGE_TUPLE_EXT: Final = 105
NIL_EXT: Final = 106
STRING_EXT: Final = 107
LIST_EXT: Final = 108
BINARY_EXT: Final = 109
SMALL_BIG_EXT: Final = 110
LARGE_BIG_EXT: Final = 111
NEW_FUN_EXT: Final = 112
EXPORT_EXT: Final = 113
NEW_REFERENCE_EXT: Final = 114
SMALL_ATOM_EXT: Final = 115
MAP_EXT: Final = 116
ATOM_UTF8_EXT: Final = 118
SMALL_ATOM_UTF8_EXT: Final = 119
V4_PORT_EXT: Final = 120

_UNSUPPORTED: Final = {
    68: "the distribution header (DIST_HEADER), which only the distribution protocol uses",
    COMPRESSED: "a compressed term (tag 80) inside a term; only a whole term is compressed",
    82: "ATOM_CACHE_REF, which only the distribution protocol uses",
    117: "FUN_EXT, removed in OTP 23",
    121: "LOCAL_EXT, which only the node that wrote it can read",
}

_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
_I32: Final = struct.Struct(">i")
_F64: Final = struct.Struct(">d")
_TAG_U16: Final = struct.Struct(">BH")
_TAG_U32: Final = struct.Struct(">BI")
_TAG_I32: Final = struct.Struct(">Bi")
_TAG_F64: Final = struct.Struct(">Bd")
_TAG_U32_U8: Final = struct.Struct(">BIB")
_PID_NEW: Final = struct.Struct(">III")
_PID_OLD: Final = struct.Struct(">IIB")
_PORT_V4: Final = struct.Struct(">QI")
_PORT_NEW: Final = struct.Struct(">II")
_PORT_OLD: Final = struct.Struct(">IB")
_FUN_HEAD: Final = struct.Struct(">IB16sII")

_U32_MAX: Final = 0xFFFFFFFF
_MAX_ATOM_CHARS: Final = 255
_MAX_REF_WORDS: Final = 5
# Deflate's best case: a 258-byte match costs at least 2 bits, so 1032 bytes out per byte in.
_MAX_ZLIB_RATIO: Final = 1032
_FLOAT_TEXT: Final = re.compile(rb"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")
_DTYPE_TEXT: Final = re.compile(rb"[<>|=]?[biufc][0-9]{1,2}")
_ARRAY_KINDS: Final = "biufc"


class EtfError(ProtocolError):
    """Bytes that are not a valid Erlang term, or a term Python cannot hold.

    ``what`` says what is wrong and ``offset`` where, in bytes from the start of the input
    (from the start of the decompressed term when ``compressed``). A ``ProtocolError``, so
    also a ``ValueError``.
    """

    def __init__(self, what: str, offset: int, *, compressed: bool = False, hint: str = "") -> None:
        self.what = what
        self.offset = offset
        self.compressed = compressed
        where = " of the decompressed term" if compressed else ""
        super().__init__(
            f"invalid term: {what} at offset {offset}{where}" + (f"; {hint}" if hint else "")
        )


class Atom(str):
    """An Erlang atom: ``Atom("ok")``. Equal to (and hashed as) the ``str`` of its text.

    At most 255 characters, as in Erlang. ``true``, ``false`` and ``nil`` decode to
    ``True``, ``False`` and ``None``, never to an ``Atom``.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> Atom:
        if not isinstance(text, str):
            raise TypeError(f"Atom: the text must be a str; got {text!r}")
        if len(text) > _MAX_ATOM_CHARS:
            raise ValueError(
                f"Atom: an atom has at most {_MAX_ATOM_CHARS} characters; got {len(text)}"
            )
        return super().__new__(cls, text)

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class BitBinary:
    """A bitstring whose size is not a whole number of bytes, such as ``<<3, 5:3>>``.

    ``data`` holds the bits, the last byte only partly: its ``bits`` high bits (1 to 7)
    belong to the bitstring and the rest must be zero. ``<<3, 5:3>>`` is
    ``BitBinary(b"\\x03\\xa0", 3)``.
    """

    data: bytes
    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.data, bytes) or not self.data:
            raise ValueError(f"BitBinary: data must be non-empty bytes; got {self.data!r}")
        if not isinstance(self.bits, int) or not 1 <= self.bits <= 7:
            raise ValueError(
                f"BitBinary: bits must be 1 to 7 (8 would be a whole byte: use bytes); "
                f"got {self.bits!r}"
            )
        if self.data[-1] & (0xFF >> self.bits):
            raise ValueError(
                f"BitBinary: the low {8 - self.bits} bits of the last byte are not part of "
                f"the bitstring and must be zero; got {self.data[-1]:#04x}"
            )

    @property
    def bit_size(self) -> int:
        """The bitstring's length in bits (Erlang's ``bit_size/1``)."""
        return 8 * (len(self.data) - 1) + self.bits


@dataclass(frozen=True, slots=True)
class ImproperList:
    """An improper list ``[a, b | tail]``: ``ImproperList((a, b), tail)``.

    ``items`` is a non-empty tuple and ``tail`` anything but a list (a list tail would make
    the whole a proper list: write that as a Python list).
    """

    items: tuple[object, ...]
    tail: object

    def __post_init__(self) -> None:
        if not isinstance(self.items, tuple) or not self.items:
            raise ValueError(f"ImproperList: items must be a non-empty tuple; got {self.items!r}")
        if isinstance(self.tail, list | ImproperList):
            raise ValueError(
                "ImproperList: the tail must not be a list; a list tail makes a proper list, "
                f"so write it as one; got {self.tail!r}"
            )


def _check_range(who: str, name: str, value: object, bits: int) -> None:
    if type(value) is not int or not 0 <= value < 1 << bits:
        raise ValueError(f"{who}: {name} must be an int from 0 to 2**{bits}-1; got {value!r}")


def _check_atom(who: str, name: str, value: object) -> None:
    if not isinstance(value, Atom):
        raise TypeError(f"{who}: {name} must be an Atom, such as Atom('ok'); got {value!r}")


@dataclass(frozen=True, slots=True)
class ErlangPid:
    """An Erlang process identifier, kept so it can be sent back.

    Decoded pids re-encode to the bytes they came from. Two pids are equal when their node,
    id, serial and creation are.
    """

    node: Atom
    id: int
    serial: int
    creation: int
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_atom("ErlangPid", "node", self.node)
        for name in ("id", "serial", "creation"):
            _check_range("ErlangPid", name, getattr(self, name), 32)


@dataclass(frozen=True, slots=True)
class ErlangPort:
    """An Erlang port identifier, kept so it can be sent back (as decoded, byte for byte)."""

    node: Atom
    id: int
    creation: int
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_atom("ErlangPort", "node", self.node)
        _check_range("ErlangPort", "id", self.id, 64)
        _check_range("ErlangPort", "creation", self.creation, 32)


@dataclass(frozen=True, slots=True)
class ErlangRef:
    """An Erlang reference (``make_ref()``), kept so it can be sent back byte for byte.

    ``ids`` are its 32-bit words, at most 5.
    """

    node: Atom
    creation: int
    ids: tuple[int, ...]
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_atom("ErlangRef", "node", self.node)
        _check_range("ErlangRef", "creation", self.creation, 32)
        if not isinstance(self.ids, tuple) or len(self.ids) > _MAX_REF_WORDS:
            raise ValueError(f"ErlangRef: ids must be a tuple of at most 5 ints; got {self.ids!r}")
        for word in self.ids:
            _check_range("ErlangRef", "each of ids", word, 32)


@dataclass(frozen=True, slots=True)
class ErlangFun:
    """An Erlang fun: ``fun Module:Function/Arity`` or a local fun (``function`` is None).

    Opaque: a decoded fun re-encodes to the bytes it came from; its closure is not exposed.
    One built in Python needs a ``function`` and encodes as ``fun Module:Function/Arity``.
    """

    module: Atom
    function: Atom | None
    arity: int
    _raw: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_atom("ErlangFun", "module", self.module)
        if self.function is not None:
            _check_atom("ErlangFun", "function", self.function)
        _check_range("ErlangFun", "arity", self.arity, 8)


_Opaque = ErlangPid | ErlangPort | ErlangRef | ErlangFun


def _with_raw(value: _Opaque, raw: bytes) -> None:
    object.__setattr__(value, "_raw", raw)


# --- encoding -------------------------------------------------------------------------


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
            return _VERSION_BYTE + _TAG_U32.pack(COMPRESSED, size) + packed
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
    out.append(_TAG_F64.pack(NEW_FLOAT_EXT, value))


def _write_int(out: list[_Chunk], value: int) -> None:
    if 0 <= value <= 0xFF:
        out.append(bytes((SMALL_INTEGER_EXT, value)))
    elif -(1 << 31) <= value < 1 << 31:
        out.append(_TAG_I32.pack(INTEGER_EXT, value))
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
    return _TAG_U32_U8.pack(LARGE_BIG_EXT, size, value < 0) + digits


@functools.lru_cache(maxsize=1024)
def _atom_bytes(text: str) -> bytes:
    if len(text) > _MAX_ATOM_CHARS:
        raise ValueError(
            f"encode: an atom has at most {_MAX_ATOM_CHARS} characters; got {len(text)}"
        )
    data = text.encode("utf-8")
    if len(data) <= 0xFF:
        return bytes((SMALL_ATOM_UTF8_EXT, len(data))) + data
    return _TAG_U16.pack(ATOM_UTF8_EXT, len(data)) + data


def _write_binary(out: list[_Chunk], value: bytes | bytearray | memoryview) -> None:
    if isinstance(value, memoryview) and (
        value.format != "B" or value.ndim != 1 or not value.c_contiguous
    ):
        value = value.tobytes()
    if len(value) > _U32_MAX:
        raise ValueError(f"encode: a binary of {len(value)} bytes is too large for Erlang")
    out += (_TAG_U32.pack(BINARY_EXT, len(value)), value)


def _write_str(out: list[_Chunk], value: str) -> None:
    _write_binary(out, value.encode("utf-8"))


def _write_bit_binary(out: list[_Chunk], value: BitBinary) -> None:
    out += (_TAG_U32_U8.pack(BIT_BINARY_EXT, len(value.data), value.bits), value.data)


def _write_opaque(out: list[_Chunk], value: _Opaque) -> None:
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
            bytes((SMALL_TUPLE_EXT, size)) if size <= 0xFF else _TAG_U32.pack(LARGE_TUPLE_EXT, size)
        )
        _write_items(out, stack, value, level + 1)
    elif isinstance(value, list):
        string = _as_string(value)
        if string is not None:
            out += (_TAG_U16.pack(STRING_EXT, size), string)
        elif size:
            out.append(_TAG_U32.pack(LIST_EXT, size))
            stack.append((_TAIL, level + 1))
            _write_items(out, stack, value, level + 1)
        else:
            out.append(_NIL_BYTES)
    elif isinstance(value, ImproperList):
        out.append(_TAG_U32.pack(LIST_EXT, size))
        stack.append((value.tail, level + 1))
        _write_items(out, stack, value.items, level + 1)
    else:
        out.append(_TAG_U32.pack(MAP_EXT, size))
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


def _encode_opaque(value: _Opaque) -> bytes:
    """A pid, port, reference or fun built in Python (decoded ones keep their bytes)."""
    if isinstance(value, ErlangPid):
        return (
            bytes((NEW_PID_EXT,))
            + _atom_bytes(value.node)
            + _PID_NEW.pack(value.id, value.serial, value.creation)
        )
    if isinstance(value, ErlangPort):
        if value.id <= _U32_MAX:
            body = _PORT_NEW.pack(value.id, value.creation)
            return bytes((NEW_PORT_EXT,)) + _atom_bytes(value.node) + body
        body = _PORT_V4.pack(value.id, value.creation)
        return bytes((V4_PORT_EXT,)) + _atom_bytes(value.node) + body
    if isinstance(value, ErlangRef):
        words = struct.pack(f">{len(value.ids)}I", *value.ids)
        head = _TAG_U16.pack(NEWER_REFERENCE_EXT, len(value.ids))
        return head + _atom_bytes(value.node) + _U32.pack(value.creation) + words
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

    if array.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(
            f"encode: cannot encode an ndarray of dtype {array.dtype}; "
            "only bool, int, uint, float and complex arrays have an Erlang form"
        )
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return (Atom("ndarray"), array.dtype.str.encode("ascii"), array.shape, data.data)


# --- decoding -------------------------------------------------------------------------

_MORE: Final = object()  # a handler's answer when the value is still to come


class _Frame:
    """A container being decoded: its kind, how many values it needs, those it has."""

    __slots__ = ("fun", "items", "kind", "size", "start")

    def __init__(
        self, kind: int, size: int, start: int, fun: tuple[Atom, int, int] | None = None
    ) -> None:
        self.kind = kind
        self.size = size
        self.start = start
        self.items: list[object] = []
        self.fun = fun  # NEW_FUN_EXT: module, arity, end offset


_TUPLE, _LIST, _MAP, _FUN = range(4)


def decode(data: bytes | bytearray | memoryview) -> object:
    """Decode one term that ``term_to_binary`` wrote (version byte 131 first).

    See the module's mapping table. Raises ``EtfError`` for anything but exactly one valid
    term, and ``TypeError`` for a buffer that is not contiguous. Decoded arrays may be views
    of ``data``. Pure CPU work.
    """
    view = memoryview(data)
    if not view.c_contiguous:
        raise TypeError("decode: data must be a contiguous buffer")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if not view:
        raise EtfError("empty input", 0, hint="a term starts with the version byte 131")
    if view[0] != VERSION:
        raise EtfError(
            f"version byte {view[0]}", 0, hint="expected 131, the version term_to_binary writes"
        )
    if len(view) > 1 and view[1] == COMPRESSED:
        decoder = _Decoder(_decompress(view), 0, compressed=True)
    else:
        decoder = _Decoder(view, 1, compressed=False)
    value = decoder.term()
    if decoder.pos != decoder.end:
        extra = decoder.end - decoder.pos
        raise decoder.fail(f"{extra} trailing byte{'s' * (extra > 1)} after the term", decoder.pos)
    return value


def _decompress(view: memoryview) -> memoryview:
    """The term inside a compressed one (tag 80), never more bytes than its header claims."""
    if len(view) < 6:
        raise EtfError("truncated compressed term: the 4-byte uncompressed size is missing", 1)
    size = _U32.unpack_from(view, 2)[0]
    stream = view[6:]
    if size == 0 or size > _MAX_ZLIB_RATIO * len(stream):
        raise EtfError(
            f"compressed term that claims {size} bytes from {len(stream)} bytes of zlib data", 1
        )
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(stream, size)
        # At ``size`` bytes but not at the end: done, or is there more than was claimed?
        if (
            not inflater.eof
            and len(out) == size
            and inflater.decompress(inflater.unconsumed_tail, 1)
        ):
            raise EtfError(f"zlib data that holds more than the {size} bytes claimed", 6)
    except zlib.error as error:
        raise EtfError(f"corrupt zlib data ({error})", 6) from None
    if not inflater.eof:
        raise EtfError(f"truncated zlib data: no end of stream after {len(out)} bytes", 6)
    if len(out) != size:
        raise EtfError(f"zlib data that holds {len(out)} bytes, not the {size} claimed", 6)
    if inflater.unused_data:
        unused = len(inflater.unused_data)
        raise EtfError(f"{unused} trailing bytes after the zlib data", len(view) - unused)
    return memoryview(out)


_SPECIAL_ATOMS: Final[dict[str, object]] = {"true": True, "false": False, "nil": None}
_ATOM_TAGS: Final = {
    ATOM_EXT: (2, "latin-1"),
    SMALL_ATOM_EXT: (1, "latin-1"),
    ATOM_UTF8_EXT: (2, "utf-8"),
    SMALL_ATOM_UTF8_EXT: (1, "utf-8"),
}
_PORT_LAYOUTS: Final = {V4_PORT_EXT: _PORT_V4, NEW_PORT_EXT: _PORT_NEW, PORT_EXT: _PORT_OLD}


class _Decoder:
    """Reads one term from ``data[pos:]``, iteratively, with a stack of open containers.

    Each handler gets the offset of its tag (``pos`` is just past it) and the stack, and
    returns the value, or ``_MORE`` when it opened a container (or, for ``[ | Tail]``, when
    the next term stands in for it).
    """

    def __init__(self, data: memoryview, pos: int, *, compressed: bool) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.compressed = compressed

    def fail(self, what: str, offset: int, hint: str = "") -> EtfError:
        return EtfError(what, offset, compressed=self.compressed, hint=hint)

    def term(self) -> object:
        """Decode the term at ``pos``, leaving ``pos`` just after it."""
        stack: list[_Frame] = []
        data, handlers = self.data, _HANDLERS
        while True:
            start = self.pos
            if start >= self.end:
                raise self.fail("truncated input", start, hint="a term is missing there")
            handler = handlers.get(data[start])
            if handler is None:
                raise self._bad_tag(data[start], start)
            self.pos = start + 1
            value = handler(self, start, stack)
            if value is _MORE:
                continue
            while stack:
                frame = stack[-1]
                frame.items.append(value)
                if len(frame.items) < frame.size:
                    break
                stack.pop()
                value = self._close(frame)
            else:
                return value

    def _bad_tag(self, tag: int, offset: int) -> EtfError:
        if tag in _UNSUPPORTED:
            return self.fail(f"unsupported tag {tag}", offset, hint=_UNSUPPORTED[tag])
        return self.fail(f"unknown tag {tag}", offset)

    def _take(self, size: int, start: int, what: str) -> int:
        """Step over ``size`` bytes, returning where they begin; EtfError if fewer remain."""
        pos = self.pos
        if size > self.end - pos:
            raise self.fail(
                f"truncated {what}",
                start,
                hint=f"{size} more bytes needed at offset {pos}, {self.end - pos} remain",
            )
        self.pos = pos + size
        return pos

    def _count(self, size: int, start: int, what: str, unit: int = 1) -> None:
        """Fail fast when ``size`` items of at least ``unit`` bytes cannot fit in the rest."""
        if size * unit > self.end - self.pos:
            raise self.fail(
                f"{what} {size}",
                start,
                hint=f"that needs at least {size * unit} more bytes, {self.end - self.pos} remain",
            )

    def _u32(self, start: int, what: str) -> int:
        value: int = _U32.unpack_from(self.data, self._take(4, start, what))[0]
        return value

    def _open(self, stack: list[_Frame], frame: _Frame) -> object:
        if len(stack) >= MAX_DEPTH:
            raise self.fail(f"term nests deeper than {MAX_DEPTH} levels (MAX_DEPTH)", frame.start)
        stack.append(frame)
        return _MORE

    def _raw(self, start: int) -> bytes:
        return bytes(self.data[start : self.pos])

    # Numbers.

    # The commonest terms check their bounds inline; ``_take`` only raises for them.

    def _small_integer(self, start: int, stack: list[_Frame]) -> object:
        if start + 2 > self.end:
            self._take(1, start, "SMALL_INTEGER_EXT")
        self.pos = start + 2
        return self.data[start + 1]

    def _integer(self, start: int, stack: list[_Frame]) -> object:
        if start + 5 > self.end:
            self._take(4, start, "INTEGER_EXT")
        self.pos = start + 5
        return _I32.unpack_from(self.data, start + 1)[0]

    def _big(self, start: int, stack: list[_Frame]) -> object:
        if self.data[start] == SMALL_BIG_EXT:
            size = self.data[self._take(1, start, "SMALL_BIG_EXT")]
        else:
            size = self._u32(start, "LARGE_BIG_EXT")
        negative = self.data[self._take(1, start, "big integer sign")]
        self._count(size, start, "big integer size")
        at = self._take(size, start, "big integer")
        magnitude = int.from_bytes(self.data[at : at + size], "little")
        return -magnitude if negative else magnitude  # any non-zero sign is "-", as in Erlang

    def _new_float(self, start: int, stack: list[_Frame]) -> object:
        if start + 9 > self.end:
            self._take(8, start, "NEW_FLOAT_EXT")
        self.pos = start + 9
        value: float = _F64.unpack_from(self.data, start + 1)[0]
        if not math.isfinite(value):
            raise self.fail(f"float {value}, which Erlang does not have", start)
        return value

    def _float(self, start: int, stack: list[_Frame]) -> object:
        at = self._take(31, start, "FLOAT_EXT")
        text = bytes(self.data[at : at + 31]).split(b"\0", 1)[0]
        if not _FLOAT_TEXT.fullmatch(text) or not math.isfinite(value := float(text)):
            raise self.fail(f"FLOAT_EXT text {text!r}, which is not a finite float", start)
        return value

    # Atoms.

    def _atom_text(self, start: int) -> str:
        width, encoding = _ATOM_TAGS[self.data[start]]
        at = self._take(width, start, "atom length")
        size = self.data[at] if width == 1 else _U16.unpack_from(self.data, at)[0]
        at = self._take(size, start, "atom")
        try:
            text = str(self.data[at : at + size], encoding)
        except UnicodeDecodeError as error:
            raise self.fail(f"atom with invalid UTF-8 ({error.reason})", start) from None
        if len(text) > _MAX_ATOM_CHARS:
            raise self.fail(f"atom of {len(text)} characters (Erlang allows 255)", start)
        return text

    def _atom(self, start: int, stack: list[_Frame]) -> object:
        text = self._atom_text(start)
        special = _SPECIAL_ATOMS.get(text, _MORE)
        # str.__new__ skips Atom's checks, which _atom_text has made.
        return str.__new__(Atom, text) if special is _MORE else special

    def _name(self, start: int, what: str) -> Atom:
        """The atom that must come next (a node, module or function name), as an Atom."""
        at = self._take(1, start, what)
        if self.data[at] not in _ATOM_TAGS:
            raise self.fail(f"{what} with tag {self.data[at]}, which is not an atom", at)
        return Atom(self._atom_text(at))

    # Binaries.

    def _binary(self, start: int, stack: list[_Frame]) -> object:
        size = self._u32(start, "BINARY_EXT length")
        self._count(size, start, "binary length")
        at = self._take(size, start, "binary")
        if stack and stack[-1].size == 4 and _is_array_data(stack[-1]):
            return self.data[at : at + size]  # the array will be a view of it: no copy
        return bytes(self.data[at : at + size])

    def _bit_binary(self, start: int, stack: list[_Frame]) -> object:
        size = self._u32(start, "BIT_BINARY_EXT length")
        bits = self.data[self._take(1, start, "BIT_BINARY_EXT bits")]
        self._count(size, start, "bitstring length")
        if (size == 0) != (bits == 0) or bits > 8:
            raise self.fail(f"bitstring of {size} bytes with {bits} bits in the last", start)
        at = self._take(size, start, "bitstring")
        data = bytes(self.data[at : at + size])
        if bits in (0, 8):  # a whole number of bytes: a binary, as Erlang reads it
            return data
        last = data[-1] & (0xFF << (8 - bits)) & 0xFF
        return BitBinary(data[:-1] + bytes((last,)), bits)

    # Containers: each opens a frame that ``_close`` turns into a value.

    def _nil(self, start: int, stack: list[_Frame]) -> object:
        return []

    def _string(self, start: int, stack: list[_Frame]) -> object:
        size = _U16.unpack_from(self.data, self._take(2, start, "STRING_EXT length"))[0]
        at = self._take(size, start, "STRING_EXT")
        return list(self.data[at : at + size])

    def _list(self, start: int, stack: list[_Frame]) -> object:
        size = self._u32(start, "LIST_EXT length")
        self._count(size, start, "list length")
        if not size:  # [ | Tail] is Tail: the next term stands in for this one
            return _MORE
        return self._open(stack, _Frame(_LIST, size + 1, start))

    def _tuple(self, start: int, stack: list[_Frame]) -> object:
        if self.data[start] == SMALL_TUPLE_EXT:
            size = self.data[self._take(1, start, "SMALL_TUPLE_EXT arity")]
        else:
            size = self._u32(start, "LARGE_TUPLE_EXT arity")
        if not size:
            return ()
        self._count(size, start, "tuple arity")
        return self._open(stack, _Frame(_TUPLE, size, start))

    def _map(self, start: int, stack: list[_Frame]) -> object:
        size = self._u32(start, "MAP_EXT size")
        if not size:
            return {}
        self._count(size, start, "map size", unit=2)
        return self._open(stack, _Frame(_MAP, 2 * size, start))

    def _close(self, frame: _Frame) -> object:
        items = frame.items
        if frame.kind == _TUPLE:
            if _is_array_form(items):
                return self._array(items, frame.start)
            return tuple(items)
        if frame.kind == _LIST:
            return _join_list(items)
        if frame.kind == _MAP:
            return self._dict(items, frame.start)
        return self._close_fun(frame)

    def _dict(self, items: list[object], start: int) -> dict[object, object]:
        keys = items[0::2]
        try:
            result = dict(zip(keys, items[1::2], strict=True))
        except TypeError:
            kind = next(type(key).__name__ for key in keys if not _hashable(key))
            raise self.fail(
                f"map with a key of type {kind}",
                start,
                hint="a Python dict key must be hashable, so lists and maps cannot be keys",
            ) from None
        if len(result) != len(keys):
            raise self.fail(
                "map with keys that are equal in Python",
                start,
                hint="Erlang keeps 1 and 1.0 apart and never repeats a key; a dict cannot",
            )
        return result

    # Pids, ports, references and funs keep their bytes, to be sent back unchanged.

    def _pid(self, start: int, stack: list[_Frame]) -> object:
        node = self._name(start, "pid node")
        if self.data[start] == NEW_PID_EXT:
            fields = _PID_NEW.unpack_from(self.data, self._take(12, start, "NEW_PID_EXT"))
        else:
            fields = _PID_OLD.unpack_from(self.data, self._take(9, start, "PID_EXT"))
        pid = ErlangPid(node, *fields)
        _with_raw(pid, self._raw(start))
        return pid

    def _port(self, start: int, stack: list[_Frame]) -> object:
        node = self._name(start, "port node")
        layout = _PORT_LAYOUTS[self.data[start]]
        at = self._take(layout.size, start, "port")
        port = ErlangPort(node, *layout.unpack_from(self.data, at))
        _with_raw(port, self._raw(start))
        return port

    def _reference(self, start: int, stack: list[_Frame]) -> object:
        words = _U16.unpack_from(self.data, self._take(2, start, "reference length"))[0]
        if words > _MAX_REF_WORDS:
            raise self.fail(f"reference of {words} words (Erlang allows 5)", start)
        node = self._name(start, "reference node")
        width = 4 if self.data[start] == NEWER_REFERENCE_EXT else 1
        at = self._take(width + 4 * words, start, "reference")
        creation = self.data[at] if width == 1 else _U32.unpack_from(self.data, at)[0]
        ref = ErlangRef(node, creation, struct.unpack_from(f">{words}I", self.data, at + width))
        _with_raw(ref, self._raw(start))
        return ref

    def _old_reference(self, start: int, stack: list[_Frame]) -> object:
        node = self._name(start, "reference node")
        word, creation = _PORT_OLD.unpack_from(self.data, self._take(5, start, "REFERENCE_EXT"))
        ref = ErlangRef(node, creation, (word,))
        _with_raw(ref, self._raw(start))
        return ref

    def _export(self, start: int, stack: list[_Frame]) -> object:
        module = self._name(start, "fun module")
        function = self._name(start, "fun name")
        at = self._take(2, start, "EXPORT_EXT arity")
        if self.data[at] != SMALL_INTEGER_EXT:
            raise self.fail(f"fun arity with tag {self.data[at]}, not SMALL_INTEGER_EXT", at)
        fun = ErlangFun(module, function, self.data[at + 1])
        _with_raw(fun, self._raw(start))
        return fun

    def _new_fun(self, start: int, stack: list[_Frame]) -> object:
        head = self._take(_FUN_HEAD.size, start, "NEW_FUN_EXT")
        size, arity, _uniq, _index, free = _FUN_HEAD.unpack_from(self.data, head)
        end = start + 1 + size  # the size counts itself, not the tag
        if size < _FUN_HEAD.size or end > self.end:
            raise self.fail(f"NEW_FUN_EXT of size {size} with {self.end - head} bytes left", start)
        module = self._name(start, "fun module")
        for what in ("fun old index", "fun old uniq"):
            at = self._take(1, start, what)
            if self.data[at] not in (SMALL_INTEGER_EXT, INTEGER_EXT, SMALL_BIG_EXT):
                raise self.fail(f"{what} with tag {self.data[at]}, not an integer", at)
            _HANDLERS[self.data[at]](self, at, stack)
        at = self._take(1, start, "fun pid")
        if self.data[at] not in (NEW_PID_EXT, PID_EXT):
            raise self.fail(f"fun pid with tag {self.data[at]}, not a pid", at)
        self._pid(at, stack)
        frame = _Frame(_FUN, free, start, (module, arity, end))
        if not free:
            return self._close_fun(frame)
        self._count(free, start, "fun free variable count")
        return self._open(stack, frame)

    def _close_fun(self, frame: _Frame) -> object:
        module, arity, end = frame.fun or (Atom(""), 0, 0)
        if self.pos != end:
            raise self.fail(
                f"NEW_FUN_EXT that ends at offset {self.pos}, not at {end} as its size says",
                frame.start,
            )
        fun = ErlangFun(module, None, arity)
        _with_raw(fun, bytes(self.data[frame.start : end]))
        return fun

    # Arrays.

    def _array(self, items: list[object], start: int) -> object:
        _, dtype_text, shape, data = items
        if not isinstance(dtype_text, bytes) or not _DTYPE_TEXT.fullmatch(dtype_text):
            raise self.fail(
                f"ndarray with dtype {dtype_text!r}",
                start,
                hint='expected dtype.str as a binary, such as <<"<f4">>, of a bool, int, '
                "uint, float or complex dtype",
            )
        if not isinstance(shape, tuple) or not all(type(n) is int and n >= 0 for n in shape):
            raise self.fail(f"ndarray with shape {shape!r}", start, hint="expected ints >= 0")
        if not isinstance(data, memoryview):
            raise self.fail("ndarray whose data is not a binary", start)
        try:
            import numpy as np
        except ImportError as error:  # pragma: no cover - numpy is there in the tests
            raise self.fail("ndarray, but numpy is not installed", start) from error
        try:
            dtype = np.dtype(dtype_text.decode("ascii"))
        except (TypeError, ValueError):
            raise self.fail(f"ndarray with dtype {dtype_text!r}, unknown to numpy", start) from None
        if dtype.kind not in _ARRAY_KINDS or dtype.itemsize == 0:
            raise self.fail(f"ndarray with dtype {dtype_text!r} of kind {dtype.kind!r}", start)
        if math.prod(shape) * dtype.itemsize != len(data):
            raise self.fail(
                f"ndarray of {len(data)} data bytes for shape {shape} and dtype {dtype}", start
            )
        try:
            array = np.frombuffer(data, dtype=dtype).reshape(shape)
        except (ValueError, OverflowError) as error:
            raise self.fail(f"ndarray with shape {shape} ({error})", start) from None
        array.flags.writeable = False
        return array


_Handler = Callable[[_Decoder, int, list[_Frame]], object]
_HANDLERS: Final[dict[int, _Handler]] = {
    SMALL_INTEGER_EXT: _Decoder._small_integer,
    INTEGER_EXT: _Decoder._integer,
    SMALL_BIG_EXT: _Decoder._big,
    LARGE_BIG_EXT: _Decoder._big,
    NEW_FLOAT_EXT: _Decoder._new_float,
    FLOAT_EXT: _Decoder._float,
    ATOM_EXT: _Decoder._atom,
    SMALL_ATOM_EXT: _Decoder._atom,
    ATOM_UTF8_EXT: _Decoder._atom,
    SMALL_ATOM_UTF8_EXT: _Decoder._atom,
    BINARY_EXT: _Decoder._binary,
    BIT_BINARY_EXT: _Decoder._bit_binary,
    NIL_EXT: _Decoder._nil,
    STRING_EXT: _Decoder._string,
    LIST_EXT: _Decoder._list,
    SMALL_TUPLE_EXT: _Decoder._tuple,
    LARGE_TUPLE_EXT: _Decoder._tuple,
    MAP_EXT: _Decoder._map,
    NEW_PID_EXT: _Decoder._pid,
    PID_EXT: _Decoder._pid,
    NEW_PORT_EXT: _Decoder._port,
    V4_PORT_EXT: _Decoder._port,
    PORT_EXT: _Decoder._port,
    NEWER_REFERENCE_EXT: _Decoder._reference,
    NEW_REFERENCE_EXT: _Decoder._reference,
    REFERENCE_EXT: _Decoder._old_reference,
    NEW_FUN_EXT: _Decoder._new_fun,
    EXPORT_EXT: _Decoder._export,
}


def _is_array_data(frame: _Frame) -> bool:
    """Whether the next value completes ``{ndarray, Dtype, Shape, Data}`` as its Data."""
    items = frame.items
    return frame.kind == _TUPLE and frame.size == 4 and len(items) == 3 and _is_array_tag(items)


def _is_array_form(items: list[object]) -> bool:
    return len(items) == 4 and _is_array_tag(items)


def _is_array_tag(items: list[object]) -> bool:
    return type(items[0]) is Atom and items[0] == "ndarray"


def _join_list(items: list[object]) -> object:
    """A list from its elements and tail: ``[a | [b]]`` is ``[a, b]``, ``[a | b]`` improper."""
    tail = items.pop()
    if isinstance(tail, list):
        return items + tail
    if isinstance(tail, ImproperList):
        return ImproperList((*items, *tail.items), tail.tail)
    return ImproperList(tuple(items), tail)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
