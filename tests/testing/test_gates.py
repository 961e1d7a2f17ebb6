import asyncio
from collections.abc import Awaitable, Callable

import pytest

from corral.testing import Gate, wait_all_tasks_blocked


class Boom(Exception):
    pass


async def through(gate: Gate, name: str, log: list[str]) -> None:
    """Enter the gate, then log how it went."""
    try:
        await gate.enter()
    except Boom as error:
        log.append(f"{name} failed: {error}")
    else:
        log.append(f"{name} passed")


async def test_gate_release_lets_the_oldest_waiter_through() -> None:
    gate = Gate()
    log: list[str] = []
    async with asyncio.TaskGroup() as tasks:
        for name in ("a", "b", "c"):
            tasks.create_task(through(gate, name, log))
            await gate.wait_blocked(gate.blocked + 1)  # force arrival order a, b, c
        gate.release()
        await wait_all_tasks_blocked()
        assert log == ["a passed"]
        assert (gate.blocked, gate.entered) == (2, 3)
        gate.release(2)
    assert log == ["a passed", "b passed", "c passed"]
    assert (gate.blocked, gate.entered) == (0, 3)


async def test_gate_fail_makes_the_oldest_waiters_raise_the_exception() -> None:
    gate = Gate()
    log: list[str] = []
    async with asyncio.TaskGroup() as tasks:
        for name in ("a", "b", "c"):
            tasks.create_task(through(gate, name, log))
        await gate.wait_blocked(3)
        gate.fail(Boom("model crashed"), count=2)
        await wait_all_tasks_blocked()
        assert gate.blocked == 1
        gate.release()
    assert log == ["a failed: model crashed", "b failed: model crashed", "c passed"]


async def test_gate_holds_its_waiters_until_released_whatever_the_clock_says() -> None:
    gate = Gate()
    log: list[str] = []
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(through(gate, "a", log))
        await asyncio.sleep(3600)
        assert (log, gate.blocked) == ([], 1)
        gate.release()
    assert log == ["a passed"]


async def test_gate_releases_beyond_the_held_tasks_are_credited_to_the_next_entries() -> None:
    gate = Gate()
    log: list[str] = []
    gate.release()
    gate.fail(Boom("later"))
    gate.release()
    await through(gate, "a", log)  # these take the credits in order, without being held
    await through(gate, "b", log)
    await through(gate, "c", log)
    assert log == ["a passed", "b failed: later", "c passed"]
    task = asyncio.create_task(through(gate, "d", log))
    await gate.wait_blocked()
    assert gate.blocked == 1  # credits used up: held again
    gate.release()
    await task
    assert (gate.blocked, gate.entered) == (0, 4)


async def test_gate_release_all_frees_the_held_tasks_and_credits_nothing() -> None:
    gate = Gate()
    log: list[str] = []
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(through(gate, "a", log))
        tasks.create_task(through(gate, "b", log))
        await gate.wait_blocked(2)
        gate.release_all()
        await wait_all_tasks_blocked()
        assert sorted(log) == ["a passed", "b passed"]
        tasks.create_task(through(gate, "c", log))
        await gate.wait_blocked()
        assert gate.blocked == 1
        gate.release()
    gate.release_all()  # nothing held: a no-op
    assert gate.blocked == 0


async def test_an_open_gate_lets_the_held_and_all_later_tasks_through() -> None:
    gate = Gate()
    log: list[str] = []
    gate.fail(Boom("dropped by open"))
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(through(gate, "a", log))
        tasks.create_task(through(gate, "b", log))
        await gate.wait_blocked(1)  # a took the failure credit; b is held
        assert log == ["a failed: dropped by open"]
        gate.fail(Boom("credited"))
        gate.open()
    await through(gate, "c", log)
    assert log == ["a failed: dropped by open", "b failed: credited", "c passed"]
    assert (gate.blocked, gate.entered) == (0, 3)
    gate.fail(Boom("ignored once open"))
    await through(gate, "d", log)
    assert log[-1] == "d passed"


async def test_an_open_gate_drops_credits_left_over() -> None:
    gate = Gate()
    log: list[str] = []
    gate.fail(Boom("never raised"))
    gate.open()
    await through(gate, "a", log)
    assert log == ["a passed"]


async def test_wait_blocked_returns_at_once_when_enough_tasks_are_held() -> None:
    gate = Gate()
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(gate.enter())
        tasks.create_task(gate.enter())
        await gate.wait_blocked(2)
        await gate.wait_blocked(1)
        assert asyncio.get_running_loop().time() == 0.0
        gate.release_all()


