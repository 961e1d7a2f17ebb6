import asyncio
import inspect
import math
import os
import shutil
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.testing import VirtualTimeLoop, new_event_loop, run, wait_all_tasks_blocked


def loop_time() -> float:
    return asyncio.get_running_loop().time()


def virtual_loop() -> VirtualTimeLoop:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualTimeLoop)
    return loop


# --- the clock --------------------------------------------------------------------------------


async def test_the_plugin_runs_async_tests_on_a_virtual_time_loop() -> None:
    assert isinstance(asyncio.get_running_loop(), VirtualTimeLoop)
    assert loop_time() == 0.0


def test_asyncio_sleep_of_an_hour_takes_no_real_time() -> None:
    async def main() -> float:
        await asyncio.sleep(3600)
        return loop_time()

    real_start = time.perf_counter()
    assert run(main()) == 3600.0
    # Generous: an hour of virtual time costs a handful of loop iterations.
    assert time.perf_counter() - real_start < 5.0


async def test_due_timer_fires_at_its_exact_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []
    loop.call_later(2.5, lambda: fired.append(("later", loop.time())))
    loop.call_at(7.25, lambda: fired.append(("at", loop.time())))
    await asyncio.sleep(10)
    assert fired == [("later", 2.5), ("at", 7.25)]
    assert loop_time() == 10.0


def test_the_jump_and_the_due_timer_share_one_loop_iteration() -> None:
    # White-box: watch the selector. The jump happens inside select(5.0); the timer must fire
    # right after it in the same iteration of _run_once, so the next select already sees the
    # task's wake-up ready (timeout 0) and no iteration is spent on a timer that is merely due.
    loop = new_event_loop()
    selects: list[tuple[float | None, float]] = []
    selector = loop._selector  # type: ignore[attr-defined]
    real_select = selector.select

    def select(timeout: float | None = None) -> object:
        events = real_select(timeout)
        selects.append((timeout, loop.time()))
        return events

    selector.select = select
    fired: list[float] = []

    async def main() -> list[tuple[float | None, float]]:
        loop.call_later(5.0, lambda: fired.append(loop.time()))
        selects.clear()
        await asyncio.sleep(5.0)
        return list(selects)

    try:
        selects_until_resumed = loop.run_until_complete(main())
    finally:
        loop.close()
    assert fired == [5.0]
    assert selects_until_resumed == [(5.0, 5.0), (0, 5.0)]


async def test_timers_fire_in_deadline_order_whatever_order_they_were_armed_in() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    for delay in (3.0, 1.0, 2.0, 0.5):
        loop.call_later(delay, lambda: fired.append(loop.time()))
    await asyncio.sleep(4)
    assert fired == [0.5, 1.0, 2.0, 3.0]


async def test_sleep_ends_exactly_at_its_start_plus_its_delay_where_floats_round() -> None:
    await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    assert loop_time() == 0.1 + 0.2  # 0.30000000000000004: the deadline asyncio computed
    await asyncio.sleep(3600)
    assert loop_time() == (0.1 + 0.2) + 3600


@given(
    start=st.floats(min_value=0.0, max_value=1e7),
    # asyncio fires a timer due within 1 ns of now at once, so tinier delays are left out.
    delays=st.lists(st.just(0.0) | st.floats(min_value=1e-6, max_value=1e5), max_size=8),
)
async def test_every_sleep_ends_exactly_at_its_deadline(start: float, delays: list[float]) -> None:
    loop = virtual_loop()
    loop.advance(start)  # each example runs on a fresh loop, starting at 0.0
    for delay in delays:
        deadline = loop.time() + delay
        await asyncio.sleep(delay)
        assert loop.time() == deadline


def test_clock_starts_at_the_given_start() -> None:
    async def main() -> tuple[float, float]:
        before = loop_time()
        await asyncio.sleep(1.5)
        return before, loop_time()

    assert run(main(), start=100.0) == (100.0, 101.5)


