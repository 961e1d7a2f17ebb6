"""Large arrays through shared memory: memfd segments passed over a socketpair.

The first half drives two ``SharedMemoryStore``s over an in-process socketpair (no worker,
no loop); the second half runs real worker processes through ``Port`` (real time: they do
real I/O), kills them with SIGKILL and checks that nothing is left behind.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from corral import SHUTDOWN, ChildSpec, Node, PortExited, ProtocolError, Supervisor
from corral.port import Codec, Port, PortOptions, shm
from corral.port._shm_pool import held_by_a_receiver
from corral.port.codec import EXT_SHARED_ARRAY
from corral.port.shm import SharedMemoryStore, SharedSegment

HANDLERS = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(HANDLERS), os.environ.get("PYTHONPATH")]))}
MEMFD = "/memfd:corral"
FOUR_MB = (1024, 1024)

Array = npt.NDArray[np.generic]


# -- helpers -----------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def corral_fds() -> int:
    """Descriptors of this process that refer to corral segments."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}").startswith(MEMFD)
        except FileNotFoundError:  # the listing's own descriptor
            pass
    return count


def corral_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's mappings of corral segments."""
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if MEMFD in line:
                start, end = line.split()[0].split("-")
                ranges.append((int(start, 16), int(end, 16)))
    return ranges


def root_base(array: object) -> object:
    while isinstance(array, np.ndarray) and array.base is not None:
        array = array.base
    return array


def is_zero_copy(array: Array) -> bool:
    """The array's bytes lie in a mapping of a corral segment, not in a private buffer."""
    address = array.__array_interface__["data"][0]
    return any(
        start <= address and address + array.nbytes <= end for start, end in corral_mappings()
    )


def stats_delta(before: shm.ShmStatistics) -> dict[str, int]:
    after = shm.statistics()
    fields = ("segments_created", "segments_reused", "segments_forwarded", "segments_received")
    return {f: getattr(after, f) - getattr(before, f) for f in fields}


class Channel:
    """Two stores on a socketpair with a codec each: ``a`` sends to ``b`` and back."""

    def __init__(self, threshold: int = 1024, **store_options: int) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.a = SharedMemoryStore(a.detach(), where="a", **store_options)
        self.b = SharedMemoryStore(b.detach(), where="b", **store_options)
        self.codec_a = Codec(store=self.a, shm_threshold=threshold, where="a")
        self.codec_b = Codec(store=self.b, shm_threshold=threshold, where="b")

    def a_to_b(self, value: object) -> object:
        return self.codec_b.loads(self.codec_a.dumps(value))

    def b_to_a(self, value: object) -> object:
        return self.codec_a.loads(self.codec_b.dumps(value))

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture
def channel() -> Iterator[Channel]:
    chan = Channel()
    yield chan
    chan.close()


def four_mb(seed: int = 0) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).standard_normal(FOUR_MB, dtype=np.float32)


def send_record(sock: SharedMemoryStore, fd: int, seq: int) -> None:
    """Put a hand-made record on ``sock``'s peer, as a misbehaving sender would."""
    socket.send_fds(sock._sock, [seq.to_bytes(8, "big")], [fd])


# -- the stores, in one process ----------------------------------------------------------------


def test_an_array_crosses_as_a_read_only_mapping_of_the_segment(channel: Channel) -> None:
    x = four_mb()
    y = channel.a_to_b(x)
    assert isinstance(y, np.ndarray)
    assert y.dtype == x.dtype and y.shape == x.shape and np.array_equal(y, x)
    assert not y.flags.writeable
    assert isinstance(root_base(y), SharedSegment)
    assert is_zero_copy(y)
    with pytest.raises(ValueError, match="read-only"):
        y[0, 0] = 1.0


