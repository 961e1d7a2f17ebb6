"""A compressed term (tag 80): the term inside, never inflated past the size it claims,
nor past ``max_inflated_size``.

``encode(term, compressed=level)`` writes one with ``zlib.compress``; ``decode`` reads one
with ``decompress``. The claimed size is checked against the limit before anything is
inflated, and zlib is asked for at most that many bytes (``decompressobj`` with
``max_length``; its output buffer grows with what the stream really holds), so a small
frame that claims gigabytes costs an error, not memory.
"""

from __future__ import annotations

import zlib
from typing import Final

from corral.port.etf.tags import U32
from corral.port.etf.terms import EtfError

# Deflate's best case: a 258-byte match costs at least 2 bits, so 1032 bytes out per byte in.
_MAX_ZLIB_RATIO: Final = 1032


def decompress(view: memoryview, max_inflated_size: int) -> memoryview:
    """The term inside a compressed one (tag 80), never more bytes than its header claims
    and never more than ``max_inflated_size``."""
    if len(view) < 6:
        raise EtfError("truncated compressed term: the 4-byte uncompressed size is missing", 1)
    size = U32.unpack_from(view, 2)[0]
    stream = view[6:]
    if size > max_inflated_size:
        raise EtfError(
            f"compressed term that claims {size} bytes, more than "
            f"max_inflated_size={max_inflated_size}",
            1,
            hint="a compressed term may inflate to at most that many bytes",
        )
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