def test_a_timer_a_year_away_is_reached_in_day_sized_jumps() -> None:
    # asyncio caps a selector wait at one day; past 2**24 s a due timer needs one float step
    # more than its deadline to fire (see _VirtualClock.unstick).
    async def main() -> float:
        await asyncio.sleep(365 * 86400.0)
        return loop_time()

    assert run(main()) == math.nextafter(365 * 86400.0, math.inf)


def test_timers_fire_on_a_clock_far_from_zero() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        fired = loop.create_future()
        loop.call_at(now, fired.set_result, None)  # due at once
        await fired
        at_once = loop.time()
        await asyncio.sleep(1.0)
        return at_once, loop.time()

    start = 2.0**30
    at_once = math.nextafter(start, math.inf)
    assert run(main(), start=start) == (at_once, math.nextafter(at_once + 1.0, math.inf))


async def test_asyncio_timeout_expires_at_its_exact_deadline() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(5.0):
            await asyncio.Event().wait()
    assert loop_time() == 5.0


async def test_wait_for_times_out_at_its_exact_deadline() -> None:
    await asyncio.sleep(1.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), timeout=0.25)
    assert loop_time() == 1.25


async def test_cancelled_timers_do_not_move_the_clock() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(1000):  # enough to make the loop sweep its cancelled timers, and ours
        loop.call_later(50.0, lambda: None).cancel()
    await asyncio.sleep(2.0)
    assert loop_time() == 2.0


async def test_advance_moves_the_clock_and_due_timers_fire_next_iteration() -> None:
    loop = virtual_loop()
    fired: asyncio.Future[float] = loop.create_future()
    loop.call_later(5.0, lambda: fired.set_result(loop.time()))
    loop.advance(10.0)
    assert loop.time() == 10.0
    assert not fired.done()
    assert await fired == 10.0


async def test_advance_by_zero_changes_nothing() -> None:
    virtual_loop().advance(0)
    assert loop_time() == 0.0


@pytest.mark.parametrize(
    ("seconds", "shown"), [(-1.0, "-1.0"), (math.inf, "inf"), (True, "True"), ("1", "'1'")]
)
def test_advance_rejects_anything_but_a_finite_number_of_seconds_at_least_zero(
    seconds: object, shown: str
) -> None:
    loop = new_event_loop()
    try:
        with pytest.raises(ValueError) as error:
            loop.advance(seconds)  # type: ignore[arg-type]
    finally:
        loop.close()
    assert str(error.value) == (
        f"VirtualTimeLoop.advance: seconds must be a finite number >= 0; got {shown}"
    )


def test_the_loop_rejects_a_start_that_is_not_a_finite_number() -> None:
    with pytest.raises(ValueError) as error:
        VirtualTimeLoop(start=math.nan)
    assert str(error.value) == "VirtualTimeLoop: start must be a finite number; got nan"


def test_autojump_threshold_is_a_validated_property() -> None:
    loop = new_event_loop(autojump_threshold=0.5)
    try:
        assert loop.autojump_threshold == 0.5
        loop.autojump_threshold = 0
        assert loop.autojump_threshold == 0.0
        with pytest.raises(ValueError) as error:
            loop.autojump_threshold = -0.1
    finally:
        loop.close()
    assert str(error.value) == (
        "VirtualTimeLoop.autojump_threshold: value must be a finite number >= 0; got -0.1"
    )
    with pytest.raises(ValueError) as error:
        VirtualTimeLoop(autojump_threshold=-1)
    assert str(error.value) == (
        "VirtualTimeLoop: autojump_threshold must be a finite number >= 0; got -1"
    )


# --- all tasks blocked ------------------------------------------------------------------------


