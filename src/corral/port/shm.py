"""Large numpy arrays through shared memory: Linux memfd segments, passed as descriptors.

A port and its worker share an ``AF_UNIX`` ``SOCK_SEQPACKET`` socketpair beside the pipe
(the parent makes it; the worker gets its end with ``--shm-fd N``). To send an array, the
sending ``SharedMemoryStore`` copies it once into an anonymous segment (``memfd_create``),
sends the segment's descriptor on the socket (``SCM_RIGHTS``) as a record ``(seq, fd)``,
and the frame that follows on the pipe names it by ``seq``. The descriptor goes out before
the frame, so the receiver finds it, without blocking, when it decodes the frame; it maps
the segment read-only and returns an array on the mapping (no copy). A descriptor that is
missing then means the other side broke the protocol: ``ProtocolError``.

Nothing has a name, so nothing can leak: a segment is freed by the kernel when the last
mapping of it and the last descriptor for it (in a process or in flight in a socket) are
gone. A crash of either side, or a socket closed with records still queued, frees
everything that side held; ``/dev/shm`` is never used.

Why ``SOCK_SEQPACKET``: each record arrives whole, with its descriptor, in one ``recvmsg``,
and a send is all or nothing, so the channel never has to reassemble a record or resync.

Segments and trust
    Every segment is sealed against shrinking and growing before it is sent, and the
    receiver refuses one that is not: a segment cut short under a mapping would kill the
    receiver with ``SIGBUS``. One-shot segments are also sealed against writing, so the
    receiver knows their bytes never change.

Reuse pool
    A fresh segment makes the kernel allocate and zero every page, and freeing it costs
    again: 3.3 ms for 4 MiB on the machine this was measured on, against 0.18 ms to copy
    into pages that are already allocated and mapped (``benchmarks/ports.py`` has the end
    to end figure). So each store keeps up to ``pool_segments`` segments (``pool_bytes``
    in all), each mapped writable in the sender, and copies into one that no receiver
    holds any more. It knows which are free from the kernel, not from messages: each send
    of a pooled segment goes out as a fresh open file description (reopened through
    ``/proc/self/fd``) holding a shared open-file-description lock (``F_OFD_SETLK``); the
    lock lasts until the last descriptor *and* the last mapping of that description are
    gone (a mapping holds a reference to its file), wherever they are: in the receiver, in
    flight in the socket, forwarded to a third process, or in a process that crashed (then
    they are gone). A pooled segment is free when nothing holds such a lock. Pooled
    segments cannot be write-sealed, as they are rewritten, so for them "never changes
    while you map it" rests on this lock rather than on a seal. Idle pooled segments stay
    allocated until the store is closed (at most ``pool_bytes``); a segment larger than
    ``pool_bytes``, or one needed while every pooled segment is in use and the pool is
    full, is a one-shot segment.

Forwarding
    An array that is (a view of) a segment this process received, such as a handler
    returning its input, is sent as that same segment again: no copy either way, across
    ports too (a result of one port sent to another). ``share(array)`` makes such an array
    on purpose, for one array sent to many workers. A view of less than half its segment is
    copied instead, so that a small slice does not pin a large segment in the receiver.

Descriptors
    Each mapped segment keeps one descriptor open while any array on it lives (for
    forwarding; the mapping alone would keep the memory). That is the whole cost: the
    mapping is made with ``mmap(2)`` directly, because CPython's ``mmap`` module keeps a
    hidden duplicate of the descriptor for the mapping's lifetime (3.13's ``trackfd=False``
    avoids that), which would make it two. So a process holding N received arrays holds N
    descriptors, against ``RLIMIT_NOFILE``; past it the kernel drops the descriptor and
    the frame fails with a ``ProtocolError`` that says so. Each store also holds its socket
    and its pooled segments.

Back-pressure
    Sends never block: if the socket is full (or any other system call fails), ``export``
    returns ``None`` and the codec sends that array inline on the pipe instead.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import socket
import struct
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from corral.errors import ProtocolError
from corral.port._shm_pool import Pool
from corral.port._shm_pool import held_by_a_receiver as held_by_a_receiver  # for tests
from corral.port._shm_segment import (
    SIZE_SEALS,
    SharedSegment,
    counters,
    new_segment,
    raw_bytes,
    segment_of,
)
from corral.port.codec import WIRE_DTYPE_RULE, dtype_travels

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = ["SharedMemoryStore", "SharedSegment", "ShmStatistics", "share", "statistics"]

logger = logging.getLogger("corral.port")

_RECORD: Final = struct.Struct(">Q")
_SEND_FLAGS: Final = socket.MSG_DONTWAIT
_RECV_FLAGS: Final = socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC
_MAX_SEQ: Final = (1 << 64) - 1


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShmStatistics:
    """Counts for this process, over all its stores (see ``statistics()``)."""

    segments_created: int
    """New segments written (pooled or one-shot)."""
    segments_reused: int
    """Sends that rewrote a free pooled segment instead of creating one."""
    segments_forwarded: int
    """Sends of a segment this process had received or shared, without a copy."""
    segments_received: int
    """Segments mapped from the other side of a store."""
    inline_fallbacks: int
    """Arrays sent inline because the shared-memory path failed (socket full, ...)."""
    mapped_segments: int
    """Segments mapped in this process now (each holds one file descriptor)."""
    mapped_bytes: int
    """Bytes of those mappings."""


def statistics() -> ShmStatistics:
    """This process's shared-memory counts since it started."""
    c = counters
    with c.lock:
        return ShmStatistics(
            c.created, c.reused, c.forwarded, c.received, c.fallbacks, c.mapped, c.mapped_bytes
        )