async def test_wait_blocked_waits_for_the_count_to_be_reached() -> None:
    gate = Gate()
    reached: list[int] = []

    async def watch(count: int) -> None:
        await gate.wait_blocked(count)
        reached.append(count)

    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(watch(2))
        tasks.create_task(watch(1))
        await wait_all_tasks_blocked()
        assert reached == []
        tasks.create_task(gate.enter())
        await wait_all_tasks_blocked()
        assert reached == [1]
        tasks.create_task(gate.enter())
        await wait_all_tasks_blocked()
        assert reached == [1, 2]
        gate.release(2)


async def test_a_cancelled_enter_leaves_the_gate_and_raises_cancelled_error() -> None:
    gate = Gate()
    log: list[str] = []
    async with asyncio.TaskGroup() as tasks:
        first = tasks.create_task(through(gate, "a", log))
        await gate.wait_blocked()
        tasks.create_task(through(gate, "b", log))
        await gate.wait_blocked(2)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert (gate.blocked, gate.entered) == (1, 2)
        gate.release()  # goes to b: the cancelled a is no longer held
    assert log == ["b passed"]
    assert gate.blocked == 0


async def test_a_release_that_meets_a_cancelled_task_passes_to_the_next_one() -> None:
    gate = Gate()
    log: list[str] = []
    async with asyncio.TaskGroup() as tasks:
        first = tasks.create_task(through(gate, "a", log))
        await gate.wait_blocked()
        tasks.create_task(through(gate, "b", log))
        await gate.wait_blocked(2)
        gate.release()  # a's verdict is in, but a has not run yet...
        first.cancel()  # ...and is cancelled before it can
        with pytest.raises(asyncio.CancelledError):
            await first
        await wait_all_tasks_blocked()
        assert log == ["b passed"]
        assert gate.blocked == 0


async def test_a_release_that_meets_a_cancelled_task_is_credited_when_nobody_else_waits() -> None:
    gate = Gate()
    task = asyncio.create_task(gate.enter())
    await gate.wait_blocked()
    gate.fail(Boom("for whoever comes next"))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(Boom, match="for whoever comes next"):
        await gate.enter()


async def test_a_cancelled_wait_blocked_leaves_no_watcher_behind() -> None:
    gate = Gate()
    watcher = asyncio.create_task(gate.wait_blocked(5))
    await wait_all_tasks_blocked()
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    assert gate._watchers == []


async def test_a_gate_works_on_successive_loops() -> None:
    gate = Gate()
    task = asyncio.create_task(gate.enter())
    await gate.wait_blocked()
    gate.release()
    await task

    def on_another_loop() -> None:
        async def main() -> None:
            held = asyncio.create_task(gate.enter())
            await gate.wait_blocked()
            gate.release()
            await held

        asyncio.run(main())

    await asyncio.get_running_loop().run_in_executor(None, on_another_loop)
    assert gate.entered == 2


def test_a_gate_is_made_without_a_running_loop() -> None:
    gate = Gate()
    assert repr(gate) == "<Gate closed blocked=0 entered=0>"
    gate.open()
    assert repr(gate) == "<Gate open blocked=0 entered=0>"


@pytest.mark.parametrize(
    ("call", "where"),
    [
        (lambda gate, count: gate.release(count), "Gate.release"),
        (lambda gate, count: gate.fail(Boom(), count), "Gate.fail"),
    ],
)
@pytest.mark.parametrize(("count", "shown"), [(0, "0"), (-2, "-2"), (1.0, "1.0"), (True, "True")])
def test_gate_counts_must_be_ints_of_at_least_one(
    call: Callable[[Gate, object], None], where: str, count: object, shown: str
) -> None:
    with pytest.raises(ValueError) as error:
        call(Gate(), count)
    assert str(error.value) == f"{where}: count must be an int >= 1; got {shown}"


async def test_wait_blocked_count_must_be_an_int_of_at_least_one() -> None:
    waiting: Awaitable[None] = Gate().wait_blocked(0)
    with pytest.raises(ValueError) as error:
        await waiting
    assert str(error.value) == "Gate.wait_blocked: count must be an int >= 1; got 0"


def test_gate_fail_needs_an_exception_instance() -> None:
    with pytest.raises(TypeError) as error:
        Gate().fail(ValueError)  # type: ignore[arg-type]
    assert str(error.value) == (
        "Gate.fail: exc must be an exception instance; got <class 'ValueError'>"
    )


async def test_a_held_task_cancelled_a_moment_ago_is_not_counted_or_released() -> None:
    gate = Gate()
    first = asyncio.ensure_future(gate.enter())
    second = asyncio.ensure_future(gate.enter())
    await gate.wait_blocked(2)
    first.cancel()
    # Same loop step: the cancelled task has not resumed yet.
    assert gate.blocked == 1
    gate.release()
    await second
    gate.open()
    with pytest.raises(asyncio.CancelledError):
        await first
