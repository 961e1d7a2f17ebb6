"""Both wire modes of the worker (msgpack and ``--erlang``) keep the same hook rules.

Each test drives a real worker process over its pipes, in every mode: async hooks are
awaited, a raising cast is logged and the worker goes on, errors carry their traceback.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from corral.port import etf
from corral.port.frames import frame_header
from corral.port.protocol import (
    CALL,
    CAST,
    ERROR,
    EXIT_PROTOCOL_ERROR,
    EXIT_SETUP_FAILED,
    INIT,
    PROTOCOL_VERSION,
    READY,
    REPLY,
)

REF = etf.ErlangRef(etf.Atom("nonode@nohost"), 0, (1, 2, 3))
HANDLERS = {
    "msgpack": "port_handlers:Hooks",
    "msgpack-async": "port_handlers:AsyncHooks",
    "erlang": "port_handlers:Hooks",
}


class Worker:
    """A worker process in one mode, with the request and reply forms of that mode."""

    def __init__(self, mode: str, handler: str, env: dict[str, str], *flags: str) -> None:
        self.erlang = mode == "erlang"
        argv = [sys.executable, "-m", "corral.port", handler, *flags]
        if self.erlang:
            argv.append("--erlang")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env},
        )
        self.next_id = 0

    def start(self) -> None:
        if not self.erlang:
            self.send_raw(msgpack.packb([INIT, PROTOCOL_VERSION, {}]))
            assert self.receive_raw()[0] == READY

    def command(self, *words: object) -> list[object]:
        """A message such as ``["casts"]``, its words atoms in Erlang mode."""
        return [etf.Atom(w) if self.erlang and isinstance(w, str) else w for w in words]

    def send_raw(self, body: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(frame_header(len(body)) + body)
        self.proc.stdin.flush()

    def receive_raw(self) -> Any:  # a reply's shape depends on the mode
        assert self.proc.stdout is not None
        head = self.proc.stdout.read(4)
        assert len(head) == 4, f"the worker closed its stdout (status {self.proc.wait(30)})"
        body = self.proc.stdout.read(int.from_bytes(head, "big"))
        return etf.decode(body) if self.erlang else msgpack.unpackb(body)

    def call(self, msg: object) -> tuple[bool, Any]:
        """Send a call; (True, result) or (False, (type, message, traceback) as str)."""
        self.next_id += 1
        if self.erlang:
            self.send_raw(etf.encode((etf.Atom("call"), REF, msg)))
            kind, ref, result = self.receive_raw()
            assert ref == REF
            if kind == "error":
                return False, tuple(part.decode() for part in result)
            assert kind == "reply"
            return True, result
        self.send_raw(msgpack.packb([CALL, self.next_id, msg]))
        kind, call_id, result = self.receive_raw()
        assert call_id == self.next_id
        if kind == ERROR:
            return False, (result["type"], result["message"], result["traceback"])
        assert kind == REPLY
        return True, result

    def cast(self, msg: object) -> None:
        if self.erlang:
            self.send_raw(etf.encode((etf.Atom("cast"), msg)))
        else:
            self.send_raw(msgpack.packb([CAST, msg]))

    def finish(self) -> tuple[int, str]:
        """Close stdin (EOF), wait for the exit; its status and stderr."""
        assert self.proc.stdin is not None and self.proc.stderr is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        status = self.proc.wait(timeout=30)
        return status, self.proc.stderr.read().decode()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(params=list(HANDLERS))
def worker(request: pytest.FixtureRequest, handler_env: dict[str, str]) -> Iterator[Worker]:
    worker = Worker(request.param, HANDLERS[request.param], handler_env)
    try:
        worker.start()
        yield worker
    finally:
        worker.close()


def test_an_async_setup_is_awaited_before_the_first_call(worker: Worker) -> None:
    assert worker.call(worker.command("setups")) == (True, 1)
    status, stderr = worker.finish()
    assert (status, stderr) == (0, "")


def test_an_async_handle_cast_is_awaited_in_order(worker: Worker) -> None:
    worker.cast(5)
    worker.cast(6)
    assert worker.call(worker.command("casts")) == (True, [5, 6])
    assert worker.finish() == (0, "")


def test_a_handle_cast_that_raises_is_logged_and_the_worker_goes_on(worker: Worker) -> None:
    worker.cast(-1)
    worker.cast(7)
    assert worker.call(worker.command("casts")) == (True, [7])
    status, stderr = worker.finish()
    assert status == 0
    assert stderr.startswith("Traceback (most recent call last):\n")
    assert stderr.endswith("RuntimeError: cast went wrong\n")


def test_a_call_that_raises_fails_with_type_message_and_traceback(worker: Worker) -> None:
    ok, (kind, message, trace) = worker.call(worker.command("raise"))
    assert (ok, kind, message) == (False, "ValueError", "bad input")
    assert trace.startswith("Traceback (most recent call last):\n")
    assert 'raise ValueError("bad input")' in trace
    assert trace.endswith("ValueError: bad input\n")
    assert worker.call(worker.command("setups")) == (True, 1)  # and it goes on
    assert worker.finish() == (0, "")


def test_a_result_with_no_wire_form_fails_that_call_only(worker: Worker) -> None:
    ok, (kind, message, _) = worker.call(worker.command("unencodable"))
    assert (ok, kind) == (False, "TypeError")
    assert "set" in message
    assert worker.call(worker.command("setups")) == (True, 1)
    assert worker.finish() == (0, "")


@pytest.mark.parametrize("mode", list(HANDLERS))
def test_with_crash_on_error_a_result_with_no_wire_form_still_fails_only_that_call(
    mode: str, handler_env: dict[str, str]
) -> None:
    # The handler did not raise: only its answer cannot travel, in every mode alike.
    worker = Worker(mode, HANDLERS[mode], handler_env, "--crash-on-error")
    try:
        worker.start()
        ok, (kind, _, _) = worker.call(worker.command("unencodable"))
        assert (ok, kind) == (False, "TypeError")
        assert worker.call(worker.command("setups")) == (True, 1)
        assert worker.finish() == (0, "")
    finally:
        worker.close()


@pytest.mark.parametrize("mode", list(HANDLERS))
def test_with_crash_on_error_a_raising_cast_ends_the_worker_with_status_1(
    mode: str, handler_env: dict[str, str]
) -> None:
    worker = Worker(mode, HANDLERS[mode], handler_env, "--crash-on-error")
    try:
        worker.start()
        worker.cast(-1)
        status, stderr = worker.finish()
    finally:
        worker.close()
    assert status == 1
    assert "RuntimeError: cast went wrong" in stderr


# --- Erlang mode only --------------------------------------------------------------------


def erlang_worker(handler: str, env: dict[str, str], *flags: str) -> Worker:
    return Worker("erlang", handler, env, *flags)


def test_a_compressed_term_past_max_frame_size_ends_an_erlang_worker_before_inflating(
    handler_env: dict[str, str],
) -> None:
    # 8 KiB of zeros, compressed: a 45-byte frame that inflates to twice the frame limit.
    inner = bytes((109,)) + struct.pack(">I", 8192 - 5) + bytes(8192 - 5)
    bomb = bytes((131, 80)) + struct.pack(">I", len(inner)) + zlib.compress(inner, 9)
    worker = erlang_worker("port_handlers:Hooks", handler_env, "--max-frame-size", "4096")
    try:
        worker.send_raw(bomb)
        status, stderr = worker.finish()
    finally:
        worker.close()
    assert status == EXIT_PROTOCOL_ERROR
    assert stderr == (
        "corral.port worker: undecodable term: invalid term: compressed term that claims "
        "8192 bytes, more than max_inflated_size=4096 at offset 1; a compressed term may "
        "inflate to at most that many bytes\n"
    )


def test_an_erlang_worker_whose_setup_fails_exits_2_with_the_traceback(
    handler_env: dict[str, str],
) -> None:
    worker = erlang_worker("port_handlers:FailingSetup", handler_env)
    try:
        status, stderr = worker.finish()
    finally:
        worker.close()
    assert status == EXIT_SETUP_FAILED
    assert stderr.startswith("Traceback (most recent call last):\n")
    assert stderr.endswith("RuntimeError: model file not found: /models/missing.onnx\n")


def test_an_erlang_worker_refuses_an_async_handle_call_with_status_2(
    handler_env: dict[str, str],
) -> None:
    worker = erlang_worker("port_handlers:AsyncHandler", handler_env)
    try:
        status, stderr = worker.finish()
    finally:
        worker.close()
    assert status == EXIT_SETUP_FAILED
    assert stderr == (
        "corral.port worker: port_handlers:AsyncHandler: handle_call must be a plain "
        "function in Erlang mode, which answers one term at a time; got an async def\n"
    )


def test_a_bare_term_that_raises_gets_error_with_type_message_and_traceback(
    handler_env: dict[str, str],
) -> None:
    worker = erlang_worker("port_handlers:Hooks", handler_env)
    try:
        worker.send_raw(etf.encode([etf.Atom("raise")]))
        error, (kind, message, trace) = worker.receive_raw()
        assert (error, kind, message) == ("error", b"ValueError", b"bad input")
        assert trace.endswith(b"ValueError: bad input\n")
        assert worker.finish() == (0, "")
    finally:
        worker.close()