# -- mappings --------------------------------------------------------------------------------


def share(array: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
    """Copy ``array`` once into a new sealed segment; return a read-only array on it.

    Sending the result (or a view of at least half of it) through any port then moves no
    bytes: every send forwards the same segment. Use it for an array that goes to many
    workers, such as one batch sent to every partition. It holds one file descriptor while
    any view of it lives. Only for dtypes the codec sends (numeric, bool, datetime, bytes,
    str); ``TypeError`` for others; arrays of 0 bytes are returned as a read-only copy.
    """
    import numpy as np

    _check_dtype(array.dtype, TypeError)
    array = np.ascontiguousarray(array)
    if array.nbytes == 0:
        copy = array.copy()
        copy.flags.writeable = False
        return copy
    fd = new_segment(raw_bytes(array))
    try:
        segment = SharedSegment(fd, array.nbytes)
    except BaseException:
        os.close(fd)
        raise
    return segment.array(array.dtype, array.shape, 0)


def _check_dtype(dtype: np.dtype[np.generic], error: type[Exception]) -> None:
    if not dtype_travels(dtype):  # the codec's rule: shared memory takes what it sends
        raise error(f"shared-memory arrays of dtype {dtype} are refused; {WIRE_DTYPE_RULE}")


# -- the store -------------------------------------------------------------------------------


def _close_channel(sock: socket.socket, pool: Pool) -> None:
    sock.close()
    pool.close()


class SharedMemoryStore:
    """One side's end of a shared-memory channel: an ``ArrayStore`` for ``Codec``.

    ``sock_fd`` is this side's end of an ``AF_UNIX`` ``SOCK_SEQPACKET`` socketpair; the
    store owns it from now on (``close()`` closes it; so does garbage collection, as a
    backstop). ``where`` names the side in errors. ``pool_segments`` and ``pool_bytes``
    bound the reuse pool (0 disables it). Not thread-safe: one store per connection, used
    by the thread that encodes and decodes its frames. No method blocks.
    """

    __slots__ = ("__weakref__", "_closed", "_finalizer", "_next_recv", "_next_send",
                 "_pool", "_sock", "_where")  # fmt: skip

    def __init__(
        self,
        sock_fd: int,
        *,
        where: str = "port",
        pool_segments: int = 4,
        pool_bytes: int = 64 << 20,
    ) -> None:
        if type(pool_segments) is not int or pool_segments < 0:
            raise ValueError(
                f"SharedMemoryStore: pool_segments must be an int >= 0; got {pool_segments!r}"
            )
        if type(pool_bytes) is not int or pool_bytes < 0:
            raise ValueError(
                f"SharedMemoryStore: pool_bytes must be an int >= 0; got {pool_bytes!r}"
            )
        try:
            sock = socket.socket(fileno=sock_fd)
        except OSError as exc:
            raise ValueError(
                f"SharedMemoryStore: fd {sock_fd} must be an AF_UNIX SOCK_SEQPACKET socket; "
                f"got {exc}"
            ) from None
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            sock.detach()  # still the caller's
            raise ValueError(
                f"SharedMemoryStore: fd {sock_fd} must be an AF_UNIX SOCK_SEQPACKET socket; "
                f"got {sock.family!r} {sock.type!r}"
            )
        sock.setblocking(False)
        self._sock = sock
        self._where = where
        self._pool = Pool(pool_segments, pool_bytes)
        self._next_send = 0
        self._next_recv = 0
        self._closed = False
        self._finalizer = weakref.finalize(self, _close_channel, sock, self._pool)

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran."""
        return self._closed

    def rename(self, where: str) -> None:
        """Name this side differently in errors (a spare adopted by its port)."""
        self._where = where

    def close(self) -> None:
        """Close the socket and free the pool. Records still queued in the socket are
        dropped with it (the kernel frees their segments); arrays already received stay
        valid. Idempotent."""
        self._closed = True
        self._finalizer()

    # -- sending ---------------------------------------------------------------------------

    def export(self, array: npt.NDArray[np.generic]) -> object | None:
        """Send ``array`` (C-contiguous) as a segment; the ref for the frame, or None to
        send it inline instead (store closed, socket full, out of memory or descriptors)."""
        if self._closed or array.nbytes == 0:
            return None
        forward = segment_of(array)
        if forward is not None:
            segment, offset = forward
            sent = self._send(segment.fd)
            if sent is not None:
                with counters.lock:
                    counters.forwarded += 1
                return [sent, offset]
            return None
        try:
            fd = self._fill(array)
        except OSError as exc:
            self._fell_back(exc)
            return None
        try:
            sent = self._send(fd)
        finally:
            os.close(fd)
        return None if sent is None else [sent, 0]

    def _fill(self, array: npt.NDArray[np.generic]) -> int:
        fd: int | None = None
        if self._pool.segments:
            try:
                fd = self._pool.fill(array)
            except OSError as exc:  # no /proc, say: the one-shot path still works
                logger.debug("%s: no pooled segment (%s); using a one-shot one", self._where, exc)
        return new_segment(raw_bytes(array)) if fd is None else fd

    def _send(self, fd: int) -> int | None:
        seq = self._next_send
        try:
            socket.send_fds(self._sock, [_RECORD.pack(seq)], [fd], _SEND_FLAGS)
        except OSError as exc:
            self._fell_back(exc)
            return None
        self._next_send = seq + 1
        return seq

    def _fell_back(self, exc: OSError) -> None:
        with counters.lock:
            counters.fallbacks += 1
        logger.debug("%s: sending an array inline: %s", self._where, exc)

    # -- receiving -------------------------------------------------------------------------

    def open(self, ref: object, dtype: str, shape: tuple[int, ...]) -> npt.NDArray[np.generic]:
        """Map the segment ``ref`` names as a read-only array (no copy).

        ``ProtocolError`` if the ref or dtype is malformed, the segment was not received
        first, or it is not a sealed segment large enough for the array.
        """
        import numpy as np

        where = self._where
        if not (
            isinstance(ref, list)
            and len(ref) == 2
            and all(type(n) is int and 0 <= n <= _MAX_SEQ for n in ref)
        ):
            raise ProtocolError(f"{where}: malformed shared-memory ref {ref!r:.100}")
        seq, offset = ref
        try:
            np_dtype = np.dtype(dtype)
            _check_dtype(np_dtype, ProtocolError)
        except (TypeError, ValueError, ProtocolError):
            refused = f"{where}: refused dtype {dtype!r:.100}; {WIRE_DTYPE_RULE}"
            raise ProtocolError(refused) from None
        nbytes = math.prod(shape) * np_dtype.itemsize
        fd = self._take(seq)
        try:
            segment = self._map(fd, seq, offset + nbytes)
        except BaseException:
            os.close(fd)
            raise
        with counters.lock:
            counters.received += 1
        return segment.array(np_dtype, shape, offset)

    def _map(self, fd: int, seq: int, needed: int) -> SharedSegment:
        where = self._where
        try:
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            size = os.fstat(fd).st_size
        except OSError as exc:
            raise ProtocolError(
                f"{where}: shared-memory segment {seq} is not a memfd ({exc})"
            ) from None
        if seals & SIZE_SEALS != SIZE_SEALS:
            raise ProtocolError(
                f"{where}: shared-memory segment {seq} is not sealed against resizing"
            )
        if size < needed or size == 0:
            raise ProtocolError(
                f"{where}: shared-memory segment {seq} holds {size} bytes; the frame needs {needed}"
            )
        try:
            return SharedSegment(fd, size)
        except OSError as exc:
            raise ProtocolError(f"{where}: cannot map shared-memory segment {seq}: {exc}") from None

    def _take(self, seq: int) -> int:
        """The descriptor of record ``seq``, skipping older records (orphans of frames
        that failed to encode after their array was exported)."""
        where = self._where
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self._sock, _RECORD.size, 1, _RECV_FLAGS)
            except BlockingIOError:
                raise ProtocolError(
                    f"{where}: shared-memory segment {seq} was not sent before the frame that "
                    "names it; the other side broke the protocol"
                ) from None
            except OSError as exc:
                raise ProtocolError(
                    f"{where}: cannot receive shared-memory segment {seq}: {exc}"
                ) from None
            if len(data) != _RECORD.size or len(fds) != 1 or flags & socket.MSG_CTRUNC:
                for fd in fds:
                    os.close(fd)
                raise ProtocolError(self._bad_record(seq, data, fds, flags))
            (got,) = _RECORD.unpack(data)
            if got == seq:
                self._next_recv = seq + 1
                return fds[0]
            os.close(fds[0])
            if not self._next_recv <= got < seq:
                raise ProtocolError(f"{where}: expected shared-memory segment {seq}; got {got}")

    def _bad_record(self, seq: int, data: bytes, fds: list[int], flags: int) -> str:
        where = self._where
        if not data and not fds:
            return f"{where}: the shared-memory channel closed before segment {seq} arrived"
        if flags & socket.MSG_CTRUNC:
            return (
                f"{where}: shared-memory segment {seq} was dropped by the kernel: this process "
                "is probably out of file descriptors (each received array holds one while it "
                "lives; raise RLIMIT_NOFILE or release arrays sooner)"
            )
        return f"{where}: malformed shared-memory record for segment {seq}"