async def test_wait_all_tasks_blocked_resolves_when_every_task_waits() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    seen: list[int] = []

    async def consumer() -> None:
        while True:
            seen.append(await queue.get())

    async def producer() -> None:
        for item in range(3):
            await queue.put(item)
            await asyncio.sleep(0)
        await asyncio.Event().wait()

    async with asyncio.TaskGroup() as tasks:
        consuming = tasks.create_task(consumer())
        producing = tasks.create_task(producer())
        await wait_all_tasks_blocked()
        assert seen == [0, 1, 2]
        assert loop_time() == 0.0
        consuming.cancel()
        producing.cancel()


async def test_wait_all_tasks_blocked_wakes_before_the_clock_jumps_to_a_timer() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    loop.call_later(1.0, lambda: fired.append(loop.time()))
    await wait_all_tasks_blocked()
    assert (fired, loop.time()) == ([], 0.0)
    await asyncio.sleep(2.0)
    assert fired == [1.0]


async def test_wait_all_tasks_blocked_wakes_every_waiter_together() -> None:
    woken: list[str] = []

    async def waiter(name: str) -> None:
        await wait_all_tasks_blocked()
        woken.append(name)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(waiter("a"))
        tasks.create_task(waiter("b"))
        await wait_all_tasks_blocked()
        woken.append("main")
    assert sorted(woken) == ["a", "b", "main"]
    assert loop_time() == 0.0


async def test_a_cancelled_wait_all_tasks_blocked_leaves_no_waiter_behind() -> None:
    loop = virtual_loop()
    waiting = asyncio.create_task(wait_all_tasks_blocked())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert loop._virtual_clock.idle_waiters == []
    await asyncio.sleep(1.0)  # a leftover waiter would have stopped this jump
    assert loop.time() == 1.0


def test_wait_all_tasks_blocked_on_a_real_time_loop_raises_runtime_error() -> None:
    loop = asyncio.SelectorEventLoop()
    try:
        with pytest.raises(RuntimeError) as error:
            loop.run_until_complete(wait_all_tasks_blocked())
    finally:
        loop.close()
    assert str(error.value) == (
        "wait_all_tasks_blocked: the running loop must be a corral.testing.VirtualTimeLoop; "
        "got _UnixSelectorEventLoop. Run the coroutine with corral.testing.run(), or drop "
        "@pytest.mark.realtime from the test"
    )


# --- threads, subprocesses and I/O ------------------------------------------------------------


async def test_an_executor_result_arrives_while_no_timer_is_pending() -> None:
    loop = asyncio.get_running_loop()
    thread_ids = await loop.run_in_executor(None, threading.get_ident)
    assert thread_ids != threading.get_ident()
    assert loop.time() == 0.0


async def test_call_soon_threadsafe_from_a_thread_wakes_the_idle_loop() -> None:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    thread = threading.Thread(target=loop.call_soon_threadsafe, args=(done.set_result, "hi"))
    thread.start()
    assert await done == "hi"
    thread.join()
    assert loop.time() == 0.0