@pytest.mark.parametrize(
    "array",
    [
        np.arange(600, dtype=np.float32),
        np.arange(600, dtype=np.float64).reshape(20, 30),
        np.arange(-300, 300, dtype=np.int64),
        np.arange(2000) % 3 == 0,
        np.arange(2000, dtype=np.uint8),
        np.arange(300).astype("M8[ns]"),
        np.array(["corral", "port"] * 200),
        np.arange(600, dtype=np.float32).reshape(20, 30)[:, ::2],  # not contiguous
        np.asfortranarray(np.arange(600, dtype=np.int64).reshape(20, 30)),
    ],
    ids=["float32", "float64-2d", "int64", "bool", "uint8", "datetime64", "str", "strided", "F"],
)
def test_dtypes_and_layouts_round_trip(channel: Channel, array: Array) -> None:
    before = shm.statistics()
    y = channel.a_to_b(array)
    assert isinstance(y, np.ndarray)
    assert y.dtype == array.dtype and y.shape == array.shape
    assert np.array_equal(y, array)
    assert y.flags.c_contiguous and not y.flags.writeable
    assert stats_delta(before)["segments_received"] == 1


@pytest.mark.parametrize("dtype", ["f4", "f8", "i8", "?", "u1"])
def test_0d_arrays_take_the_shared_path_and_empty_ones_go_inline(dtype: str) -> None:
    chan = Channel(threshold=1)
    try:
        before = shm.statistics()
        scalar = np.ones((), dtype=dtype)
        y = chan.a_to_b(scalar)
        assert isinstance(y, np.ndarray) and y.shape == () and y.dtype == scalar.dtype
        assert y == scalar and isinstance(root_base(y), SharedSegment)
        for shape in [(0,), (3, 0)]:
            empty = np.zeros(shape, dtype=dtype)
            z = chan.a_to_b(empty)
            assert isinstance(z, np.ndarray) and z.shape == shape and z.dtype == empty.dtype
            assert not isinstance(root_base(z), SharedSegment)
        assert stats_delta(before)["segments_received"] == 1
    finally:
        chan.close()


def test_arrays_below_the_threshold_travel_inline(channel: Channel) -> None:
    before = shm.statistics()
    small = np.arange(255, dtype=np.float32)  # 1020 bytes < 1024
    y = channel.a_to_b(small)
    assert np.array_equal(y, small)  # type: ignore[arg-type]
    assert type(root_base(y)) is bytes
    at_threshold = channel.a_to_b(np.arange(256, dtype=np.float32))
    assert isinstance(root_base(at_threshold), SharedSegment)
    assert stats_delta(before)["segments_received"] == 1


def test_a_received_array_sent_on_is_forwarded_as_the_same_segment(channel: Channel) -> None:
    x = four_mb()
    y = channel.a_to_b(x)
    assert isinstance(y, np.ndarray)
    before = shm.statistics()
    z = channel.b_to_a(y[512:])  # a view of half the segment
    assert stats_delta(before) == {
        "segments_created": 0,
        "segments_reused": 0,
        "segments_forwarded": 1,
        "segments_received": 1,
    }
    assert isinstance(z, np.ndarray) and np.array_equal(z, x[512:])
    y_segment, z_segment = root_base(y), root_base(z)
    assert isinstance(y_segment, SharedSegment) and isinstance(z_segment, SharedSegment)
    assert os.fstat(y_segment.fd).st_ino == os.fstat(z_segment.fd).st_ino


def test_a_small_slice_of_a_segment_is_copied_rather_than_pinning_it(channel: Channel) -> None:
    y = channel.a_to_b(four_mb())
    assert isinstance(y, np.ndarray)
    before = shm.statistics()
    z = channel.b_to_a(y[:100])  # 400 KB of a 4 MB segment
    assert stats_delta(before)["segments_forwarded"] == 0
    assert np.array_equal(z, y[:100])  # type: ignore[arg-type]


def test_share_makes_an_array_that_every_send_forwards(channel: Channel) -> None:
    x = four_mb()
    shared = shm.share(x)
    assert np.array_equal(shared, x) and not shared.flags.writeable
    before = shm.statistics()
    first, second = channel.a_to_b(shared), channel.a_to_b(shared)
    assert stats_delta(before) == {
        "segments_created": 0,
        "segments_reused": 0,
        "segments_forwarded": 2,
        "segments_received": 2,
    }
    assert np.array_equal(first, x) and np.array_equal(second, x)  # type: ignore[arg-type]


def test_share_refuses_object_arrays() -> None:
    with pytest.raises(TypeError, match="dtype object"):
        shm.share(np.array([object()]))


