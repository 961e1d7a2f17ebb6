"""``decode``: the bytes ``term_to_binary`` wrote to a Python value.

``corral.port.etf``'s docstring maps every term to its Python value. One module, over the
usual size, because ``_Decoder`` and ``_HANDLERS`` are one unit: the handlers are its methods.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable
from typing import Final

from corral.port.etf.compressed import decompress
from corral.port.etf.tags import (
    ARRAY_KINDS,
    ATOM_EXT,
    ATOM_UTF8_EXT,
    BINARY_EXT,
    BIT_BINARY_EXT,
    COMPRESSED,
    EXPORT_EXT,
    F64,
    FLOAT_EXT,
    FUN_HEAD,
    I32,
    INTEGER_EXT,
    LARGE_BIG_EXT,
    LARGE_TUPLE_EXT,
    LIST_EXT,
    MAP_EXT,
    MAX_ATOM_CHARS,
    MAX_DEPTH,
    MAX_INFLATED_SIZE,
    MAX_REF_WORDS,
    NEW_FLOAT_EXT,
    NEW_FUN_EXT,
    NEW_PID_EXT,
    NEW_PORT_EXT,
    NEW_REFERENCE_EXT,
    NEWER_REFERENCE_EXT,
    NIL_EXT,
    PID_EXT,
    PID_NEW,
    PID_OLD,
    PORT_EXT,
    PORT_NEW,
    PORT_OLD,
    PORT_V4,
    REFERENCE_EXT,
    SMALL_ATOM_EXT,
    SMALL_ATOM_UTF8_EXT,
    SMALL_BIG_EXT,
    SMALL_INTEGER_EXT,
    SMALL_TUPLE_EXT,
    STRING_EXT,
    U16,
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
    EtfError,
    ImproperList,
    with_raw,
)

_UNSUPPORTED: Final = {
    68: "the distribution header (DIST_HEADER), which only the distribution protocol uses",
    COMPRESSED: "a compressed term (tag 80) inside a term; only a whole term is compressed",
    82: "ATOM_CACHE_REF, which only the distribution protocol uses",
    117: "FUN_EXT, removed in OTP 23",
    121: "LOCAL_EXT, which only the node that wrote it can read",
}

_FLOAT_TEXT: Final = re.compile(rb"[+-]?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?")
_DTYPE_TEXT: Final = re.compile(rb"[<>|=]?[biufc][0-9]{1,2}")

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


def decode(
    data: bytes | bytearray | memoryview, *, max_inflated_size: int = MAX_INFLATED_SIZE
) -> object:
    """Decode one term that ``term_to_binary`` wrote (version byte 131 first).

    See the module's mapping table. Raises ``EtfError`` for anything but exactly one valid
    term, and ``TypeError`` for a buffer that is not contiguous. Decoded arrays may be views
    of ``data``. A compressed term (tag 80) that claims more than ``max_inflated_size``
    bytes (64 MiB by default) is an ``EtfError`` before anything is inflated. Pure CPU work.
    """
    if type(max_inflated_size) is not int or max_inflated_size < 0:
        raise ValueError(
            f"decode: max_inflated_size must be an int >= 0 (bytes); got {max_inflated_size!r}"
        )
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
        decoder = _Decoder(decompress(view, max_inflated_size), 0, compressed=True)
    else:
        decoder = _Decoder(view, 1, compressed=False)
    value = decoder.term()
    if decoder.pos != decoder.end:
        extra = decoder.end - decoder.pos
        raise decoder.fail(f"{extra} trailing byte{'s' * (extra > 1)} after the term", decoder.pos)
    return value


_SPECIAL_ATOMS: Final[dict[str, object]] = {"true": True, "false": False, "nil": None}
_ATOM_TAGS: Final = {
    ATOM_EXT: (2, "latin-1"),
    SMALL_ATOM_EXT: (1, "latin-1"),
    ATOM_UTF8_EXT: (2, "utf-8"),
    SMALL_ATOM_UTF8_EXT: (1, "utf-8"),
}
_PORT_LAYOUTS: Final = {V4_PORT_EXT: PORT_V4, NEW_PORT_EXT: PORT_NEW, PORT_EXT: PORT_OLD}


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
        value: int = U32.unpack_from(self.data, self._take(4, start, what))[0]
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
        return I32.unpack_from(self.data, start + 1)[0]

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
        value: float = F64.unpack_from(self.data, start + 1)[0]
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
        size = self.data[at] if width == 1 else U16.unpack_from(self.data, at)[0]
        at = self._take(size, start, "atom")
        try:
            text = str(self.data[at : at + size], encoding)
        except UnicodeDecodeError as error:
            raise self.fail(f"atom with invalid UTF-8 ({error.reason})", start) from None
        if len(text) > MAX_ATOM_CHARS:
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
        size = U16.unpack_from(self.data, self._take(2, start, "STRING_EXT length"))[0]
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
            fields = PID_NEW.unpack_from(self.data, self._take(12, start, "NEW_PID_EXT"))
        else:
            fields = PID_OLD.unpack_from(self.data, self._take(9, start, "PID_EXT"))
        pid = ErlangPid(node, *fields)
        with_raw(pid, self._raw(start))
        return pid

    def _port(self, start: int, stack: list[_Frame]) -> object:
        node = self._name(start, "port node")
        layout = _PORT_LAYOUTS[self.data[start]]
        at = self._take(layout.size, start, "port")
        port = ErlangPort(node, *layout.unpack_from(self.data, at))
        with_raw(port, self._raw(start))
        return port

    def _reference(self, start: int, stack: list[_Frame]) -> object:
        words = U16.unpack_from(self.data, self._take(2, start, "reference length"))[0]
        if words > MAX_REF_WORDS:
            raise self.fail(f"reference of {words} words (Erlang allows 5)", start)
        node = self._name(start, "reference node")
        width = 4 if self.data[start] == NEWER_REFERENCE_EXT else 1
        at = self._take(width + 4 * words, start, "reference")
        creation = self.data[at] if width == 1 else U32.unpack_from(self.data, at)[0]
        ref = ErlangRef(node, creation, struct.unpack_from(f">{words}I", self.data, at + width))
        with_raw(ref, self._raw(start))
        return ref

    def _old_reference(self, start: int, stack: list[_Frame]) -> object:
        node = self._name(start, "reference node")
        word, creation = PORT_OLD.unpack_from(self.data, self._take(5, start, "REFERENCE_EXT"))
        ref = ErlangRef(node, creation, (word,))
        with_raw(ref, self._raw(start))
        return ref

    def _export(self, start: int, stack: list[_Frame]) -> object:
        module = self._name(start, "fun module")
        function = self._name(start, "fun name")
        at = self._take(2, start, "EXPORT_EXT arity")
        if self.data[at] != SMALL_INTEGER_EXT:
            raise self.fail(f"fun arity with tag {self.data[at]}, not SMALL_INTEGER_EXT", at)
        fun = ErlangFun(module, function, self.data[at + 1])
        with_raw(fun, self._raw(start))
        return fun

    def _new_fun(self, start: int, stack: list[_Frame]) -> object:
        head = self._take(FUN_HEAD.size, start, "NEW_FUN_EXT")
        size, arity, _uniq, _index, free = FUN_HEAD.unpack_from(self.data, head)
        end = start + 1 + size  # the size counts itself, not the tag
        if size < FUN_HEAD.size or end > self.end:
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
        with_raw(fun, bytes(self.data[frame.start : end]))
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
        if dtype.kind not in ARRAY_KINDS or dtype.itemsize == 0:
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
