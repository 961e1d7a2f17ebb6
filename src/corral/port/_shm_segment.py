"""Shared-memory segments: memfd creation and sealing, read-only mappings, and counts.

The low-level half of ``corral.port.shm`` (whose docstring tells the design): ``mmap(2)``
and ``munmap(2)`` through ctypes, one-shot segments, ``SharedSegment`` and the process's
counters that ``shm.statistics()`` reads.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import threading
import weakref
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MEMFD_FLAGS: Final = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
SIZE_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
_ALL_SEALS: Final = SIZE_SEALS | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL

_libc = ctypes.CDLL(None, use_errno=True)
libc_mmap = _libc.mmap
libc_mmap.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int64,
)
libc_mmap.restype = ctypes.c_void_p
libc_munmap = _libc.munmap
libc_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
libc_munmap.restype = ctypes.c_int
MAP_FAILED: Final = ctypes.c_void_p(-1).value


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()  # mappings are released by GC, in any thread
        self.created = self.reused = self.forwarded = self.received = self.fallbacks = 0
        self.mapped = self.mapped_bytes = 0


counters = Counters()


def _unmap(address: int, size: int, fd: int) -> None:
    libc_munmap(address, size)
    os.close(fd)
    c = counters
    with c.lock:
        c.mapped -= 1
        c.mapped_bytes -= size


class SharedSegment:
    """A read-only mapping of one segment: the ``base`` of every array received through it.

    It owns the segment's descriptor (kept so that the segment can be forwarded) and
    unmaps it and closes the descriptor when the last array viewing it is garbage. Its
    bytes are never writable here (``PROT_READ``). Not constructed by users.
    """

    __slots__ = ("__weakref__", "_finalizer", "address", "fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        """Map ``size`` bytes of ``fd`` and take ownership of ``fd`` (``OSError`` if the
        mapping fails; ``fd`` is then still the caller's to close)."""
        address = libc_mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if address is None or address == MAP_FAILED:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mmap of a shared-memory segment failed: {os.strerror(errno)}")
        self.address: int = address
        self.size = size
        self.fd = fd
        c = counters
        with c.lock:
            c.mapped += 1
            c.mapped_bytes += size
        self._finalizer = weakref.finalize(self, _unmap, address, size, fd)
        # At exit the process's mappings go anyway; unmapping earlier could pull memory
        # from under arrays that other finalizers still read.
        self._finalizer.atexit = False

    def __repr__(self) -> str:
        return f"<SharedSegment {self.size} bytes at {self.address:#x}>"

    @property
    def __array_interface__(self) -> dict[str, object]:
        return {
            "shape": (self.size,),
            "typestr": "|u1",
            "data": (self.address, True),  # read-only
            "version": 3,
        }

    def array(
        self, dtype: np.dtype[np.generic], shape: tuple[int, ...], offset: int
    ) -> npt.NDArray[np.generic]:
        """A read-only array of ``dtype`` and ``shape`` at ``offset`` bytes (checked by
        the caller to lie inside the segment)."""
        import numpy as np

        return np.ndarray(shape, dtype=dtype, buffer=np.asarray(self), offset=offset)


def segment_of(array: npt.NDArray[np.generic]) -> tuple[SharedSegment, int] | None:
    """The segment ``array`` (C-contiguous) views and the offset in it, if it is worth
    forwarding."""
    import numpy as np

    base: object = array.base
    while isinstance(base, np.ndarray):
        base = base.base
    if type(base) is not SharedSegment:
        return None
    offset: int = array.__array_interface__["data"][0] - base.address
    nbytes = array.nbytes
    if offset < 0 or offset + nbytes > base.size or 2 * nbytes < base.size:
        return None
    return base, offset


def raw_bytes(array: npt.NDArray[np.generic]) -> memoryview:
    import numpy as np

    # A uint8 view: memoryview refuses some dtypes (datetime64) that the wire accepts.
    return array.reshape(-1).view(np.uint8).data


def write_all(fd: int, data: memoryview) -> None:
    offset = 0
    while offset < len(data):
        offset += os.pwrite(fd, data[offset:], offset)


def new_segment(data: memoryview) -> int:
    """A one-shot segment holding ``data``, sealed against any change."""
    fd = os.memfd_create("corral", MEMFD_FLAGS)
    try:
        write_all(fd, data)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _ALL_SEALS)
    except BaseException:
        os.close(fd)
        raise
    with counters.lock:
        counters.created += 1
    return fd
