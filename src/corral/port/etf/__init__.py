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
1032 times the compressed bytes), a compressed term that claims more than
``max_inflated_size`` bytes (``decode``'s keyword, ``MAX_INFLATED_SIZE`` = 64 MiB by
default; the Erlang-mode worker passes its ``--max-frame-size``), checked before anything
is inflated, and nesting deeper than ``MAX_DEPTH`` (1000) containers.
``EtfError`` is a ``corral.errors.ProtocolError``. Decoding and encoding are iterative: deep
terms cost no stack.
``encode`` raises ``TypeError`` naming the type of a value it cannot encode and
``ValueError`` for a value out of Erlang's range (an inf, an atom too long, nesting too
deep, which is also how a cyclic list shows up).
"""

from __future__ import annotations

from corral.port.etf.decoder import decode
from corral.port.etf.encoder import encode
from corral.port.etf.tags import MAX_DEPTH, MAX_INFLATED_SIZE
from corral.port.etf.terms import (
    Atom,
    BitBinary,
    ErlangFun,
    ErlangPid,
    ErlangPort,
    ErlangRef,
    EtfError,
    ImproperList,
)

__all__ = [
    "MAX_DEPTH",
    "MAX_INFLATED_SIZE",
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
