"""The worker side, driven by hand over its pipes: handshake and bad input."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import msgpack
import pytest

from corral.port.frames import frame_header
from corral.port.protocol import (
    CALL,
    EXIT_PROTOCOL_ERROR,
    EXIT_SETUP_FAILED,
    INIT,
    INIT_FAILED,
    PROTOCOL_VERSION,
    READY,
    REPLY,
)


@pytest.fixture
def worker(handler_env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.port", "port_handlers:Echo", "--max-frame-size", "4096"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **handler_env},
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def send(proc: subprocess.Popen[bytes], message: object) -> None:
    body = msgpack.packb(message)
    assert proc.stdin is not None
    proc.stdin.write(frame_header(len(body)) + body)
    proc.stdin.flush()


def receive(proc: subprocess.Popen[bytes]) -> object:
    assert proc.stdout is not None
    size = int.from_bytes(proc.stdout.read(4), "big")
    return msgpack.unpackb(proc.stdout.read(size))


def finish(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    assert proc.stdin is not None and proc.stderr is not None
    if not proc.stdin.closed:
        proc.stdin.close()
    status = proc.wait(timeout=30)
    return status, proc.stderr.read().decode()


def test_the_worker_answers_init_with_ready_and_then_serves_calls(
    worker: subprocess.Popen[bytes],
) -> None:
    send(worker, [INIT, PROTOCOL_VERSION, {"k": 1}])
    kind, version, info = receive(worker)  # type: ignore[misc]
    assert (kind, version) == (READY, PROTOCOL_VERSION)
    assert info["pid"] == worker.pid
    send(worker, [CALL, 41, ["args"]])
    assert receive(worker) == [REPLY, 41, {"k": 1}]
    assert worker.stdin is not None
    worker.stdin.close()
    assert finish(worker)[0] == 0


def test_a_protocol_version_mismatch_fails_init_and_exits(worker: subprocess.Popen[bytes]) -> None:
    send(worker, [INIT, 99, {}])
    kind, _, error = receive(worker)  # type: ignore[misc]
    assert kind == INIT_FAILED
    assert error["message"] == "protocol version mismatch: port speaks 99, worker speaks 1"
    assert finish(worker)[0] == EXIT_SETUP_FAILED


def test_an_unknown_message_kind_makes_the_worker_exit_with_protocol_error_status(
    worker: subprocess.Popen[bytes],
) -> None:
    send(worker, [INIT, PROTOCOL_VERSION, {}])
    receive(worker)
    send(worker, [42, "what"])
    status, err = finish(worker)
    assert status == EXIT_PROTOCOL_ERROR
    assert "corral.port worker: unknown message [42, 'what']" in err


def test_an_oversized_frame_makes_the_worker_exit_with_protocol_error_status(
    worker: subprocess.Popen[bytes],
) -> None:
    send(worker, [INIT, PROTOCOL_VERSION, {}])
    receive(worker)
    assert worker.stdin is not None
    worker.stdin.write(frame_header(1 << 20) + b"x" * 10)
    worker.stdin.flush()
    status, err = finish(worker)
    assert status == EXIT_PROTOCOL_ERROR
    assert "frame of 1048576 bytes exceeds max_frame_size=4096" in err


def test_an_undecodable_frame_makes_the_worker_exit_with_protocol_error_status(
    worker: subprocess.Popen[bytes],
) -> None:
    send(worker, [INIT, PROTOCOL_VERSION, {}])
    receive(worker)
    assert worker.stdin is not None
    worker.stdin.write(frame_header(3) + b"\xc1\xc1\xc1")
    worker.stdin.flush()
    status, err = finish(worker)
    assert status == EXIT_PROTOCOL_ERROR
    assert "undecodable message" in err


def test_a_first_message_other_than_init_is_refused(worker: subprocess.Popen[bytes]) -> None:
    send(worker, [CALL, 1, "hi"])
    status, err = finish(worker)
    assert status == EXIT_PROTOCOL_ERROR
    assert "expected an INIT message first" in err


def test_a_bad_handler_spec_is_reported_at_init(handler_env: dict[str, str]) -> None:
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.port", "no_colon_here"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **handler_env},
    )
    send(proc, [INIT, PROTOCOL_VERSION, {}])
    kind, _, error = receive(proc)  # type: ignore[misc]
    assert kind == INIT_FAILED
    assert error["message"] == (
        "corral.port: handler must look like 'module:Handler'; got 'no_colon_here'"
    )
    assert finish(proc)[0] == EXIT_SETUP_FAILED
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.stderr is not None
    proc.stderr.close()
