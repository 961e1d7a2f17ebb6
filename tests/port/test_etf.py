"""corral.port.etf: Erlang's External Term Format, checked by hand, by hypothesis and by erl."""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from corral.errors import CorralError, ProtocolError
from corral.port.etf import (
    MAX_DEPTH,
    MAX_INFLATED_SIZE,
    Atom,
    BitBinary,
    ErlangFun,
    ErlangPid,
    ErlangPort,
    ErlangRef,
    EtfError,
    ImproperList,
    decode,
    encode,
)

NODE = Atom("nonode@nohost")
NODE_ATOM_EXT = bytes([100, 0, 13]) + b"nonode@nohost"

# Written by OTP 25's term_to_binary (see test_decodes_what_erlang_wrote for live ones).
OTP_PID = bytes([131, 88]) + NODE_ATOM_EXT + bytes([0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0])
OTP_REF = (
    bytes([131, 90, 0, 3])
    + NODE_ATOM_EXT
    + bytes([0, 0, 0, 0, 0, 2, 123, 198, 249, 136, 0, 1, 49, 10, 30, 77])
)
OTP_PORT = bytes([131, 89]) + NODE_ATOM_EXT + bytes([0, 0, 0, 0, 0, 0, 0, 0])
OTP_EXPORT = bytes([131, 113, 100, 0, 5]) + b"lists" + bytes([100, 0, 3]) + b"map" + bytes([97, 2])
# fun(X) -> X end from erl_eval, with its whole environment as free variables.
OTP_LOCAL_FUN = bytes.fromhex(
    "8370000000a001065361aa461590d1bdf1eb62d1a6eb080000002a0000000164000865726c5f6576"
    "616c612a6200329b0d5864000d6e6f6e6f6465406e6f686f73740000000900000000000000006806"
    "61056a6400046e6f6e656400046e6f6e6574000000006c000000016805640006636c617573656105"
    "6c0000000168036400037661726105640001586a6a6c000000016803640003766172610564000158"
    "6a6a"
)
# lists:duplicate(100, a), [compressed]
OTP_COMPRESSED = bytes.fromhex("835000000196789ccb616060484961604c1cc5830767010030464e93")


# Hypothesis runs the same examples every time: tests are deterministic.
DETERMINISTIC = settings(deadline=None, derandomize=True, database=None)


def b(*values: int) -> bytes:
    return bytes(values)


# --- known byte vectors, derived by hand from the ETF documentation ---------------------

ENCODINGS = [
    pytest.param(0, b(131, 97, 0), id="small-int-0"),
    pytest.param(1, b(131, 97, 1), id="small-int-1"),
    pytest.param(255, b(131, 97, 255), id="small-int-255"),
    pytest.param(256, b(131, 98, 0, 0, 1, 0), id="int-256"),
    pytest.param(-1, b(131, 98, 255, 255, 255, 255), id="int-minus-1"),
    pytest.param(-(2**31), b(131, 98, 128, 0, 0, 0), id="int-min"),
    pytest.param(2**31 - 1, b(131, 98, 127, 255, 255, 255), id="int-max"),
    pytest.param(2**31, b(131, 110, 4, 0, 0, 0, 0, 128), id="small-big-2^31"),
    pytest.param(-(2**31) - 1, b(131, 110, 4, 1, 1, 0, 0, 128), id="small-big-negative"),
    pytest.param(2**32, b(131, 110, 5, 0, 0, 0, 0, 0, 1), id="small-big-2^32"),
    pytest.param(2**2032, b(131, 110, 255, 0) + bytes(254) + b(1), id="small-big-255-bytes"),
    pytest.param(-(2**2048), b(131, 111, 0, 0, 1, 1, 1) + bytes(256) + b(1), id="large-big"),
    pytest.param(1.5, b(131, 70, 63, 248, 0, 0, 0, 0, 0, 0), id="float"),
    pytest.param(-0.0, b(131, 70, 128, 0, 0, 0, 0, 0, 0, 0), id="float-minus-zero"),
    pytest.param(Atom("ok"), b(131, 119, 2, 111, 107), id="atom"),
    pytest.param(Atom(""), b(131, 119, 0), id="atom-empty"),
    pytest.param(Atom("é"), b(131, 119, 2, 195, 169), id="atom-utf8"),
    pytest.param(Atom("日" * 100), b(131, 118, 1, 44) + "日".encode() * 100, id="atom-utf8-long"),
    pytest.param(True, b(131, 119, 4) + b"true", id="true"),
    pytest.param(False, b(131, 119, 5) + b"false", id="false"),
    pytest.param(None, b(131, 119, 3) + b"nil", id="none-is-nil"),
    pytest.param(b"hi", b(131, 109, 0, 0, 0, 2, 104, 105), id="binary"),
    pytest.param(b"", b(131, 109, 0, 0, 0, 0), id="binary-empty"),
    pytest.param("hé", b(131, 109, 0, 0, 0, 3, 104, 195, 169), id="str-is-utf8-binary"),
    pytest.param(bytearray(b"x"), b(131, 109, 0, 0, 0, 1, 120), id="bytearray"),
    pytest.param(memoryview(b"xy")[1:], b(131, 109, 0, 0, 0, 1, 121), id="memoryview"),
    pytest.param(BitBinary(b"\x80", 1), b(131, 77, 0, 0, 0, 1, 1, 128), id="bitstring-1:1"),
    pytest.param(BitBinary(b"\x03\xa0", 3), b(131, 77, 0, 0, 0, 2, 3, 3, 160), id="bitstring"),
    pytest.param([], b(131, 106), id="nil"),
    pytest.param([1, 2, 3], b(131, 107, 0, 3, 1, 2, 3), id="string-ext"),
    pytest.param([1, Atom("a")], b(131, 108, 0, 0, 0, 2, 97, 1, 119, 1, 97, 106), id="list"),
    pytest.param([True], b(131, 108, 0, 0, 0, 1, 119, 4) + b"true" + b(106), id="bools-no-string"),
    pytest.param([256], b(131, 108, 0, 0, 0, 1, 98, 0, 0, 1, 0, 106), id="big-ints-no-string"),
    pytest.param(ImproperList((1,), 2), b(131, 108, 0, 0, 0, 1, 97, 1, 97, 2), id="improper"),
    pytest.param((), b(131, 104, 0), id="tuple-empty"),
    pytest.param(
        (Atom("ok"), b"hi"),
        b(131, 104, 2, 119, 2, 111, 107, 109, 0, 0, 0, 2, 104, 105),
        id="tuple-ok-hi",
    ),
    pytest.param(tuple([0] * 256), b(131, 105, 0, 0, 1, 0) + b(97, 0) * 256, id="large-tuple"),
    pytest.param({}, b(131, 116, 0, 0, 0, 0), id="map-empty"),
    pytest.param(
        {Atom("a"): 1, b"b": 2},
        b(131, 116, 0, 0, 0, 2, 119, 1, 97, 97, 1, 109, 0, 0, 0, 1, 98, 97, 2),
        id="map",
    ),
    pytest.param(
        ErlangPid(NODE, 9, 0, 3),
        b(131, 88, 119, 13) + b"nonode@nohost" + b(0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 3),
        id="pid-built-in-python",
    ),
    pytest.param(
        ErlangPort(NODE, 7, 1),
        b(131, 89, 119, 13) + b"nonode@nohost" + b(0, 0, 0, 7, 0, 0, 0, 1),
        id="port-built-in-python",
    ),
    pytest.param(
        ErlangPort(NODE, 2**40, 1),
        b(131, 120, 119, 13) + b"nonode@nohost" + b(0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1),
        id="v4-port-built-in-python",
    ),
    pytest.param(
        ErlangRef(NODE, 2, (1, 2)),
        b(131, 90, 0, 2, 119, 13) + b"nonode@nohost" + b(0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2),
        id="ref-built-in-python",
    ),
    pytest.param(
        ErlangFun(Atom("lists"), Atom("map"), 2),
        b(131, 113, 119, 5) + b"lists" + b(119, 3) + b"map" + b(97, 2),
        id="export-fun-built-in-python",
    ),
]


