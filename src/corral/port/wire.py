"""The worker's end of the wire: blocking frames on its private stdin and stdout.

A worker's real stdin and stdout carry frames only. Before it imports its handler, the
worker moves them to private descriptors (``protect_stdio``), points fd 1 at stderr and fd
0 at /dev/null, so a stray ``print`` (or a C library writing to stdout) lands in the port's
log instead of corrupting the protocol. ``Wire`` reads and writes ``{packet, 4}`` frames on
those descriptors; which messages the frames hold is the dialect's business
(``corral.port.serve``).
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Sequence
from typing import Final

from corral.errors import ProtocolError
from corral.port.frames import FrameDecoder, frame_header
from corral.port.hooks import die
from corral.port.protocol import EXIT_PROTOCOL_ERROR

__all__ = ["Wire", "protect_stdio"]

_READ_SIZE: Final = 1 << 18
_IOV_MAX: Final = 512


def protect_stdio() -> tuple[int, int]:
    """Move the real stdin and stdout to private descriptors, returned as ``(in, out)``;
    fd 0 becomes /dev/null and fd 1 a copy of stderr."""
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    os.set_inheritable(in_fd, False)
    os.set_inheritable(out_fd, False)
    return in_fd, out_fd


class Wire:
    """Blocking frame I/O on the private protocol descriptors.

    ``spin`` (seconds, default 0) is how long ``read_frames`` polls before it blocks. A
    frame over ``max_frame_size`` bytes, or any other framing error, ends the worker with
    status 3 (``EXIT_PROTOCOL_ERROR``).
    """

    def __init__(self, in_fd: int, out_fd: int, max_frame_size: int, *, spin: float = 0.0):
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.decoder = FrameDecoder(max_frame_size, where="corral.port worker")
        self.spin = max(0.0, spin)
        self.poller = select.poll()
        self.poller.register(in_fd, select.POLLIN)

    @property
    def max_frame_size(self) -> int:
        """The largest frame, in bytes, the worker accepts."""
        return self.decoder.max_frame_size

    def read_frames(self) -> list[bytes | memoryview] | None:
        """Block for input; the frames it completes (maybe none), or None at EOF.

        Before blocking, it polls for up to ``spin`` seconds: a caller that sends its next
        request right after a reply then finds the worker awake, which saves two context
        switches per round trip at the cost of that much CPU after each burst. On a
        non-blocking descriptor with nothing to read it raises ``BlockingIOError``.
        """
        if self.spin > 0.0:
            deadline = time.perf_counter() + self.spin
            poll = self.poller.poll
            while not poll(0) and time.perf_counter() < deadline:
                pass
        data = os.read(self.in_fd, _READ_SIZE)
        if not data:
            return None
        try:
            return list(self.decoder.feed(data))
        except ProtocolError as exc:
            die(str(exc), EXIT_PROTOCOL_ERROR)

    def write(self, bodies: Sequence[bytes]) -> None:
        """Write ``bodies`` as frames, in one system call when they fit one ``writev``."""
        parts: list[bytes] = []
        for body in bodies:
            parts.append(frame_header(len(body)))
            parts.append(body)
        while parts:
            chunk = parts[:_IOV_MAX]
            written = os.writev(self.out_fd, chunk)
            total = sum(len(p) for p in chunk)
            if written == total:
                del parts[:_IOV_MAX]
                continue
            # Partial write: drop what went out, keep the rest of the first unfinished part.
            for index, part in enumerate(chunk):
                if written < len(part):
                    parts[: index + 1] = [part[written:]]
                    break
                written -= len(part)
