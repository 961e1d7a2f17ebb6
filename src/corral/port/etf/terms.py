"""Python classes for the Erlang terms that have no Python twin, and ``EtfError``.

``corral.port.etf``'s docstring maps every term to its Python value.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from corral.errors import ProtocolError
from corral.port.etf.tags import MAX_ATOM_CHARS, MAX_REF_WORDS


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
        if len(text) > MAX_ATOM_CHARS:
            raise ValueError(
                f"Atom: an atom has at most {MAX_ATOM_CHARS} characters; got {len(text)}"
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
        if not isinstance(self.ids, tuple) or len(self.ids) > MAX_REF_WORDS:
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


OpaqueTerm = ErlangPid | ErlangPort | ErlangRef | ErlangFun


def with_raw(value: OpaqueTerm, raw: bytes) -> None:
    object.__setattr__(value, "_raw", raw)