def test_share_refuses_void_arrays_naming_the_allowed_kinds() -> None:
    with pytest.raises(TypeError) as caught:
        shm.share(np.zeros(4, dtype="V8"))
    assert str(caught.value).startswith(
        "shared-memory arrays of dtype |V8 are refused; the allowed dtype kinds are b (bool)"
    )


def test_the_pool_never_rewrites_a_segment_a_receiver_still_maps(channel: Channel) -> None:
    before = shm.statistics()
    first = channel.a_to_b(four_mb(1))
    second = channel.a_to_b(four_mb(2))  # `first` still maps the only pooled segment
    assert stats_delta(before)["segments_created"] == 2
    assert np.array_equal(first, four_mb(1))  # type: ignore[arg-type]
    del first
    third = channel.a_to_b(four_mb(3))
    assert stats_delta(before) == {
        "segments_created": 2,
        "segments_reused": 1,
        "segments_forwarded": 0,
        "segments_received": 3,
    }
    assert np.array_equal(second, four_mb(2)) and np.array_equal(third, four_mb(3))  # type: ignore[arg-type]


def test_a_forwarded_pooled_segment_stays_in_use_while_any_holder_maps_it(
    channel: Channel,
) -> None:
    y = channel.a_to_b(four_mb(1))
    back = channel.b_to_a(y)  # the segment came home to `a`, which also pooled it
    del y
    gc.collect()
    before = shm.statistics()
    z = channel.a_to_b(four_mb(2))
    assert stats_delta(before)["segments_reused"] == 0  # `back` still maps the first one
    assert np.array_equal(back, four_mb(1)) and np.array_equal(z, four_mb(2))  # type: ignore[arg-type]


