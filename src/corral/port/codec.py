"""The default wire codec: msgpack, with numpy arrays as typed extensions.

Values travel as msgpack: ``None``, bools, ints, floats, ``str``, ``bytes``, lists, dicts,
and timezone-aware ``datetime.datetime`` as msgpack's Timestamp extension (type -1), which
decodes to a ``datetime`` in UTC (the original zone is not kept; a naive ``datetime`` is
refused with ``TypeError``; a Timestamp outside ``datetime``'s years 1..9999 is a
``ProtocolError``). Tuples arrive as lists (as in JSON). Nothing is ever unpickled.

numpy arrays are msgpack extensions:

- ``EXT_NDARRAY`` (code 1) carries the array inline: a 2-byte big-endian header length, a
  msgpack header ``[dtype.str, shape]``, then the raw C-order bytes. Decoding makes a
  read-only view on the received bytes (no copy); call ``.copy()`` to modify it.
- ``EXT_SHARED_ARRAY`` (code 2) carries ``[dtype.str, shape, ref]``, where ``ref`` names a
  shared-memory block an ``ArrayStore`` understands: arrays of ``shm_threshold`` bytes or
  more take this path when the codec has a store, so the pipe carries a few bytes and the
  data is copied once (or not at all when forwarded).

Only dtypes of the kinds in ``WIRE_DTYPE_KINDS`` travel: bool, int, uint, float, complex,
timedelta64, datetime64 and fixed-size bytes and str. Object dtypes (they need pickle),
void dtypes (``V8``: raw bytes with no meaning; send ``bytes``), structured and subarray
dtypes are refused both ways. numpy scalars travel as Python numbers. numpy itself is
imported only when an array is met.
"""

from __future__ import annotations

import math
import struct
import sys
from typing import TYPE_CHECKING, Final, Protocol

import msgpack

from corral.errors import ProtocolError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

__all__ = [
    "EXT_NDARRAY",
    "EXT_SHARED_ARRAY",
    "WIRE_DTYPE_KINDS",
    "WIRE_DTYPE_RULE",
    "ArrayStore",
    "Codec",
    "dtype_travels",
]

EXT_NDARRAY: Final = 1
EXT_SHARED_ARRAY: Final = 2

_HEADER_LEN = struct.Struct(">H")

WIRE_DTYPE_KINDS: Final = frozenset("biufcmMSU")
"""The numpy dtype kinds an array may have to travel (inline or through shared memory)."""
WIRE_DTYPE_RULE: Final = (
    "the allowed dtype kinds are b (bool), i (int), u (uint), f (float), c (complex), "
    "m (timedelta64), M (datetime64), S (bytes) and U (str); object, void (V), structured "
    "and subarray dtypes are refused"
)


class ArrayStore(Protocol):
    """Moves large arrays through shared memory instead of the pipe."""

    def export(self, array: npt.NDArray[np.generic]) -> object | None:
        """Place ``array`` (C-contiguous) in shared memory; return a msgpack-able ref, or
        None to have this array sent inline instead (e.g. the side channel is full)."""
        ...

    def open(self, ref: object, dtype: str, shape: tuple[int, ...]) -> npt.NDArray[np.generic]:
        """Map the block ``ref`` names as an array (read-only, no copy)."""
        ...


def dtype_travels(dtype: np.dtype[np.generic]) -> bool:
    """Whether arrays of ``dtype`` may travel (``WIRE_DTYPE_RULE`` says which do)."""
    return (
        dtype.kind in WIRE_DTYPE_KINDS
        and dtype.fields is None
        and dtype.subdtype is None
        and not dtype.hasobject
    )


def _check_array(array: npt.NDArray[np.generic], where: str) -> None:
    if not dtype_travels(array.dtype):
        raise TypeError(
            f"{where}: numpy arrays of dtype {array.dtype} cannot be sent; {WIRE_DTYPE_RULE}"
        )