@pytest.mark.parametrize(("value", "expected"), ENCODINGS)
def test_encode_writes_the_documented_bytes(value: object, expected: bytes) -> None:
    assert encode(value) == expected


DECODINGS = [
    pytest.param(b(131, 100, 0, 2, 111, 107), Atom("ok"), id="atom-ext"),
    pytest.param(b(131, 115, 2, 111, 107), Atom("ok"), id="small-atom-ext"),
    pytest.param(b(131, 100, 0, 1, 233), Atom("é"), id="atom-ext-is-latin-1"),
    pytest.param(b(131, 119, 3) + "日".encode(), Atom("日"), id="small-atom-utf8"),
    pytest.param(b(131, 118, 0, 2, 111, 107), Atom("ok"), id="atom-utf8"),
    pytest.param(b(131, 100, 0, 4) + b"true", True, id="true-in-latin-1"),
    pytest.param(b(131, 115, 3) + b"nil", None, id="nil-is-none"),
    pytest.param(b(131, 119, 9) + b"undefined", Atom("undefined"), id="undefined-stays-atom"),
    pytest.param(b(131, 99) + b"1.50000000000000000000e+00" + bytes(5), 1.5, id="float-ext-string"),
    pytest.param(b(131, 99) + b"-2.5e-3" + bytes(24), -0.0025, id="float-ext-short"),
    pytest.param(b(131, 110, 1, 2, 5), -5, id="any-nonzero-sign-is-negative"),
    pytest.param(b(131, 110, 0, 0), 0, id="empty-big-is-zero"),
    pytest.param(b(131, 111, 0, 0, 0, 1, 0, 200), 200, id="non-canonical-large-big"),
    pytest.param(b(131, 98, 0, 0, 0, 5), 5, id="non-canonical-integer"),
    pytest.param(b(131, 107, 0, 3, 97, 98, 99), [97, 98, 99], id="string-is-list-of-ints"),
    pytest.param(b(131, 107, 0, 0), [], id="empty-string"),
    pytest.param(b(131, 108, 0, 0, 0, 0, 97, 1), 1, id="list-of-nothing-is-its-tail"),
    pytest.param(
        b(131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 106), [1, 2], id="list-tail"
    ),
    pytest.param(b(131, 108, 0, 0, 0, 1, 97, 1, 107, 0, 1, 2), [1, 2], id="string-tail-joins"),
    pytest.param(
        b(131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 97, 3),
        ImproperList((1, 2), 3),
        id="improper-tail-joins",
    ),
    pytest.param(b(131, 77, 0, 0, 0, 0, 0), b"", id="empty-bitstring-is-binary"),
    pytest.param(b(131, 77, 0, 0, 0, 1, 8, 255), b"\xff", id="whole-byte-bitstring-is-binary"),
    pytest.param(
        b(131, 77, 0, 0, 0, 1, 1, 255), BitBinary(b"\x80", 1), id="bits-past-the-end-cleared"
    ),
    pytest.param(b(131, 105, 0, 0, 0, 0), (), id="large-tuple-empty"),
    pytest.param(b(131, 105, 0, 0, 0, 1, 97, 7), (7,), id="large-tuple"),
    pytest.param(OTP_COMPRESSED, [Atom("a")] * 100, id="otp-compressed"),
]


@pytest.mark.parametrize(("data", "expected"), DECODINGS)
def test_decode_reads_the_documented_bytes(data: bytes, expected: object) -> None:
    assert same(decode(data), expected)


@pytest.mark.parametrize(("value", "data"), ENCODINGS)
def test_decode_reads_every_documented_encoding_back(value: object, data: bytes) -> None:
    assert same(decode(data), normal(value))


def test_decode_accepts_bytearray_and_memoryview() -> None:
    data = b"\x00" + encode((Atom("ok"), [1, 2]))
    assert decode(bytearray(data[1:])) == (Atom("ok"), [1, 2])
    assert decode(memoryview(data)[1:]) == (Atom("ok"), [1, 2])
    assert decode(cast(memoryview, memoryview(encode(7)).cast("c"))) == 7  # any format


def test_decode_refuses_a_buffer_that_is_not_contiguous() -> None:
    with pytest.raises(TypeError, match=r"^decode: data must be a contiguous buffer$"):
        decode(memoryview(b"\x83\x00a\x00\x01")[::2])


# --- pids, ports, references and funs ---------------------------------------------------

OPAQUE = [
    pytest.param(OTP_PID, ErlangPid(NODE, 9, 0, 0), id="new-pid"),
    pytest.param(
        b(131, 103) + NODE_ATOM_EXT + b(0, 0, 0, 1, 0, 0, 0, 2, 3),
        ErlangPid(NODE, 1, 2, 3),
        id="old-pid",
    ),
    pytest.param(OTP_PORT, ErlangPort(NODE, 0, 0), id="new-port"),
    pytest.param(
        b(131, 102) + NODE_ATOM_EXT + b(0, 0, 0, 1, 2), ErlangPort(NODE, 1, 2), id="old-port"
    ),
    pytest.param(
        b(131, 120) + NODE_ATOM_EXT + b(0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2),
        ErlangPort(NODE, 2**32 + 1, 2),
        id="v4-port",
    ),
    pytest.param(OTP_REF, ErlangRef(NODE, 0, (162758, 4186439681, 822746701)), id="newer-ref"),
    pytest.param(
        b(131, 114, 0, 1) + NODE_ATOM_EXT + b(3, 0, 0, 0, 7),
        ErlangRef(NODE, 3, (7,)),
        id="new-ref",
    ),
    pytest.param(
        b(131, 101) + NODE_ATOM_EXT + b(0, 0, 0, 7, 3), ErlangRef(NODE, 3, (7,)), id="old-ref"
    ),
    pytest.param(OTP_EXPORT, ErlangFun(Atom("lists"), Atom("map"), 2), id="export"),
    pytest.param(OTP_LOCAL_FUN, ErlangFun(Atom("erl_eval"), None, 1), id="local-fun"),
]


@pytest.mark.parametrize(("data", "expected"), OPAQUE)
def test_pids_ports_refs_and_funs_decode_and_re_encode_byte_for_byte(
    data: bytes, expected: object
) -> None:
    value = decode(data)
    assert value == expected
    assert type(value) is type(expected)
    assert encode(value) == data
    inner = data[1:]
    assert encode((value, [value])) == b(131, 104, 2) + inner + b(108, 0, 0, 0, 1) + inner + b(106)