def test_without_a_pool_every_segment_is_write_sealed() -> None:
    chan = Channel(pool_segments=0)
    try:
        y = chan.a_to_b(four_mb())
        segment = root_base(y)
        assert isinstance(segment, SharedSegment)
        import fcntl

        seals = fcntl.fcntl(segment.fd, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SHRINK
    finally:
        chan.close()


def test_mappings_and_descriptors_go_when_the_arrays_go(channel: Channel) -> None:
    channel.a_to_b(four_mb())  # let the pool make its segment before counting
    assert (corral_fds(), len(corral_mappings())) == (1, 1)  # the pooled segment, mapped
    arrays = [channel.a_to_b(four_mb(seed)) for seed in range(3)]
    # Each array's segment (a descriptor and a read-only mapping), and two more pooled
    # segments (a descriptor and a writable mapping each): the first is still in use.
    assert (corral_fds(), len(corral_mappings())) == (1 + 3 + 2, 1 + 3 + 2)
    del arrays
    gc.collect()
    assert (corral_fds(), len(corral_mappings())) == (3, 3)
    channel.close()
    assert (corral_fds(), len(corral_mappings())) == (0, 0)


def test_records_of_frames_that_never_came_are_skipped_and_closed(channel: Channel) -> None:
    orphan = channel.a.export(four_mb(1))  # its frame failed to encode, say
    assert orphan == [0, 0]
    fds = open_fds()
    y = channel.a_to_b(four_mb(2))
    assert np.array_equal(y, four_mb(2))  # type: ignore[arg-type]
    assert open_fds() == fds + 1 + 1  # `y`'s segment and a second pooled one; no orphan


def test_a_frame_naming_a_segment_that_was_not_sent_is_a_protocol_error(
    channel: Channel,
) -> None:
    with pytest.raises(ProtocolError, match="b: shared-memory segment 0 was not sent before"):
        channel.b.open([0, 0], "<f4", (4,))


def test_a_closed_channel_is_a_protocol_error(channel: Channel) -> None:
    channel.a.close()
    with pytest.raises(ProtocolError, match="channel closed before segment 0 arrived"):
        channel.b.open([0, 0], "<f4", (4,))


def test_segments_that_could_be_resized_are_refused(channel: Channel) -> None:
    fd = os.memfd_create("corral", os.MFD_CLOEXEC)  # no seals at all
    os.write(fd, bytes(64))
    send_record(channel.a, fd, 0)
    os.close(fd)
    fds = open_fds()
    with pytest.raises(ProtocolError, match="segment 0 is not sealed against resizing"):
        channel.b.open([0, 0], "<f4", (16,))
    assert open_fds() == fds


def test_descriptors_that_are_not_memfds_are_refused(channel: Channel) -> None:
    read_end, write_end = os.pipe()
    send_record(channel.a, read_end, 0)
    os.close(read_end)
    os.close(write_end)
    with pytest.raises(ProtocolError, match="segment 0 is not a memfd"):
        channel.b.open([0, 0], "<f4", (4,))


def test_a_segment_smaller_than_its_array_is_refused(channel: Channel) -> None:
    ref = channel.a.export(np.arange(16, dtype=np.float32))
    with pytest.raises(ProtocolError, match="holds 4096 bytes; the frame needs 4104"):
        channel.b.open(ref, "<f4", (1026,))


@pytest.mark.parametrize(
    ("ref", "dtype", "error"),
    [
        ([0], "<f4", "malformed shared-memory ref [0]"),
        ([0, -1], "<f4", "malformed shared-memory ref [0, -1]"),
        (["0", 0], "<f4", "malformed shared-memory ref ['0', 0]"),
        ([0, 0], "|O", "refused dtype '|O'"),
        ([0, 0], "(2,)O", "refused dtype '(2,)O'"),
        ([0, 0], "not a dtype", "refused dtype 'not a dtype'"),
        ([0, 0], "|V8", "refused dtype '|V8'; the allowed dtype kinds are b (bool)"),
    ],
)
def test_malformed_refs_and_dtypes_are_refused(
    channel: Channel, ref: object, dtype: str, error: str
) -> None:
    with pytest.raises(ProtocolError, match=f"^b: {__import__('re').escape(error)}"):
        channel.b.open(ref, dtype, (2,))


_DTYPES = st.one_of(
    hnp.scalar_dtypes(),
    hnp.byte_string_dtypes(max_len=4),
    hnp.unicode_string_dtypes(max_len=4),
)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(_DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6)))
def test_any_array_round_trips_bit_for_bit(array: Array) -> None:
    chan = Channel(threshold=1)
    try:
        got = chan.a_to_b(array)
        back = chan.b_to_a(got)  # and forwarded home again
        for value in (got, back):
            assert isinstance(value, np.ndarray)
            assert (value.dtype, value.shape) == (array.dtype, array.shape)
            assert value.tobytes() == array.tobytes()
            assert isinstance(root_base(value), SharedSegment) == (array.nbytes > 0)
    finally:
        chan.close()


@settings(max_examples=300, deadline=None)
@given(
    ref=st.one_of(
        st.lists(st.one_of(st.integers(), st.text(max_size=2), st.none()), max_size=3),
        st.integers(),
        st.binary(max_size=8),
    ),
    dtype=st.text(max_size=12),
    shape=st.lists(st.integers(0, 1 << 40), max_size=4).map(tuple),
)
def test_open_raises_only_protocol_errors(ref: object, dtype: str, shape: tuple[int, ...]) -> None:
    chan = Channel()
    try:
        with pytest.raises(ProtocolError):
            chan.b.open(ref, dtype, shape)
    finally:
        chan.close()


def test_a_full_channel_sends_arrays_inline_instead_of_blocking(channel: Channel) -> None:
    before = shm.statistics()
    refs = [channel.a.export(np.arange(4, dtype=np.float32)) for _ in range(5000)]
    assert refs[-1] is None  # the socket filled long before: nobody reads `b`
    assert shm.statistics().inline_fallbacks > before.inline_fallbacks
    y = channel.a_to_b(np.arange(2048, dtype=np.float32))
    assert type(root_base(y)) is bytes


def test_closing_a_channel_frees_the_segments_still_queued_in_it(channel: Channel) -> None:
    channel.a.export(four_mb())  # queued in `b`'s socket, never received
    pooled = channel.a._pool.entries[0].fd
    assert held_by_a_receiver(pooled)
    channel.b.close()
    assert not held_by_a_receiver(pooled)


def test_a_store_needs_a_seqpacket_socket() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b, pytest.raises(ValueError, match="must be an AF_UNIX SOCK_SEQPACKET socket"):
        SharedMemoryStore(a.fileno())