@pytest.mark.skipif(shutil.which("echo") is None, reason="needs an echo program")
async def test_subprocess_output_arrives_on_virtual_time() -> None:
    echo = shutil.which("echo")
    assert echo is not None
    process = await asyncio.create_subprocess_exec(echo, "hello", stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert (out, process.returncode) == (b"hello\n", 0)
    assert loop_time() == 0.0


def test_autojump_threshold_holds_the_clock_for_real_pipe_io() -> None:
    # A timer 10 s away is pending the whole time: with the default threshold of 0 the clock
    # could jump to it before the thread's bytes arrive. With a threshold, the idle loop waits
    # for I/O (up to 30 real seconds here, far more than a thread takes to start) first.
    async def main() -> tuple[bytes, float, list[float]]:
        loop = asyncio.get_running_loop()
        fired: list[float] = []
        loop.call_later(10.0, lambda: fired.append(loop.time()))
        read_fd, write_fd = os.pipe()
        try:
            arrived: asyncio.Future[tuple[bytes, float]] = loop.create_future()
            loop.add_reader(
                read_fd, lambda: arrived.set_result((os.read(read_fd, 100), loop.time()))
            )
            writer = threading.Thread(target=os.write, args=(write_fd, b"ping"))
            writer.start()
            data, at = await arrived
            writer.join()
            loop.remove_reader(read_fd)
        finally:
            os.close(read_fd)
            os.close(write_fd)
        return data, at, fired

    assert run(main(), autojump_threshold=30.0) == (b"ping", 0.0, [])


def test_autojump_threshold_still_jumps_once_no_io_comes() -> None:
    async def main() -> float:
        await asyncio.sleep(60.0)
        return loop_time()

    assert run(main(), autojump_threshold=0.001) == 60.0


# --- run and new_event_loop -------------------------------------------------------------------


def test_run_returns_the_result_and_closes_the_loop() -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> str:
        loops.append(asyncio.get_running_loop())
        return "done"

    assert run(main()) == "done"
    assert isinstance(loops[0], VirtualTimeLoop)
    assert loops[0].is_closed()


def test_run_raises_what_main_raises() -> None:
    async def main() -> None:
        await asyncio.sleep(1)
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run(main())


def test_run_cancels_leftover_tasks_and_lets_them_clean_up_on_virtual_time() -> None:
    cleaned_up: list[float] = []

    async def lingerer() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(5.0)
            cleaned_up.append(loop_time())

    async def main() -> None:
        asyncio.get_running_loop().create_task(lingerer())
        await asyncio.sleep(1.0)

    run(main())
    assert cleaned_up == [6.0]


def test_run_finalises_async_generators_left_open() -> None:
    finalised: list[bool] = []

    async def numbers() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            finalised.append(True)

    kept: list[AsyncIterator[int]] = []

    async def main() -> int:
        agen = numbers()
        kept.append(agen)  # keep it alive, so only shutdown_asyncgens can close it
        return await anext(agen)

    assert run(main()) == 1
    assert finalised == [True]


def test_run_turns_on_debug_mode_when_asked() -> None:
    async def main() -> bool:
        return asyncio.get_running_loop().get_debug()

    assert run(main(), debug=True) is True
    assert run(main()) is False


def test_run_rejects_what_is_not_a_coroutine() -> None:
    async def main() -> None:
        pass

    with pytest.raises(TypeError) as error:
        run(main)  # type: ignore[arg-type]
    assert str(error.value).startswith("corral.testing.run: main must be a coroutine; got <func")


def test_run_with_bad_options_raises_and_closes_main() -> None:
    async def main() -> None:
        pass

    coroutine = main()
    with pytest.raises(ValueError, match="autojump_threshold must be a finite number >= 0"):
        run(coroutine, autojump_threshold=-1.0)
    assert inspect.getcoroutinestate(coroutine) == "CORO_CLOSED"  # no "never awaited" warning


async def test_run_inside_a_running_loop_raises_and_closes_main() -> None:
    async def main() -> None:
        pass

    coroutine = main()
    with pytest.raises(RuntimeError) as error:
        run(coroutine)
    assert str(error.value) == (
        "corral.testing.run: cannot be called from a running event loop; await the coroutine "
        "instead"
    )
    assert inspect.getcoroutinestate(coroutine) == "CORO_CLOSED"


def test_new_event_loop_makes_a_virtual_time_loop_that_starts_at_start() -> None:
    loop = new_event_loop(start=5.0)
    try:
        assert loop.time() == 5.0
        assert loop.run_until_complete(asyncio.sleep(2.0, result="slept")) == "slept"
        assert loop.time() == 7.0
    finally:
        loop.close()


@pytest.mark.skipif(sys.platform == "win32", reason="SelectorEventLoop on Unix")
def test_the_loop_is_a_selector_event_loop() -> None:
    loop = new_event_loop()
    try:
        assert isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


def test_the_testing_package_exports_a_sorted_complete_all() -> None:
    import corral.testing

    public = {name for name in vars(corral.testing) if not name.startswith("_")}
    modules = {"gates", "pytest_plugin", "virtual_time"}
    assert corral.testing.__all__ == sorted(public - modules)