def test_a_caller_tuple_of_pid_and_ref_echoes_back_unchanged() -> None:
    request = b(131, 104, 3) + OTP_PID[1:] + OTP_REF[1:] + b(119, 4) + b"ping"
    result = decode(request)
    assert isinstance(result, tuple)
    pid, ref, message = result
    assert (type(pid), type(ref), message) == (ErlangPid, ErlangRef, Atom("ping"))
    assert encode((pid, ref, Atom("ping"))) == request


def test_opaque_values_are_frozen_and_hashable() -> None:
    pid = decode(OTP_PID)
    assert {pid: 1}[ErlangPid(NODE, 9, 0, 0)] == 1
    with pytest.raises(AttributeError):
        pid.id = 1  # type: ignore[attr-defined]


def test_a_local_fun_built_in_python_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="a local fun can only be sent back as it was decoded"):
        encode(ErlangFun(Atom("m"), None, 0))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ErlangPid(cast(Atom, "node"), 1, 2, 3), "ErlangPid: node must be an Atom"),
        (lambda: ErlangPid(NODE, -1, 0, 0), "ErlangPid: id must be an int from 0 to 2**32-1"),
        (lambda: ErlangPort(NODE, 2**64, 0), "ErlangPort: id must be an int from 0 to 2**64-1"),
        (lambda: ErlangRef(NODE, 0, (1,) * 6), "ErlangRef: ids must be a tuple of at most 5"),
        (lambda: ErlangFun(Atom("m"), None, 256), "ErlangFun: arity must be an int from 0"),
        (lambda: BitBinary(b"", 1), "BitBinary: data must be non-empty bytes"),
        (lambda: BitBinary(b"\x80", 8), "BitBinary: bits must be 1 to 7"),
        (lambda: BitBinary(b"\x81", 1), "BitBinary: the low 7 bits of the last byte"),
        (lambda: ImproperList((), 1), "ImproperList: items must be a non-empty tuple"),
        (lambda: ImproperList((1,), [2]), "ImproperList: the tail must not be a list"),
        (lambda: Atom("x" * 256), "Atom: an atom has at most 255 characters; got 256"),
        (lambda: Atom(cast(str, 7)), "Atom: the text must be a str; got 7"),
    ],
)
def test_term_classes_validate_at_construction(build: Callable[[], object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message.replace("*", r"\*")):
        build()


def test_atom_is_a_str_equal_to_its_text() -> None:
    assert Atom("ok") == "ok"
    assert isinstance(Atom("ok"), str)
    assert repr(Atom("ok")) == "Atom('ok')"
    table: dict[str, int] = {Atom("ok"): 1}
    assert table["ok"] == 1
    with pytest.raises(AttributeError):
        Atom("ok").x = 1  # type: ignore[attr-defined]


# --- encode errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (math.inf, ValueError, "encode: Erlang has no inf or nan floats; got inf"),
        (-math.inf, ValueError, "encode: Erlang has no inf or nan floats; got -inf"),
        ([math.nan], ValueError, "encode: Erlang has no inf or nan floats; got nan"),
        ({1, 2}, TypeError, "encode: cannot encode a value of type builtins.set;"),
        (1j, TypeError, "encode: cannot encode a value of type builtins.complex;"),
        ((object(),), TypeError, "encode: cannot encode a value of type builtins.object;"),
        (np.complex64(1), TypeError, "encode: cannot encode a value of type numpy.complex64;"),
        (np.array(["a"]), TypeError, "encode: cannot encode an ndarray of dtype <U1;"),
        (np.array([None]), TypeError, "encode: cannot encode an ndarray of dtype object;"),
        (
            {"a": 1, b"a": 2},
            ValueError,
            "encode: dict keys 'a' and b'a' are the same Erlang term; "
            "an Erlang map cannot hold a key twice",
        ),
        (
            {True: 1, Atom("true"): 2},
            ValueError,
            "encode: dict keys True and Atom('true') are the same Erlang term;",
        ),
    ],
)
def test_encode_rejects_values_erlang_has_no_form_for(
    value: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        encode(value)
    assert str(caught.value).startswith(message)


def test_encode_names_the_type_it_cannot_encode_and_what_it_can() -> None:
    with pytest.raises(TypeError) as caught:
        encode([1, frozenset()])
    assert str(caught.value) == (
        "encode: cannot encode a value of type builtins.frozenset; Erlang terms come from "
        "None, bool, int, float, str, bytes, Atom, tuple, list, dict, numpy arrays and "
        "corral.port.etf's term classes"
    )


def test_encode_rejects_an_atom_longer_than_erlang_allows() -> None:
    long = str.__new__(Atom, "x" * 256)  # skips Atom's own check, as a subclass might
    with pytest.raises(ValueError, match=r"^encode: an atom has at most 255 characters; got 256$"):
        encode(long)


@pytest.mark.parametrize(
    ("level", "error", "message"),
    [
        (10, ValueError, "encode: compressed must be a zlib level 0..9; got 10"),
        (-1, ValueError, "encode: compressed must be a zlib level 0..9; got -1"),
        (True, TypeError, "encode: compressed must be an int or None; got True"),
        ("6", TypeError, "encode: compressed must be an int or None; got '6'"),
    ],
)
def test_encode_validates_the_compression_level(
    level: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        encode(1, compressed=level)  # type: ignore[arg-type]
    assert str(caught.value) == message


def test_compressed_encoding_is_smaller_and_decodes() -> None:
    value = [Atom("ok")] * 1000
    packed = encode(value, compressed=9)
    assert packed[:6] == b(131, 80) + len(encode(value)[1:]).to_bytes(4, "big")
    assert len(packed) < len(encode(value)) // 10
    assert decode(packed) == value


def test_compression_is_skipped_when_it_does_not_help() -> None:
    assert encode(1, compressed=6) == b(131, 97, 1)


# --- decode errors ----------------------------------------------------------------------

BAD = [
    pytest.param(
        b"",
        "invalid term: empty input at offset 0; a term starts with the version byte 131",
        id="empty",
    ),
    pytest.param(
        b(130, 97, 1),
        "invalid term: version byte 130 at offset 0; "
        "expected 131, the version term_to_binary writes",
        id="version",
    ),
    pytest.param(
        b(131), "invalid term: truncated input at offset 1; a term is missing there", id="no-term"
    ),
    pytest.param(
        b(131, 104, 2, 97, 1),
        "invalid term: truncated input at offset 5; a term is missing there",
        id="missing-element",
    ),
    pytest.param(b(131, 104, 2, 97, 1, 253), "invalid term: unknown tag 253 at offset 5", id="tag"),
    pytest.param(
        b(131, 82, 0),
        "invalid term: unsupported tag 82 at offset 1; "
        "ATOM_CACHE_REF, which only the distribution protocol uses",
        id="atom-cache-ref",
    ),
    pytest.param(
        b(131, 104, 1, 80, 0, 0, 0, 1),
        "invalid term: unsupported tag 80 at offset 3; "
        "a compressed term (tag 80) inside a term; only a whole term is compressed",
        id="nested-compressed",
    ),
    pytest.param(
        b(131, 97, 1, 0), "invalid term: 1 trailing byte after the term at offset 3", id="trailing"
    ),
    pytest.param(
        b(131, 106, 106, 106),
        "invalid term: 2 trailing bytes after the term at offset 2",
        id="trailing-2",
    ),
    pytest.param(
        b(131, 98, 0, 0),
        "invalid term: truncated INTEGER_EXT at offset 1; "
        "4 more bytes needed at offset 2, 2 remain",
        id="truncated-int",
    ),
    pytest.param(
        b(131, 109, 255, 255, 255, 255, 1, 2, 3),
        "invalid term: binary length 4294967295 at offset 1; "
        "that needs at least 4294967295 more bytes, 3 remain",
        id="huge-binary",
    ),
    pytest.param(
        b(131, 108, 255, 255, 255, 255, 106),
        "invalid term: list length 4294967295 at offset 1; "
        "that needs at least 4294967295 more bytes, 1 remain",
        id="huge-list",
    ),
    pytest.param(
        b(131, 105, 255, 255, 255, 255, 106),
        "invalid term: tuple arity 4294967295 at offset 1; "
        "that needs at least 4294967295 more bytes, 1 remain",
        id="huge-tuple",
    ),
    pytest.param(
        b(131, 116, 0, 0, 0, 3, 97, 1, 97, 1),
        "invalid term: map size 3 at offset 1; that needs at least 6 more bytes, 4 remain",
        id="huge-map",
    ),
    pytest.param(
        b(131, 111, 255, 255, 255, 255, 0, 1),
        "invalid term: big integer size 4294967295 at offset 1; "
        "that needs at least 4294967295 more bytes, 1 remain",
        id="huge-big",
    ),
    pytest.param(
        b(131, 77, 255, 255, 255, 255, 3, 1),
        "invalid term: bitstring length 4294967295 at offset 1; "
        "that needs at least 4294967295 more bytes, 1 remain",
        id="huge-bitstring",
    ),
    pytest.param(
        b(131, 107, 255, 255, 1),
        "invalid term: truncated STRING_EXT at offset 1; "
        "65535 more bytes needed at offset 4, 1 remain",
        id="huge-string",
    ),
    pytest.param(
        b(131, 119, 2, 0xFF, 0xFE),
        "invalid term: atom with invalid UTF-8 (invalid start byte) at offset 1",
        id="atom-utf8",
    ),
    pytest.param(
        b(131, 118, 1, 0) + b"x" * 256,
        "invalid term: atom of 256 characters (Erlang allows 255) at offset 1",
        id="atom-too-long",
    ),
    pytest.param(
        b(131, 70, 127, 240, 0, 0, 0, 0, 0, 0),
        "invalid term: float inf, which Erlang does not have at offset 1",
        id="float-inf",
    ),
    pytest.param(
        b(131, 70, 127, 248, 0, 0, 0, 0, 0, 0),
        "invalid term: float nan, which Erlang does not have at offset 1",
        id="float-nan",
    ),
    pytest.param(
        b(131, 99) + b"1_0" + bytes(28),
        "invalid term: FLOAT_EXT text b'1_0', which is not a finite float at offset 1",
        id="float-ext-text",
    ),
    pytest.param(
        b(131, 99) + b"1e999" + bytes(26),
        "invalid term: FLOAT_EXT text b'1e999', which is not a finite float at offset 1",
        id="float-ext-overflow",
    ),
    pytest.param(
        b(131, 77, 0, 0, 0, 1, 0, 1),
        "invalid term: bitstring of 1 bytes with 0 bits in the last at offset 1",
        id="bitstring-bits",
    ),
    pytest.param(
        b(131, 116, 0, 0, 0, 1, 106, 97, 1),
        "invalid term: map with a key of type list at offset 1; "
        "a Python dict key must be hashable, so lists and maps cannot be keys",
        id="map-list-key",
    ),
    pytest.param(
        b(131, 116, 0, 0, 0, 2, 97, 1, 97, 2, 70, 63, 240, 0, 0, 0, 0, 0, 0, 97, 3),
        "invalid term: map with keys that are equal in Python at offset 1; "
        "Erlang keeps 1 and 1.0 apart and never repeats a key; a dict cannot",
        id="map-1-and-1.0",
    ),
    pytest.param(
        b(131, 90, 0, 6) + NODE_ATOM_EXT + bytes(28),
        "invalid term: reference of 6 words (Erlang allows 5) at offset 1",
        id="ref-words",
    ),
    pytest.param(
        b(131, 88, 97, 1) + bytes(12),
        "invalid term: pid node with tag 97, which is not an atom at offset 2",
        id="pid-node",
    ),
    pytest.param(
        b(131, 113, 119, 1, 109, 119, 1, 102, 98, 0, 0, 0, 1),
        "invalid term: fun arity with tag 98, not SMALL_INTEGER_EXT at offset 8",
        id="export-arity",
    ),
    pytest.param(
        OTP_LOCAL_FUN[:2] + b(255, 255, 255, 0) + OTP_LOCAL_FUN[6:],
        "invalid term: NEW_FUN_EXT of size 4294967040 with 160 bytes left at offset 1",
        id="fun-size",
    ),
    pytest.param(
        OTP_LOCAL_FUN[:5] + b(159) + OTP_LOCAL_FUN[6:] + b(106),
        "invalid term: NEW_FUN_EXT that ends at offset 162, not at 161 as its size says "
        "at offset 1",
        id="fun-size-mismatch",
    ),
    pytest.param(
        b(131, 80, 0, 0),
        "invalid term: truncated compressed term: the 4-byte uncompressed size is missing "
        "at offset 1",
        id="compressed-header",
    ),
    pytest.param(
        b(131, 80, 255, 255, 255, 255, 120, 156, 1, 2),
        "invalid term: compressed term that claims 4294967295 bytes, more than "
        "max_inflated_size=67108864 at offset 1; a compressed term may inflate to at most "
        "that many bytes",
        id="compressed-huge",
    ),
    pytest.param(
        b(131, 80, 0, 0, 32, 0, 120, 156, 1, 2),
        "invalid term: compressed term that claims 8192 bytes from 4 bytes of zlib data "
        "at offset 1",
        id="compressed-ratio",
    ),
    pytest.param(
        b(131, 80, 0, 0, 0, 10) + b"not zlib data",
        "invalid term: corrupt zlib data (Error -3 while decompressing data: "
        "incorrect header check) at offset 6",
        id="compressed-corrupt",
    ),
    pytest.param(
        OTP_COMPRESSED[:-6],
        "invalid term: truncated zlib data: no end of stream after 405 bytes at offset 6",
        id="compressed-truncated",
    ),
    pytest.param(
        b(131, 80, 0, 0, 1, 149) + OTP_COMPRESSED[6:],
        "invalid term: zlib data that holds more than the 405 bytes claimed at offset 6",
        id="compressed-longer",
    ),
    pytest.param(
        b(131, 80, 0, 0, 1, 151) + OTP_COMPRESSED[6:],
        "invalid term: zlib data that holds 406 bytes, not the 407 claimed at offset 6",
        id="compressed-shorter",
    ),
    pytest.param(
        OTP_COMPRESSED + b"xy",
        "invalid term: 2 trailing bytes after the zlib data at offset 28",
        id="compressed-trailing",
    ),
    pytest.param(
        # zlib.compress(bytes([97, 1, 0])): the integer 1, then a stray byte
        b(131, 80, 0, 0, 0, 3, 120, 156, 75, 100, 100, 0, 0, 1, 40, 0, 99),
        "invalid term: 1 trailing byte after the term at offset 2 of the decompressed term",
        id="compressed-inner-offset",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_malformed_input_raises_etf_error_saying_what_and_where(data: bytes, message: str) -> None:
    with pytest.raises(EtfError) as caught:
        decode(data)
    assert str(caught.value) == message
    assert isinstance(caught.value, ProtocolError)
    assert isinstance(caught.value, CorralError)


def test_etf_error_carries_the_offset() -> None:
    with pytest.raises(EtfError) as caught:
        decode(b(131, 104, 2, 97, 1, 253))
    assert (caught.value.offset, caught.value.what, caught.value.compressed) == (
        5,
        "unknown tag 253",
        False,
    )


HUGE_LENGTHS = [
    pytest.param(b(131, 109, 255, 255, 255, 255), id="binary"),
    pytest.param(b(131, 77, 255, 255, 255, 255, 1), id="bitstring"),
    pytest.param(b(131, 108, 255, 255, 255, 255), id="list"),
    pytest.param(b(131, 105, 255, 255, 255, 255), id="tuple"),
    pytest.param(b(131, 116, 255, 255, 255, 255), id="map"),
    pytest.param(b(131, 111, 255, 255, 255, 255, 0), id="big"),
    pytest.param(b(131, 118, 255, 255), id="atom"),
    pytest.param(b(131, 107, 255, 255), id="string"),
    pytest.param(b(131, 90, 255, 255), id="reference"),
    pytest.param(b(131, 112, 255, 255, 255, 255) + bytes(25), id="fun-size"),
    pytest.param(
        OTP_LOCAL_FUN[:27] + b(255, 255, 255, 255) + OTP_LOCAL_FUN[31:], id="fun-free-vars"
    ),
    pytest.param(b(131, 80, 255, 255, 255, 255, 120, 156, 3, 0), id="compressed"),
]


@pytest.mark.parametrize("data", HUGE_LENGTHS)
def test_a_4gb_length_in_a_few_bytes_fails_without_allocating(data: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(EtfError):
            decode(data + b"\0" * 4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_a_zlib_bomb_is_decompressed_no_further_than_its_header_claims() -> None:
    import zlib

    bomb = zlib.compress(bytes(10_000_000), 9)  # 10 MB of zeros in ~10 kB
    data = b(131, 80, 0, 0, 0, 16) + bomb
    tracemalloc.start()
    try:
        with pytest.raises(EtfError, match="holds more than the 16 bytes claimed"):
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def zeros_bomb(size: int) -> bytes:
    """A compressed term holding a binary of ``size - 5`` zero bytes: ``size`` inflated
    bytes, about a thousandth of that on the wire, and an honest header."""
    import zlib

    inflater = zlib.compressobj(9)
    parts = [inflater.compress(b(109) + struct.pack(">I", size - 5))]
    chunk = bytes(1 << 20)
    left = size - 5
    while left:
        parts.append(inflater.compress(chunk[: min(left, len(chunk))]))
        left -= min(left, len(chunk))
    parts.append(inflater.flush())
    return b(131, 80) + struct.pack(">I", size) + b"".join(parts)


def test_a_compressed_term_that_claims_more_than_64_mib_fails_before_inflating() -> None:
    # An honest bomb: its zlib data really holds what it claims, 64 MiB + 1 bytes in ~65 kB.
    data = zeros_bomb(MAX_INFLATED_SIZE + 1)
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(EtfError) as caught:
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(caught.value) == (
        "invalid term: compressed term that claims 67108865 bytes, more than "
        "max_inflated_size=67108864 at offset 1; a compressed term may inflate to at most "
        "that many bytes"
    )
    assert peak < 64 * 1024


def test_max_inflated_size_bounds_a_compressed_term_exactly() -> None:
    data = zeros_bomb(4096)
    assert decode(data, max_inflated_size=4096) == bytes(4091)
    with pytest.raises(EtfError, match="claims 4096 bytes, more than max_inflated_size=4095"):
        decode(data, max_inflated_size=4095)
    assert decode(b(131, 97, 1), max_inflated_size=0) == 1  # plain terms are not bounded


@pytest.mark.parametrize("limit", [-1, 1.5, "64", True, None])
def test_decode_validates_max_inflated_size(limit: object) -> None:
    with pytest.raises(ValueError) as caught:
        decode(b(131, 97, 1), max_inflated_size=limit)  # type: ignore[arg-type]
    assert str(caught.value) == (
        f"decode: max_inflated_size must be an int >= 0 (bytes); got {limit!r}"
    )


# --- nesting ----------------------------------------------------------------------------


def nested_lists(depth: int) -> bytes:
    """``[[...[]...]]``: the innermost ``[]`` inside ``depth`` one-element lists."""
    return b(131) + b(108, 0, 0, 0, 1) * depth + b(106) + b(106) * depth


def test_decode_accepts_terms_nested_max_depth_deep() -> None:
    value = decode(nested_lists(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        assert isinstance(value, list) and len(value) == 1
        value = value[0]
    assert value == []


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        pytest.param(nested_lists(MAX_DEPTH + 1), 1 + 5 * MAX_DEPTH, id="lists"),
        pytest.param(b(131) + b(104, 1) * 10_000 + b(106), 1 + 2 * MAX_DEPTH, id="tuples"),
        pytest.param(
            b(131) + b(116, 0, 0, 0, 1, 97, 1) * 5000 + b(106), 1 + 7 * MAX_DEPTH, id="maps"
        ),
    ],
)
def test_decode_rejects_nesting_deeper_than_max_depth(data: bytes, offset: int) -> None:
    with pytest.raises(EtfError) as caught:
        decode(data)
    assert str(caught.value) == (
        f"invalid term: term nests deeper than 1000 levels (MAX_DEPTH) at offset {offset}"
    )


def test_a_long_chain_of_empty_list_headers_does_not_recurse() -> None:
    data = b(131) + b(108, 0, 0, 0, 0) * 100_000 + b(97, 7)
    assert decode(data) == 7


def deep(depth: int) -> list[object]:
    value: list[object] = []
    for _ in range(depth):
        value = [value]
    return value


def test_encode_accepts_terms_nested_max_depth_deep() -> None:
    assert encode(deep(MAX_DEPTH)) == nested_lists(MAX_DEPTH)


def test_encode_rejects_nesting_deeper_than_max_depth_and_cycles() -> None:
    message = (
        "encode: the term nests deeper than 1000 levels (MAX_DEPTH); "
        "a list or dict that contains itself does this"
    )
    with pytest.raises(ValueError) as caught:
        encode(deep(MAX_DEPTH + 1))
    assert str(caught.value) == message
    cyclic: list[object] = [1]
    cyclic.append(cyclic)
    with pytest.raises(ValueError) as caught:
        encode(cyclic)
    assert str(caught.value) == message


# --- property-based round trips ---------------------------------------------------------


def normal(value: object) -> object:
    """The value ``decode(encode(value))`` gives: str as UTF-8 bytes, special atoms as such."""
    if isinstance(value, Atom):
        return {"true": True, "false": False, "nil": None}.get(value, value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, list):
        return [normal(item) for item in value]
    if isinstance(value, tuple):
        return tuple(normal(item) for item in value)
    if isinstance(value, dict):
        return {normal(key): normal(item) for key, item in value.items()}
    if isinstance(value, ImproperList):
        return ImproperList(tuple(normal(item) for item in value.items), normal(value.tail))
    return value


def same(left: object, right: object) -> bool:
    """Equal, and of the same types all the way down (so 1 is not True, 0.0 not -0.0)."""
    if type(left) is not type(right):
        return False
    if isinstance(left, np.ndarray):
        assert isinstance(right, np.ndarray)
        return (left.dtype, left.shape, left.tobytes()) == (
            right.dtype,
            right.shape,
            right.tobytes(),
        )
    if isinstance(left, float):
        return struct.pack(">d", left) == struct.pack(">d", right)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(  # type: ignore[arg-type]
            same(x, y)
            for x, y in zip(left, right, strict=True)  # type: ignore[call-overload]
        )
    if isinstance(left, dict):
        assert isinstance(right, dict)
        keys = {key: key for key in right}
        return len(left) == len(right) and all(
            key in keys and same(key, keys[key]) and same(item, right[key])
            for key, item in left.items()
        )
    if isinstance(left, ImproperList):
        assert isinstance(right, ImproperList)
        return same(left.items, right.items) and same(left.tail, right.tail)
    return left == right


def bit_binary(data: bytes, bits: int) -> BitBinary:
    return BitBinary(data[:-1] + bytes([data[-1] & (0xFF << (8 - bits)) & 0xFF]), bits)


atoms = st.text(max_size=30).filter(lambda text: text not in ("true", "false", "nil")).map(Atom)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**2100), max_value=2**2100),
    st.floats(allow_nan=False, allow_infinity=False),
)
key_leaves = st.one_of(
    st.none(),
    st.booleans(),
    numbers,
    atoms,
    st.binary(max_size=20),
    st.builds(bit_binary, st.binary(min_size=1, max_size=4), st.integers(1, 7)),
)
leaves = key_leaves | st.text(max_size=20)
# No str keys: a dict may not hold both "a" and b"a", which are one Erlang term.
keys = st.recursive(key_leaves, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=6)


def containers(inner: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.lists(inner, max_size=6),
        st.lists(st.integers(0, 255), max_size=6),
        st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(keys, inner, max_size=5),
        st.builds(ImproperList, st.lists(inner, min_size=1, max_size=4).map(tuple), leaves),
    )


terms = st.recursive(leaves, containers, max_leaves=40)


@settings(DETERMINISTIC, max_examples=400)
@given(terms)
def test_decode_of_encode_gives_the_value_back(value: object) -> None:
    data = encode(value)
    assert same(decode(data), normal(value))
    assert encode(decode(data)) == data


@settings(DETERMINISTIC, max_examples=100)
@given(terms, st.integers(0, 9))
def test_compressed_round_trips_at_every_level(value: object, level: int) -> None:
    assert same(decode(encode(value, compressed=level)), normal(value))


array_dtypes = st.sampled_from(
    ["|b1", "|i1", "|u1", "<i2", ">i2", "<u4", "<i8", "<u8", "<f2", "<f4", ">f4", "<f8", "<c16"]
)


@settings(DETERMINISTIC, max_examples=200)
@given(
    hnp.arrays(
        dtype=array_dtypes,
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)
def test_ndarrays_round_trip_with_dtype_and_shape(array: np.ndarray) -> None:
    data = encode(array)
    result = decode(data)
    assert isinstance(result, np.ndarray)
    assert same(result, array)
    assert not result.flags.writeable
    assert decode(encode((Atom("batch"), [array]))) is not None


def test_ndarray_wire_form_is_the_documented_tuple() -> None:
    array = np.arange(6, dtype="<f4").reshape(2, 3)
    tuple_form = (Atom("ndarray"), b"<f4", (2, 3), array.tobytes())
    assert encode(array) == encode(tuple_form)
    assert same(decode(encode(tuple_form)), array)


@pytest.mark.parametrize(
    "array",
    [
        pytest.param(np.array(3.5, dtype="<f8"), id="0-d"),
        pytest.param(np.zeros((0, 3), dtype="<f4"), id="empty"),
        pytest.param(np.arange(12, dtype=">i4").reshape(3, 4).T, id="fortran-order-big-endian"),
        pytest.param(np.arange(10, dtype="<i2")[::3], id="strided"),
        pytest.param(np.array([True, False]), id="bool"),
    ],
)
def test_ndarrays_of_every_layout_arrive_in_c_order(array: np.ndarray) -> None:
    result = decode(encode(array))
    assert isinstance(result, np.ndarray)
    assert (result.dtype, result.shape) == (array.dtype, array.shape)
    assert np.array_equal(result, array)


def test_decoded_ndarray_is_a_read_only_view_of_the_input() -> None:
    buffer = bytearray(encode(np.arange(4, dtype="<f8")))
    result = decode(buffer)
    assert isinstance(result, np.ndarray)
    assert not result.flags.writeable
    buffer[-8:] = struct.pack("<d", 42.0)
    assert result[-1] == 42.0  # no copy was made


def test_numpy_scalars_encode_as_python_numbers() -> None:
    assert encode(np.float32(2.5)) == encode(2.5)
    assert encode(np.int64(-3)) == encode(-3)
    assert encode(np.uint8(7)) == encode(7)
    assert encode(np.bool_(True)) == encode(True)


def test_numpy_is_not_imported_to_encode_or_decode_plain_terms() -> None:
    code = (
        "import sys\n"
        "from corral.port.etf import Atom, decode, encode\n"
        "assert decode(encode((Atom('ok'), [1, 2.5, b'x', {Atom('a'): None}]))) is not None\n"
        "assert 'numpy' not in sys.modules, 'numpy was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


BAD_ARRAYS = [
    pytest.param(
        (Atom("ndarray"), b"<O8", (1,), bytes(8)),
        "invalid term: ndarray with dtype b'<O8' at offset 1; expected dtype.str as a binary, "
        'such as <<"<f4">>, of a bool, int, uint, float or complex dtype',
        id="object-dtype",
    ),
    pytest.param(
        (Atom("ndarray"), b"<i3", (1,), bytes(3)),
        "invalid term: ndarray with dtype b'<i3', unknown to numpy at offset 1",
        id="unknown-dtype",
    ),
    pytest.param(
        (Atom("ndarray"), b"<f4", (2, -1), bytes(8)),
        "invalid term: ndarray with shape (2, -1) at offset 1; expected ints >= 0",
        id="negative-shape",
    ),
    pytest.param(
        (Atom("ndarray"), b"<f4", [2], bytes(8)),
        "invalid term: ndarray with shape [2] at offset 1; expected ints >= 0",
        id="list-shape",
    ),
    pytest.param(
        (Atom("ndarray"), b"<f4", (3,), bytes(8)),
        "invalid term: ndarray of 8 data bytes for shape (3,) and dtype float32 at offset 1",
        id="size-mismatch",
    ),
    pytest.param(
        (Atom("ndarray"), b"<f4", (1,), [0, 0, 0, 0]),
        "invalid term: ndarray whose data is not a binary at offset 1",
        id="data-not-binary",
    ),
    pytest.param(
        (Atom("ndarray"), b"<f4", (0,) * 65, b""),
        "invalid term: ndarray with shape " + str((0,) * 65) + " (maximum supported dimension "
        "for an ndarray is currently 64, found 65) at offset 1",
        id="too-many-dims",
    ),
]


@pytest.mark.parametrize(("term", "message"), BAD_ARRAYS)
def test_a_malformed_ndarray_tuple_is_an_etf_error(term: object, message: str) -> None:
    with pytest.raises(EtfError) as caught:
        decode(encode(term))
    assert str(caught.value) == message


def test_other_tuples_starting_with_ndarray_stay_tuples() -> None:
    assert decode(encode((Atom("ndarray"), 1, 2))) == (Atom("ndarray"), 1, 2)
    assert decode(encode(("ndarray", b"<f4", (1,), bytes(4)))) == (
        b"ndarray",
        b"<f4",
        (1,),
        bytes(4),
    )


# --- fuzz: random bytes and damaged encodings raise only EtfError -----------------------

SEEDS = [
    encode(value)
    for value in [
        (Atom("ok"), b"hi", [1, 2, 3], {Atom("a"): [1.5, -(2**70)], b"k": ()}),
        [Atom("é"), "日本", ImproperList((1, 2), Atom("t")), BitBinary(b"\x03\xa0", 3)],
        {(1, 2): [None, True, False], 3: {4: [[[]]]}},
        np.arange(6, dtype="<f4").reshape(2, 3),
        (Atom("ndarray"), b"<i2", (2,), bytes(4)),
        ErlangRef(NODE, 1, (1, 2, 3)),
        [2**300, -(2**3000), 0.1, 256, -1],
    ]
] + [
    encode([Atom("x")] * 50, compressed=6),
    OTP_PID,
    OTP_REF,
    OTP_PORT,
    OTP_EXPORT,
    OTP_LOCAL_FUN,
    OTP_COMPRESSED,
    b(131, 99) + b"1.50000000000000000000e+00" + bytes(5),
]

mutations = st.lists(
    st.tuples(
        st.sampled_from(["set", "truncate", "insert", "delete", "u32"]),
        st.integers(0, 1000),
        st.sampled_from([0, 1, 2, 4, 5, 8, 97, 104, 106, 107, 108, 109, 116, 255, 2**31, 2**32 - 1])
        | st.integers(0, 2**32 - 1),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, steps: list[tuple[str, int, int]]) -> bytes:
    damaged = bytearray(data)
    for operation, position, value in steps:
        at = position % (len(damaged) + 1)
        if operation == "set" and at < len(damaged):
            damaged[at] = value & 0xFF
        elif operation == "truncate":
            del damaged[at:]
        elif operation == "insert":
            damaged[at:at] = bytes([value & 0xFF])
        elif operation == "delete":
            del damaged[at : at + 1 + value % 4]
        elif operation == "u32":
            damaged[at : at + 4] = value.to_bytes(4, "big")
    return bytes(damaged)


def decodes_or_raises_etf_error(data: bytes) -> None:
    try:
        value = decode(data)
    except EtfError:
        return
    again = encode(value)  # whatever decodes also encodes, and is then stable
    assert encode(decode(again)) == again


@settings(DETERMINISTIC, max_examples=2000)
@given(st.sampled_from(SEEDS), mutations)
def test_damaged_encodings_raise_only_etf_error(
    seed: bytes, steps: list[tuple[str, int, int]]
) -> None:
    decodes_or_raises_etf_error(mutate(seed, steps))


@settings(DETERMINISTIC, max_examples=1000)
@given(st.binary(max_size=64), st.sampled_from([b"", b(131), b(131, 80)]))
def test_random_bytes_raise_only_etf_error(data: bytes, prefix: bytes) -> None:
    decodes_or_raises_etf_error(prefix + data)


# --- a real Erlang VM -------------------------------------------------------------------

PEER_SOURCE = Path(__file__).parent / "erlang" / "etf_peer.erl"


class ErlangPeer:
    """One ``erl`` running tests/port/erlang/etf_peer.erl, asked one line at a time."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def ask(self, *words: str) -> list[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(" ".join(words).encode() + b"\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline().decode().split()
        if not line or line[0] == "error":
            reason = bytes.fromhex(line[1]).decode() if len(line) > 1 else "erl exited"
            raise AssertionError(f"erl could not do {words[0]} {words[1:]!r}: {reason}")
        return line

    def term_to_binary(self, expression: str, options: str = "[]") -> bytes:
        (reply,) = self.ask("encode", expression.encode().hex(), options.encode().hex())
        return bytes.fromhex(reply)

    def binary_to_term_equals(self, data: bytes, expression: str) -> tuple[bool, str]:
        verdict, printed = self.ask("check", data.hex(), expression.encode().hex())
        return verdict == "true", bytes.fromhex(printed).decode()


@pytest.fixture(scope="module")
def erlang() -> Iterator[ErlangPeer]:
    erl = shutil.which("erl")
    if erl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("erl is not installed, and CI=true requires the Erlang cross-check")
        pytest.skip("erl is not installed (Debian: apt-get install erlang-nox)")
    boot = (
        "[Source] = init:get_plain_arguments(), "
        "{ok, Module, Beam} = compile:file(Source, [binary, report]), "
        "{module, Module} = code:load_binary(Module, Source, Beam), "
        "Module:main(), erlang:halt()."
    )
    process = subprocess.Popen(
        [erl, "-noshell", "-eval", boot, "-extra", str(PEER_SOURCE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        yield ErlangPeer(process)
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        process.wait(timeout=30)
        process.stdout.close()


FROM_ERLANG = [
    ("1", "[]", 1),
    ("-1", "[]", -1),
    ("300", "[]", 300),
    ("1 bsl 40", "[]", 2**40),
    ("-(1 bsl 40)", "[]", -(2**40)),
    ("1 bsl 3000", "[]", 2**3000),
    ("-(1 bsl 3000) + 7", "[]", -(2**3000) + 7),
    ("1.5", "[]", 1.5),
    ("-2.0e-300", "[]", -2.0e-300),
    ("3.141592653589793", "[{minor_version, 0}]", 3.141592653589793),
    ("ok", "[]", Atom("ok")),
    ("'hello world'", "[]", Atom("hello world")),
    ("'héllo'", "[]", Atom("héllo")),
    ("'日本'", "[]", Atom("日本")),
    ("'héllo'", "[{minor_version, 2}]", Atom("héllo")),
    ("true", "[]", True),
    ("false", "[]", False),
    ("nil", "[]", None),
    ("undefined", "[]", Atom("undefined")),
    ('<<"hi">>', "[]", b"hi"),
    ("<<>>", "[]", b""),
    ('<<"日本"/utf8>>', "[]", "日本".encode()),
    ("<<1:1>>", "[]", BitBinary(b"\x80", 1)),
    ("<<3, 5:3>>", "[]", BitBinary(b"\x03\xa0", 3)),
    ("[]", "[]", []),
    ('"abc"', "[]", [97, 98, 99]),
    ("[1, 2, 300]", "[]", [1, 2, 300]),
    ("lists:seq(1, 70000)", "[]", list(range(1, 70001))),
    ('[1, a, <<"b">>, [c]]', "[]", [1, Atom("a"), b"b", [Atom("c")]]),
    ("[1 | 2]", "[]", ImproperList((1,), 2)),
    ("[a, b | c]", "[]", ImproperList((Atom("a"), Atom("b")), Atom("c"))),
    ("{}", "[]", ()),
    ('{ok, <<"hi">>}', "[]", (Atom("ok"), b"hi")),
    ("list_to_tuple(lists:seq(1, 300))", "[]", tuple(range(1, 301))),
    ("#{}", "[]", {}),
    (
        '#{a => 1, <<"b">> => [2.5], {c} => #{}}',
        "[]",
        {Atom("a"): 1, b"b": [2.5], (Atom("c"),): {}},
    ),
    (
        "maps:from_list([{I, I * I} || I <- lists:seq(1, 40)])",
        "[]",
        {i: i * i for i in range(1, 41)},
    ),
    ("lists:duplicate(100, ok)", "[compressed]", [Atom("ok")] * 100),
    ('lists:duplicate(100, <<"x">>)', "[{compressed, 9}]", [b"x"] * 100),
    (
        '{ndarray, <<"<f4">>, {2}, <<1.0:32/float-little, 2.0:32/float-little>>}',
        "[]",
        np.array([1.0, 2.0], dtype="<f4"),
    ),
]


@pytest.mark.parametrize(("expression", "options", "expected"), FROM_ERLANG)
def test_decodes_what_erlang_wrote(
    erlang: ErlangPeer, expression: str, options: str, expected: object
) -> None:
    assert same(decode(erlang.term_to_binary(expression, options)), expected)


TO_ERLANG = [
    (1, "1"),
    (-(2**31), "-(1 bsl 31)"),
    (2**100, "1 bsl 100"),
    (-(2**3000), "-(1 bsl 3000)"),
    (1.5, "1.5"),
    (-2.0e-300, "-2.0e-300"),
    (Atom("ok"), "ok"),
    (Atom(""), "''"),
    (Atom("héllo"), "'héllo'"),
    (Atom("日本" * 100), 'list_to_atom(lists:flatten(lists:duplicate(100, "日本")))'),
    (True, "true"),
    (False, "false"),
    (None, "nil"),
    ("héllo", '<<"héllo"/utf8>>'),
    (b"\x00\xff", "<<0, 255>>"),
    (BitBinary(b"\x03\xa0", 3), "<<3, 5:3>>"),
    ([], "[]"),
    ([1, 2, 3], "[1, 2, 3]"),
    ([1, Atom("a"), [b"x"], 2.5], '[1, a, [<<"x">>], 2.5]'),
    (ImproperList((1, 2), Atom("c")), "[1, 2 | c]"),
    ((), "{}"),
    ((Atom("ok"), b"hi"), '{ok, <<"hi">>}'),
    (tuple(range(300)), "list_to_tuple(lists:seq(0, 299))"),
    ({Atom("a"): 1, b"b": [2.5], (1,): {}}, '#{a => 1, <<"b">> => [2.5], {1} => #{}}'),
    ({i: -i for i in range(40)}, "maps:from_list([{I, -I} || I <- lists:seq(0, 39)])"),
    (
        np.array([[1, 2], [3, 4]], dtype="<i4"),
        '{ndarray, <<"<i4">>, {2, 2}, <<1:32/little, 2:32/little, 3:32/little, 4:32/little>>}',
    ),
    (np.array(2.5, dtype=">f8"), '{ndarray, <<">f8">>, {}, <<2.5:64/float-big>>}'),
    (ErlangPid(NODE, 5, 0, 0), "c:pid(0, 5, 0)"),
    (ErlangFun(Atom("lists"), Atom("map"), 2), "fun lists:map/2"),
]


@pytest.mark.parametrize(("value", "expression"), TO_ERLANG)
@pytest.mark.parametrize("compressed", [None, 6], ids=["plain", "compressed"])
def test_erlang_reads_what_encode_wrote(
    erlang: ErlangPeer, value: object, expression: str, compressed: int | None
) -> None:
    equal, printed = erlang.binary_to_term_equals(encode(value, compressed=compressed), expression)
    assert equal, f"erl decoded {printed}, not {expression}"


BYTE_FOR_BYTE = [
    (0, "0"),
    (-5, "-5"),
    (2**64, "1 bsl 64"),
    (-(2**2100), "-(1 bsl 2100)"),
    (0.1, "0.1"),
    (Atom("ok"), "ok"),
    (Atom("日本"), "'日本'"),
    (b"bytes", '<<"bytes">>'),
    (BitBinary(b"\x80", 1), "<<1:1>>"),
    ([1, 2, 3], "[1, 2, 3]"),
    ([1, 2, 300], "[1, 2, 300]"),
    (ImproperList((Atom("a"),), b""), "[a | <<>>]"),
    ((Atom("ok"), (), [], [True, None]), "{ok, {}, [], [true, nil]}"),
    ({Atom("k"): [1.5]}, "#{k => [1.5]}"),
    ([Atom("ok")] * 100, "lists:duplicate(100, ok)"),
]


@pytest.mark.parametrize(("value", "expression"), BYTE_FOR_BYTE)
def test_encode_matches_term_to_binary_byte_for_byte(
    erlang: ErlangPeer, value: object, expression: str
) -> None:
    assert encode(value) == erlang.term_to_binary(expression, "[{minor_version, 2}]")


ECHOES = [
    ("P = self()", ErlangPid),
    ("R = make_ref()", ErlangRef),
    ("Port = hd(erlang:ports())", ErlangPort),
    ("F = fun lists:map/2", ErlangFun),
    ("G = fun(X) -> X + 1 end", ErlangFun),
]


@pytest.mark.parametrize(("binding", "kind"), ECHOES)
def test_pids_refs_ports_and_funs_from_erlang_echo_back_byte_for_byte(
    erlang: ErlangPeer, binding: str, kind: type
) -> None:
    data = erlang.term_to_binary(binding)
    value = decode(data)
    assert type(value) is kind
    assert encode(value) == data
    equal, printed = erlang.binary_to_term_equals(encode(value), binding.split(" = ")[0])
    assert equal, f"erl decoded {printed}"


def test_a_reply_to_a_caller_carries_its_pid_and_ref_back(erlang: ErlangPeer) -> None:
    request = decode(erlang.term_to_binary("Request = {self(), make_ref(), {predict, <<1, 2>>}}"))
    assert isinstance(request, tuple)
    pid, ref, (verb, payload) = request
    assert (type(pid), type(ref), verb, payload) == (
        ErlangPid,
        ErlangRef,
        Atom("predict"),
        b"\x01\x02",
    )
    reply = encode((ref, (Atom("ok"), [payload])))
    equal, printed = erlang.binary_to_term_equals(
        reply, "{element(2, Request), {ok, [element(2, element(3, Request))]}}"
    )
    assert equal, f"erl decoded {printed}"