class Codec:
    """Encodes and decodes one side's messages. Not thread-safe (one per connection).

    ``shm_threshold`` (bytes) and ``store`` enable the shared-memory path for large arrays;
    without a store every array travels inline.
    """

    __slots__ = ("_packer", "_store", "_threshold", "_where")

    def __init__(
        self,
        *,
        store: ArrayStore | None = None,
        shm_threshold: int = 1 << 20,
        where: str = "port",
    ) -> None:
        if type(shm_threshold) is not int or shm_threshold < 0:
            raise ValueError(f"Codec: shm_threshold must be an int >= 0; got {shm_threshold!r}")
        self._store = store
        self._threshold = shm_threshold
        self._where = where
        self._packer = self._new_packer()

    def _new_packer(self) -> msgpack.Packer:
        return msgpack.Packer(
            default=self._default, use_bin_type=True, autoreset=True, datetime=True
        )

    def rename(self, where: str) -> None:
        """Name the connection differently in errors (a spare adopted by its port)."""
        self._where = where
        rename = getattr(self._store, "rename", None)
        if rename is not None:
            rename(where)

    def dumps(self, obj: object) -> bytes:
        """Encode ``obj``; ``TypeError`` names a value that cannot travel."""
        try:
            return self._packer.pack(obj)  # type: ignore[no-any-return]
        except (TypeError, ValueError, OverflowError) as exc:
            # The packer is reset by autoreset only after success; start clean.
            self._packer = self._new_packer()
            if isinstance(exc, TypeError):
                raise
            raise TypeError(f"{self._where}: cannot encode value: {exc}") from exc

    def loads(self, data: bytes | memoryview) -> object:
        """Decode one message; ``ProtocolError`` for anything that is not a valid message."""
        try:
            return msgpack.unpackb(
                data,
                ext_hook=self._ext_hook,
                raw=False,
                strict_map_key=False,
                use_list=True,
                timestamp=3,  # msgpack's Timestamp extension -> datetime in UTC
            )
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(
                f"{self._where}: undecodable message ({type(exc).__name__}: {exc})"
            ) from None

    # -- hooks -----------------------------------------------------------------------------

    def _default(self, obj: object) -> object:
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(obj, np.ndarray):
                return self._encode_array(obj)
            if isinstance(obj, np.generic):
                return obj.item()
        datetime = sys.modules.get("datetime")
        if datetime is not None and isinstance(obj, datetime.datetime):  # a naive one
            raise TypeError(
                f"{self._where}: cannot encode a naive datetime; a datetime must carry a "
                f"tzinfo, such as datetime.timezone.utc; got {obj!r}"
            )
        raise TypeError(
            f"{self._where}: cannot encode a value of type {type(obj).__qualname__}; "
            "send None, bool, int, float, str, bytes, lists, dicts, timezone-aware "
            "datetimes or numpy arrays"
        )

    def _encode_array(self, array: npt.NDArray[np.generic]) -> msgpack.ExtType:
        import numpy as np

        _check_array(array, self._where)
        if not array.flags.c_contiguous:
            array = np.ascontiguousarray(array)
        shape = list(array.shape)
        if self._store is not None and array.nbytes >= self._threshold and array.nbytes:
            ref = self._store.export(array)
            if ref is not None:
                return msgpack.ExtType(
                    EXT_SHARED_ARRAY,
                    msgpack.packb([array.dtype.str, shape, ref], use_bin_type=True),
                )
        header = msgpack.packb([array.dtype.str, shape], use_bin_type=True)
        # Raw bytes through a uint8 view: memoryview refuses datetime64/timedelta64 itself.
        raw = array.reshape(-1).view(np.uint8).data
        return msgpack.ExtType(EXT_NDARRAY, b"".join((_HEADER_LEN.pack(len(header)), header, raw)))

    def _ext_hook(self, code: int, data: bytes) -> object:
        if code == EXT_NDARRAY:
            return self._decode_inline(data)
        if code == EXT_SHARED_ARRAY:
            dtype, shape, ref = self._header(data, 3)
            if self._store is None:
                raise ProtocolError(f"{self._where}: shared-memory array without a store")
            return self._store.open(ref, dtype, shape)  # type: ignore[arg-type]
        raise ProtocolError(f"{self._where}: unknown msgpack extension type {code}")

    def _header(self, data: bytes, fields: int) -> list[object]:
        header = msgpack.unpackb(data, raw=False, use_list=True)
        if not isinstance(header, list) or len(header) != fields:
            raise ProtocolError(f"{self._where}: malformed array header {header!r}")
        dtype, shape = header[0], header[1]
        if not isinstance(dtype, str) or not isinstance(shape, list):
            raise ProtocolError(f"{self._where}: malformed array header {header!r}")
        if not all(type(n) is int and n >= 0 for n in shape):
            raise ProtocolError(f"{self._where}: malformed array shape {shape!r}")
        header[1] = tuple(shape)
        return header

    def _decode_inline(self, data: bytes) -> object:
        import numpy as np

        if len(data) < 2:
            raise ProtocolError(f"{self._where}: truncated array extension")
        (header_len,) = _HEADER_LEN.unpack_from(data)
        start = 2 + header_len
        dtype_str, shape = self._header(data[2:start], 2)
        try:
            dtype = np.dtype(dtype_str)  # type: ignore[call-overload]
        except TypeError:
            raise ProtocolError(f"{self._where}: unknown dtype {dtype_str!r}") from None
        if not dtype_travels(dtype):
            raise ProtocolError(f"{self._where}: refused dtype {dtype_str!r}; {WIRE_DTYPE_RULE}")
        count = math.prod(shape)  # type: ignore[call-overload]
        if count * dtype.itemsize != len(data) - start:
            raise ProtocolError(
                f"{self._where}: array of shape {shape} and dtype {dtype_str} needs "
                f"{count * dtype.itemsize} bytes; got {len(data) - start}"
            )
        array = np.frombuffer(data, dtype=dtype, count=count, offset=start)
        return array.reshape(shape)  # type: ignore[call-overload]
