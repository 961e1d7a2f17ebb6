"""The External Term Format's version byte, tags, byte layouts and limits.

Shared by the encoder and the decoder of ``corral.port.etf``.
"""

from __future__ import annotations

import struct
from typing import Final

MAX_DEPTH: Final = 1000
"""The deepest a term may nest: a term inside ``MAX_DEPTH`` containers decodes, one more
level raises ``EtfError`` (``ValueError`` when encoding)."""

MAX_INFLATED_SIZE: Final = 64 * 1024 * 1024
"""The most bytes a compressed term (tag 80) may inflate to unless ``decode`` is told
otherwise (64 MiB, the default ``max_frame_size``): an uncompressed term could not be
larger in one frame either."""

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

U16: Final = struct.Struct(">H")
U32: Final = struct.Struct(">I")
I32: Final = struct.Struct(">i")
F64: Final = struct.Struct(">d")
TAG_U16: Final = struct.Struct(">BH")
TAG_U32: Final = struct.Struct(">BI")
TAG_I32: Final = struct.Struct(">Bi")
TAG_F64: Final = struct.Struct(">Bd")
TAG_U32_U8: Final = struct.Struct(">BIB")
PID_NEW: Final = struct.Struct(">III")
PID_OLD: Final = struct.Struct(">IIB")
PORT_V4: Final = struct.Struct(">QI")
PORT_NEW: Final = struct.Struct(">II")
PORT_OLD: Final = struct.Struct(">IB")
FUN_HEAD: Final = struct.Struct(">IB16sII")

MAX_ATOM_CHARS: Final = 255
MAX_REF_WORDS: Final = 5
ARRAY_KINDS: Final = "biufc"