# -- through real ports ------------------------------------------------------------------------


def shm_port(**options: object) -> Port:
    return Port("port_handlers:SharedArrays", env=ENV, spares=0, **options)


@pytest.mark.realtime
async def test_a_4mb_array_round_trips_through_a_port_zero_copy() -> None:
    x = four_mb()
    async with Node() as node:
        port = await node.spawn(shm_port())
        before = shm.statistics()
        y = await port.call(["echo", x])
        assert isinstance(y, np.ndarray) and y.dtype == np.float32 and np.array_equal(y, x)
        assert not y.flags.writeable
        assert isinstance(root_base(y), SharedSegment) and is_zero_copy(y)
        assert stats_delta(before) == {
            "segments_created": 1,
            "segments_reused": 0,
            "segments_forwarded": 0,
            "segments_received": 1,
        }
        worker = await port.call(["stats"])
        assert isinstance(worker, dict)
        assert (worker["segments_received"], worker["segments_forwarded"]) == (1, 1)
        assert worker["segments_created"] == 0  # it sent our segment back: no copy
        made = await port.call(["make", 1024, "float32"])
        assert isinstance(root_base(made), SharedSegment)
        assert np.array_equal(made, np.arange(1024 * 1024, dtype=np.float32).reshape(FOUR_MB))  # type: ignore[arg-type]


