"""Frames and the msgpack codec: exact layouts, round trips, and fuzzed garbage."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from corral import FrameTooLarge, ProtocolError
from corral.port.codec import EXT_NDARRAY, Codec
from corral.port.frames import FrameDecoder, frame_header

FUZZ = settings(max_examples=500, derandomize=True, database=None, deadline=None)


def frame(body: bytes) -> bytes:
    return frame_header(len(body)) + body


def test_a_frame_is_a_four_byte_big_endian_length_then_the_body() -> None:
    assert frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert list(FrameDecoder().feed(b"\x00\x00\x00\x03abc\x00\x00\x00\x00")) == [b"abc", b""]


@given(
    bodies=st.lists(st.binary(max_size=300), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
)
@FUZZ
def test_frames_come_out_whole_however_the_stream_is_cut(
    bodies: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frame(b) for b in bodies)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    decoder = FrameDecoder()
    out: list[bytes] = []
    for start, end in itertools.pairwise(points):
        out.extend(bytes(f) for f in decoder.feed(stream[start:end]))
    assert out == bodies
    assert decoder.buffered == 0


def test_an_oversized_length_prefix_fails_before_buffering_the_body() -> None:
    decoder = FrameDecoder(max_frame_size=1024, where="port test")
    with pytest.raises(FrameTooLarge) as info:
        list(decoder.feed(struct.pack(">I", 4_000_000_000) + b"x"))
    assert str(info.value) == (
        "port test: frame of 4000000000 bytes exceeds max_frame_size=1024; "
        "send large arrays through shared memory or raise max_frame_size"
    )
    assert isinstance(info.value, ProtocolError)
    with pytest.raises(FrameTooLarge) as again:
        list(decoder.feed(b"more"))  # the stream lost its framing for good
    assert str(again.value) == str(info.value)
    assert (again.value.size, again.value.limit) == (4_000_000_000, 1024)
    assert decoder.buffered == 0


def test_after_frame_too_large_every_feed_repeats_the_original_error() -> None:
    decoder = FrameDecoder(max_frame_size=16, where="port test")
    whole = struct.pack(">I", 3) + b"abc"
    # A good frame, then an oversized prefix, fed byte by byte (the buffered path).
    stream = whole + struct.pack(">I", 17) + b"x" * 17
    frames: list[bytes] = []
    for byte in range(len(whole) + 3):
        frames.extend(bytes(f) for f in decoder.feed(stream[byte : byte + 1]))
    assert frames == [b"abc"]
    with pytest.raises(FrameTooLarge):
        list(decoder.feed(stream[len(whole) + 3 : len(whole) + 4]))
    for data in (whole, b"", bytearray(whole)):
        with pytest.raises(FrameTooLarge) as info:
            list(decoder.feed(data))
        assert str(info.value) == (
            "port test: frame of 17 bytes exceeds max_frame_size=16; "
            "send large arrays through shared memory or raise max_frame_size"
        )
    assert decoder.buffered == 0


def test_frame_decoder_rejects_a_bad_limit() -> None:
    with pytest.raises(ValueError, match="max_frame_size must be an int >= 1; got 0"):
        FrameDecoder(0)


values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(values)
@FUZZ
def test_plain_values_round_trip(value: object) -> None:
    codec = Codec()
    assert codec.loads(codec.dumps(value)) == value


arrays = hnp.arrays(
    dtype=st.sampled_from(
        [np.float32, np.float64, np.int8, np.int64, np.uint16, np.bool_, np.complex64]
    ),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
)


@given(arrays)
@FUZZ
def test_numpy_arrays_round_trip_with_dtype_and_shape(array: np.ndarray) -> None:
    codec = Codec()
    back = codec.loads(codec.dumps({"a": array}))
    assert isinstance(back, dict)
    out = back["a"]
    assert isinstance(out, np.ndarray)
    assert out.dtype == array.dtype
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)


def test_a_decoded_array_is_a_read_only_view_without_a_copy() -> None:
    codec = Codec()
    out = codec.loads(codec.dumps(np.arange(1000, dtype=np.float64)))
    assert isinstance(out, np.ndarray)
    assert not out.flags.writeable
    assert not out.flags.owndata


def test_non_contiguous_arrays_and_big_endian_dtypes_round_trip() -> None:
    codec = Codec()
    base = np.arange(24, dtype=">i4").reshape(4, 6)
    out = codec.loads(codec.dumps(base[:, ::2].T))
    np.testing.assert_array_equal(out, base[:, ::2].T)
    assert out.dtype == np.dtype(">i4")  # type: ignore[union-attr]


def test_the_inline_array_extension_layout() -> None:
    import msgpack

    packed = Codec().dumps(np.array([1, 2], dtype="<u1"))
    ext = msgpack.unpackb(packed)
    assert ext.code == EXT_NDARRAY
    header = msgpack.packb(["|u1", [2]])
    assert ext.data == struct.pack(">H", len(header)) + header + b"\x01\x02"


def test_values_that_cannot_travel_are_refused_with_their_type() -> None:
    codec = Codec(where="port p")
    with pytest.raises(TypeError, match=r"^port p: cannot encode a value of type set;"):
        codec.dumps({1, 2})
    with pytest.raises(TypeError, match="cannot encode a value of type Codec"):
        codec.dumps([Codec()])
    with pytest.raises(TypeError, match="dtype object cannot be sent"):
        codec.dumps(np.array([None]))
    with pytest.raises(TypeError, match="cannot be sent"):
        codec.dumps(np.zeros(2, dtype=[("a", "i4"), ("b", "f4")]))
    assert codec.loads(codec.dumps("still usable")) == "still usable"


RULE = (
    "the allowed dtype kinds are b (bool), i (int), u (uint), f (float), c (complex), "
    "m (timedelta64), M (datetime64), S (bytes) and U (str); object, void (V), structured "
    "and subarray dtypes are refused"
)


@pytest.mark.parametrize("dtype", ["V8", "V1"])
def test_a_void_dtype_is_refused_both_ways_naming_the_dtype_and_the_allowed_kinds(
    dtype: str,
) -> None:
    import msgpack

    codec = Codec(where="port p")
    array = np.zeros(2, dtype=dtype)
    with pytest.raises(TypeError) as sent:
        codec.dumps(array)
    assert str(sent.value) == f"port p: numpy arrays of dtype |{dtype} cannot be sent; {RULE}"
    header = msgpack.packb([f"|{dtype}", [2]])
    data = struct.pack(">H", len(header)) + header + array.tobytes()
    with pytest.raises(ProtocolError) as received:
        codec.loads(msgpack.packb(msgpack.ExtType(EXT_NDARRAY, data)))
    assert str(received.value) == f"port p: refused dtype '|{dtype}'; {RULE}"


def test_msgpack_timestamps_decode_to_utc_datetimes_and_aware_datetimes_encode_to_them() -> None:
    import datetime

    import msgpack

    codec = Codec(where="port p")
    utc = datetime.UTC
    stamp = msgpack.Timestamp(1_700_000_000, 123_456_000)
    assert codec.loads(msgpack.packb([stamp])) == [
        datetime.datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=utc)
    ]
    paris = datetime.timezone(datetime.timedelta(hours=1))
    moment = datetime.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=paris)
    packed = codec.dumps(moment)
    assert msgpack.unpackb(packed) == msgpack.Timestamp.from_datetime(moment)
    back = codec.loads(packed)
    assert back == moment
    assert back.tzinfo == utc  # type: ignore[union-attr]
    with pytest.raises(TypeError) as naive:
        codec.dumps([datetime.datetime(2024, 1, 2)])
    assert str(naive.value) == (
        "port p: cannot encode a naive datetime; a datetime must carry a tzinfo, such as "
        "datetime.timezone.utc; got datetime.datetime(2024, 1, 2, 0, 0)"
    )
    with pytest.raises(ProtocolError, match=r"^port p: undecodable message"):
        codec.loads(msgpack.packb(msgpack.Timestamp(2**40, 0)))  # past the year 9999


def test_numpy_scalars_travel_as_python_numbers() -> None:
    codec = Codec()
    assert codec.loads(codec.dumps([np.float32(1.5), np.int64(3)])) == [1.5, 3]


@given(st.binary(max_size=200))
@FUZZ
def test_decoding_random_bytes_raises_only_protocol_error(data: bytes) -> None:
    try:
        Codec().loads(data)
    except ProtocolError:
        pass


@given(arrays, st.data())
@FUZZ
def test_decoding_corrupted_array_messages_raises_only_protocol_error(
    array: np.ndarray, data: st.DataObject
) -> None:
    packed = bytearray(Codec().dumps(array))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        index = data.draw(st.integers(min_value=0, max_value=len(packed) - 1))
        packed[index] = data.draw(st.integers(min_value=0, max_value=255))
    cut = data.draw(st.integers(min_value=0, max_value=len(packed)))
    try:
        Codec().loads(bytes(packed[:cut]))
    except ProtocolError:
        pass


def test_a_shared_array_without_a_store_is_a_protocol_error() -> None:
    import msgpack

    payload = msgpack.packb(msgpack.ExtType(2, msgpack.packb(["<f4", [2], 7])))
    with pytest.raises(ProtocolError, match="shared-memory array without a store"):
        Codec().loads(payload)
