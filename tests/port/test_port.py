"""Ports with real worker processes: calls, casts, errors, crashes, bad wires."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import numpy as np
import pytest

from corral import (
    KILL,
    ChildSpec,
    Node,
    Overloaded,
    PortCallError,
    PortExited,
    StartError,
    Supervisor,
)
from corral.port import Port

pytestmark = pytest.mark.realtime


async def test_a_port_answers_calls_with_its_handlers_replies(handler_env: dict[str, str]) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", args={"model": "m1"}, env=handler_env))
        assert await pid.call(["args"]) == {"model": "m1"}
        assert await pid.call({"x": [1, 2.5, "s", b"b", None, True]}) == {
            "x": [1, 2.5, "s", b"b", None, True]
        }
        array = await pid.call(["array", [2, 3]])
        assert isinstance(array, np.ndarray)
        np.testing.assert_array_equal(array, np.arange(6, dtype=np.float32).reshape(2, 3))
        assert await pid.call(["sum", np.ones((4, 4), np.int64)]) == 16.0


async def test_casts_reach_handle_cast_in_order(handler_env: dict[str, str]) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env))
        for i in range(5):
            pid.cast(i)
        assert await pid.call(["casts"]) == [0, 1, 2, 3, 4]


async def test_many_calls_in_flight_are_matched_by_id_even_out_of_order(
    handler_env: dict[str, str],
) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:AsyncHandler", env=handler_env))
        finished: list[str] = []

        async def one(delay: float, tag: str) -> None:
            assert await pid.call(["wait", delay, tag]) == tag
            finished.append(tag)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(one(0.3, "slow"))
            tg.create_task(one(0.0, "fast"))
        assert finished == ["fast", "slow"]


async def test_a_handler_exception_fails_only_that_call_with_the_remote_traceback(
    handler_env: dict[str, str],
) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env))
        with pytest.raises(PortCallError) as info:
            await pid.call(["raise", "bad input shape"])
        assert info.value.remote_type == "ValueError"
        assert str(info.value) == (
            f"port {pid} port_handlers:Echo: the handler raised ValueError: bad input shape"
        )
        assert "port_handlers.py" in info.value.remote_traceback
        assert await pid.call("still alive") == "still alive"


async def test_crash_on_error_ends_the_worker_and_the_port(handler_env: dict[str, str]) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env, crash_on_error=True))
        with pytest.raises(PortExited) as info:
            await pid.call(["raise", "corrupt state"])
        assert info.value.status == 1
        assert "ValueError: corrupt state" in info.value.detail
        assert await pid.wait_exit() is not None


async def test_a_setup_failure_makes_spawn_fail_with_the_remote_error(
    handler_env: dict[str, str],
) -> None:
    async with Node() as node:
        with pytest.raises(StartError) as info:
            await node.spawn(Port("port_handlers:FailingSetup", env=handler_env))
        reason = info.value.reason
        assert isinstance(reason, PortCallError)
        assert reason.remote_type == "RuntimeError"
        assert reason.remote_message == "model file not found: /models/missing.onnx"


async def test_an_unknown_handler_makes_spawn_fail_naming_it(handler_env: dict[str, str]) -> None:
    async with Node() as node:
        with pytest.raises(StartError) as info:
            await node.spawn(Port("port_handlers:Nope", env=handler_env))
        assert isinstance(info.value.reason, PortCallError)
        assert info.value.reason.remote_type == "AttributeError"


@pytest.mark.parametrize(
    ("request_", "status", "sig"),
    [
        (["exit", 7], 7, None),
        (["signal", int(signal.SIGKILL)], None, signal.SIGKILL),
        (["signal", int(signal.SIGTERM)], None, signal.SIGTERM),
        (["segfault"], None, signal.SIGSEGV),
    ],
    ids=["os._exit", "sigkill", "sigterm", "segfault"],
)
async def test_a_dying_worker_fails_pending_calls_with_port_exited_saying_how(
    handler_env: dict[str, str], request_: list[object], status: int | None, sig: int | None
) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env))
        slow = asyncio.ensure_future(pid.call(["sleep", 5.0]))
        with pytest.raises(PortExited) as info:
            await pid.call(request_)
        with pytest.raises(PortExited):
            await slow
        assert (info.value.status, info.value.signal) == (status, sig)
        reason = await pid.wait_exit()
        assert isinstance(reason, PortExited)
        if sig is not None:
            assert f"was killed by {signal.Signals(sig).name}" in str(reason)


async def test_a_sigkilled_worker_is_restarted_by_its_supervisor_and_serves_again(
    handler_env: dict[str, str],
) -> None:
    spec = ChildSpec(
        id="model", start=lambda: Port("port_handlers:Echo", env=handler_env), name="model"
    )
    async with Node() as node:
        sup = await node.spawn(Supervisor([spec]))
        port = node.lookup("model")
        os_pid = await port.call(["pid"])
        assert isinstance(os_pid, int) and Port.os_pid_of(port) == os_pid
        pending = asyncio.ensure_future(port.call(["sleep", 5.0]))
        await asyncio.sleep(0)
        os.kill(os_pid, signal.SIGKILL)
        with pytest.raises(PortExited) as info:
            await pending
        assert info.value.signal == signal.SIGKILL
        await port.wait_exit()
        [child] = await Supervisor.which_children(sup)
        assert child.restart_count == 1
        assert child.pid is not None
        assert await child.pid.call("next call") == "next call"
        assert await child.pid.call(["pid"]) != os_pid
        assert Port.os_pid_of(port) is None  # the old port has ended
        assert Port.os_pid_of(child.pid) == await child.pid.call(["pid"])
        with pytest.raises(TypeError, match="is not a port; it runs Supervisor"):
            Port.os_pid_of(sup)


async def test_worker_stderr_goes_to_logging_with_the_port_name(
    handler_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="corral.port"):
        async with Node() as node:
            pid = await node.spawn(Port("port_handlers:Echo", env=handler_env))
            assert await pid.call(["print", "hello from the model"]) == "printed"
            with pytest.raises(PortExited):
                await pid.call(["exit", 3])
    messages = [r.getMessage() for r in caplog.records if r.name == "corral.port"]
    assert f"port {pid} port_handlers:Echo: hello from the model" in messages
    assert f"port {pid} port_handlers:Echo: exiting with 3" in messages


async def test_a_worker_that_writes_garbage_to_stdout_is_stopped_with_a_reason_saying_so() -> None:
    command = (
        sys.executable,
        "-c",
        "import sys, time; print('hello there'); sys.stdout.flush(); time.sleep(30)",
    )
    async with Node() as node:
        with pytest.raises(StartError) as info:
            await node.spawn(Port("any:Thing", command=command))
    reason = info.value.reason
    assert isinstance(reason, PortExited)
    assert reason.signal == signal.SIGKILL
    assert "the worker broke the protocol" in reason.detail
    assert "exceeds max_frame_size" in reason.detail
    assert "first bytes: b'hello there" in reason.detail


async def test_an_unencodable_message_fails_the_call_and_the_port_lives(
    handler_env: dict[str, str],
) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env))
        with pytest.raises(TypeError, match="cannot encode a value of type object"):
            await pid.call(object())
        with pytest.raises(TypeError, match="dtype object cannot be sent"):
            await pid.call(np.array([object()]))
        assert await pid.call("ok") == "ok"


async def test_calls_beyond_max_in_flight_fail_fast_with_overloaded(
    handler_env: dict[str, str],
) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env, max_in_flight=2))
        slow = [asyncio.ensure_future(pid.call(["sleep", 0.5])) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match=r"2 calls in flight \(max_in_flight=2\)"):
            await pid.call("one too many")
        assert await asyncio.gather(*slow) == [0.5, 0.5]


async def test_stopping_the_port_stops_its_worker_gracefully(handler_env: dict[str, str]) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env))
        os_pid = await pid.call(["pid"])
        pid.exit("shutdown")
        assert await pid.wait_exit() == "shutdown"
    assert isinstance(os_pid, int)
    assert not _alive(os_pid)


async def test_killing_the_port_process_kills_its_worker(handler_env: dict[str, str]) -> None:
    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env))
        os_pid = await pid.call(["pid"])
        assert isinstance(os_pid, int)
        pid.exit("kill")
        assert await pid.wait_exit() == "killed"
        for _ in range(200):
            if not _alive(os_pid):
                break
            await asyncio.sleep(0.01)
        assert not _alive(os_pid)


def _alive(os_pid: int) -> bool:
    try:
        waited, _ = os.waitpid(os_pid, os.WNOHANG)
    except ChildProcessError:
        waited = 0
    if waited:
        return False
    try:
        os.kill(os_pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{os_pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def test_port_options_are_validated_with_the_rule() -> None:
    with pytest.raises(
        ValueError,
        match="invalid options for port: handler must be a str like 'module:Handler'; "
        "got 'nocolon'",
    ):
        Port("nocolon")
    with pytest.raises(ValueError, match="max_in_flight must be an int >= 1; got 0"):
        Port("m:H", max_in_flight=0)
    # A misspelt option is named with the valid ones (one options entry, as every component).
    with pytest.raises(ValueError, match="unknown option 'max_in_flights'; valid options: "):
        Port("m:H", max_in_flights=3)


async def test_a_restarted_port_adopts_a_warm_spare_instead_of_starting_a_worker(
    handler_env: dict[str, str],
) -> None:
    from corral.port.spares import POOL_NAME, wait_spares

    port = Port("port_handlers:NumpyModel", env=handler_env, spares=1)
    spec = ChildSpec(
        id="model", start=lambda: Port(port.options.handler, env=handler_env), name="m"
    )
    async with Node() as node:
        sup = await node.spawn(Supervisor([spec]))
        first = node.lookup("m")
        [spare_pid] = await wait_spares(node, port.options)
        first_os_pid = await first.call(["pid"])
        assert first_os_pid != spare_pid
        assert isinstance(first_os_pid, int)
        os.kill(first_os_pid, signal.SIGKILL)
        await first.wait_exit()
        [child] = await Supervisor.which_children(sup)
        assert child.pid is not None
        assert await child.pid.call(["pid"]) == spare_pid
        # The pool starts the next spare in the background.
        [next_spare] = await wait_spares(node, port.options)
        assert next_spare not in (spare_pid, first_os_pid)
        assert node.whereis(POOL_NAME) is not None
    assert not _alive(next_spare)
    assert not _alive(spare_pid)


async def test_spares_zero_starts_no_pool(handler_env: dict[str, str]) -> None:
    from corral.port.spares import POOL_NAME

    async with Node() as node:
        pid = await node.spawn(Port("port_handlers:Echo", env=handler_env, spares=0))
        assert await pid.call("x") == "x"
        assert node.whereis(POOL_NAME) is None


async def test_the_spare_pool_is_a_child_of_the_nodes_system_supervisor_restarted_if_killed(
    handler_env: dict[str, str],
) -> None:
    from corral.port.spares import POOL_NAME, wait_spares
    from corral.runtime.node import SYSTEM_SUPERVISOR

    port = Port("port_handlers:Echo", env=handler_env, spares=1)
    async with Node() as node:
        await node.spawn(port)
        [spare] = await wait_spares(node, port.options)
        system = node.lookup(SYSTEM_SUPERVISOR)
        pool = node.lookup(POOL_NAME)
        assert [(c.id, c.pid) for c in await Supervisor.which_children(system)] == [
            (POOL_NAME, pool)
        ]
        assert [c.id for c in await Supervisor.which_children(node.root)] == []
        pool.exit(KILL)  # its idle spare goes with it
        restarted = await Supervisor.wait_restarted(system, POOL_NAME, pool, timeout=5.0)
        assert node.whereis(POOL_NAME) is restarted is not pool
        await node.spawn(Port("port_handlers:Echo", env=handler_env, spares=1))
        [next_spare] = await wait_spares(node, port.options)
        assert next_spare != spare
    assert not _alive(spare)
    assert not _alive(next_spare)


@pytest.mark.parametrize("cancels", [1, 3])
async def test_a_start_cancelled_while_spawning_leaves_a_worker_the_reap_kills(
    handler_env: dict[str, str], cancels: int
) -> None:
    # Python 3.11 kills a child whose subprocess_exec is cancelled but connects its pipes
    # afterwards with no owner ("unclosed transport", an error here since warnings are
    # errors), and a repeated cancel leaves the child to outlive the loop. The spawn is
    # shielded: the cancelled start hands the worker to the reap.
    import gc

    from corral.port.options import PortOptions
    from corral.port.worker_process import WorkerProcess

    options = PortOptions(handler="port_handlers:Echo", env=handler_env, spares=0)
    worker = WorkerProcess(options, "cancelled", lambda _down: None)
    start = asyncio.ensure_future(worker.start())
    await asyncio.sleep(0)  # inside subprocess_exec: the child exists, its pipes do not yet
    for _ in range(cancels):
        start.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await start
    os_pid = worker.os_pid
    assert os_pid is not None
    await worker.reap()
    with pytest.raises(ProcessLookupError):
        os.kill(os_pid, 0)  # killed and reaped
    gc.collect()