@pytest.mark.realtime
async def test_arrays_below_a_ports_threshold_travel_inline() -> None:
    async with Node() as node:
        port = await node.spawn(shm_port(shm_threshold=1 << 20))
        before = shm.statistics()
        below = np.ones(((1 << 20) // 4 - 1,), dtype=np.float32)
        y = await port.call(["echo", below])
        assert np.array_equal(y, below) and type(root_base(y)) is bytes  # type: ignore[arg-type]
        at = np.ones(((1 << 20) // 4,), dtype=np.float32)
        z = await port.call(["echo", at])
        assert np.array_equal(z, at) and isinstance(root_base(z), SharedSegment)  # type: ignore[arg-type]
        assert stats_delta(before)["segments_received"] == 1
        off = await node.spawn(shm_port(shm_threshold=None))
        w = await off.call(["echo", four_mb()])
        assert np.array_equal(w, four_mb()) and type(root_base(w)) is bytes  # type: ignore[arg-type]


@pytest.mark.realtime
async def test_dtypes_0d_and_empty_arrays_through_a_port() -> None:
    cases: list[Array] = []
    for dtype in ["float32", "float64", "int64", "bool", "uint8"]:
        cases += [
            (np.arange(300_000) % 7).astype(dtype),
            np.ones((), dtype=dtype),
            np.zeros((0,), dtype=dtype),
            np.zeros((2, 0, 3), dtype=dtype),
        ]
    async with Node() as node:
        port = await node.spawn(shm_port(shm_threshold=1))
        replies = await port.call(["echo", cases])
        assert isinstance(replies, list) and len(replies) == len(cases)
        for sent, got in zip(cases, replies, strict=True):
            assert isinstance(got, np.ndarray)
            assert (got.dtype, got.shape) == (sent.dtype, sent.shape)
            assert np.array_equal(got, sent)
            assert isinstance(root_base(got), SharedSegment) == (sent.nbytes > 0)


@pytest.mark.realtime
async def test_sigkill_while_both_sides_hold_segments_leaks_nothing_and_restarts() -> None:
    shm_before = set(os.listdir("/dev/shm"))
    spec = ChildSpec(id="shm", start=shm_port, name="shm")
    async with Node() as node:
        sup = await node.spawn(Supervisor([spec]))
        port = node.whereis("shm")
        assert port is not None
        fds = open_fds()
        assert corral_fds() == 0
        for seed in range(3):  # the worker keeps these mapped
            assert await port.call(["hold", four_mb(seed)]) == seed + 1
        held = [await port.call(["make", 1024, "float32"]) for _ in range(3)]
        assert all(isinstance(root_base(a), SharedSegment) for a in held)
        assert corral_fds() > 0
        worker_pid = await port.call(["pid"])
        assert isinstance(worker_pid, int)

        os.kill(worker_pid, signal.SIGKILL)
        reason = await port.wait_exit()
        assert isinstance(reason, PortExited) and reason.signal == signal.SIGKILL
        children = await Supervisor.which_children(sup)  # answered after the restart
        assert children[0].restart_count == 1
        new = node.whereis("shm")
        assert new is not None and new is not port

        expected = np.arange(1024 * 1024, dtype=np.float32).reshape(FOUR_MB)
        # Arrays we received outlive the worker that made them.
        assert all(np.array_equal(a, expected) for a in held)  # type: ignore[arg-type]
        del held
        gc.collect()
        assert corral_fds() == 0 and corral_mappings() == []
        assert open_fds() == fds  # the new worker's pipes and socket replace the old ones
        assert set(os.listdir("/dev/shm")) == shm_before
        y = await new.call(["echo", four_mb()])
        assert np.array_equal(y, four_mb())  # type: ignore[arg-type]


@pytest.mark.realtime
async def test_stopping_a_port_releases_its_memfds() -> None:
    fds = open_fds()
    async with Node() as node:
        port = await node.spawn(shm_port())
        for seed in range(3):
            await port.call(["hold", four_mb(seed)])
        kept = await port.call(["copy", four_mb(9)])
        assert corral_fds() >= 2  # our pool's segment(s) and `kept`'s
        port.exit(SHUTDOWN)
        await port.wait_exit()
        assert corral_fds() == 1  # only `kept`'s: arrays outlive their port
        assert np.array_equal(kept, four_mb(9))  # type: ignore[arg-type]
    del kept
    gc.collect()
    assert corral_fds() == 0 and corral_mappings() == []
    assert open_fds() == fds


@pytest.mark.realtime
async def test_a_worker_naming_a_segment_it_never_sent_is_stopped_with_a_protocol_error() -> None:
    async with Node() as node:
        port = await node.spawn(shm_port())
        with pytest.raises(PortExited) as caught:
            await port.call(["unsent_segment"])
        assert "shared-memory segment 12345 was not sent before the frame" in str(caught.value)
        reason = await port.wait_exit()
        assert isinstance(reason, PortExited)


@pytest.mark.realtime
async def test_a_shared_array_goes_to_two_ports_and_back_without_a_copy() -> None:
    shared = shm.share(four_mb())
    async with Node() as node:
        first, second = await node.spawn(shm_port()), await node.spawn(shm_port())
        before = shm.statistics()
        replies = [await first.call(["echo", shared]), await second.call(["echo", shared])]
        assert stats_delta(before) == {
            "segments_created": 0,
            "segments_reused": 0,
            "segments_forwarded": 2,
            "segments_received": 2,
        }
        inode = os.fstat(root_base(shared).fd).st_ino  # type: ignore[attr-defined]
        for reply in replies:
            assert np.array_equal(reply, shared)  # type: ignore[arg-type]
            assert os.fstat(root_base(reply).fd).st_ino == inode  # type: ignore[attr-defined]


def test_the_codec_sends_a_shared_array_reference_when_the_store_takes_it(
    channel: Channel,
) -> None:
    body = channel.codec_a.dumps(np.zeros(1024, dtype=np.float32))
    ext = msgpack.unpackb(body, ext_hook=lambda code, data: (code, msgpack.unpackb(data)))
    assert ext == (EXT_SHARED_ARRAY, ["<f4", [1024], [0, 0]])
    channel.codec_b.loads(body)  # take the record, so the channel is tidy


def test_the_worker_command_line_names_the_socket_and_threshold_only_with_shared_memory() -> None:
    options = PortOptions(handler="m:H", shm_threshold=4096)
    assert options.uses_shm
    assert options.argv(shm_fd=7)[-4:] == ["--shm-fd", "7", "--shm-threshold", "4096"]
    assert "--shm-fd" not in options.argv()
    off = PortOptions(handler="m:H", shm_threshold=None)
    assert not off.uses_shm and "--shm-fd" not in off.argv(shm_fd=7)
    custom = PortOptions(handler="m:H", command=("my-worker",))
    assert not custom.uses_shm and custom.argv(shm_fd=7) == ["my-worker"]
