"""Length-prefixed frames, as Erlang's ``{packet, 4}``: a 4-byte big-endian length, then
that many bytes.

``FrameDecoder`` is incremental: feed it bytes as they arrive and take whole frames out. It
checks every length against ``max_frame_size`` before buffering the body, so a corrupt
prefix costs an error, not memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from corral.errors import FrameTooLarge

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "HEADER", "FrameDecoder", "frame_header"]

DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024 * 1024
"""Bytes a frame may hold unless told otherwise (64 MiB)."""

HEADER: Final = struct.Struct(">I")
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from


def frame_header(size: int) -> bytes:
    """The 4-byte prefix for a body of ``size`` bytes (``OverflowError`` past 4 GiB - 1)."""
    return _pack_header(size)


class FrameDecoder:
    """Splits a byte stream into frames.

    ``feed(data)`` yields every frame completed by ``data``: a read-only ``memoryview`` into
    ``data`` when ``data`` is ``bytes`` and the frame lies wholly in it (no copy), else a
    new ``bytes``. Either may be kept. Raises ``FrameTooLarge`` when a length prefix exceeds
    the limit. The stream has then lost its framing and nothing can resynchronise it (any
    four bytes could be a length), so the decoder stays failed: every later ``feed``
    raises that same error again, naming the original oversized length, and buffers
    nothing.
    """

    __slots__ = ("_buffer", "_failed", "max_frame_size", "where")

    def __init__(
        self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, *, where: str = "port"
    ) -> None:
        if type(max_frame_size) is not int or max_frame_size < 1:
            raise ValueError(
                f"FrameDecoder: max_frame_size must be an int >= 1; got {max_frame_size!r}"
            )
        self.max_frame_size = max_frame_size
        self.where = where
        self._buffer = bytearray()
        self._failed: FrameTooLarge | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> Iterator[bytes | memoryview]:
        """Add ``data`` and yield the frames it completes, in order."""
        if self._failed is not None:
            raise FrameTooLarge(self.where, self._failed.size, self._failed.limit)
        buffer = self._buffer
        if not buffer and type(data) is bytes and len(data) >= 4:
            # Fast path: whole frames straight out of immutable `data`, no copy at all.
            view = memoryview(data)
            offset = 0
            end = len(view)
            while end - offset >= 4:
                (size,) = _unpack_header(view, offset)
                if size > self.max_frame_size:
                    raise self._fail(size)
                if end - offset - 4 < size:
                    break
                yield view[offset + 4 : offset + 4 + size]
                offset += 4 + size
            if offset < end:
                buffer += view[offset:]
            return
        buffer += data
        offset = 0
        end = len(buffer)
        while end - offset >= 4:
            (size,) = _unpack_header(buffer, offset)
            if size > self.max_frame_size:
                raise self._fail(size)
            if end - offset - 4 < size:
                break
            yield bytes(buffer[offset + 4 : offset + 4 + size])
            offset += 4 + size
        if offset:
            del buffer[:offset]

    def _fail(self, size: int) -> FrameTooLarge:
        self._failed = FrameTooLarge(self.where, size, self.max_frame_size)
        self._buffer.clear()
        return self._failed
