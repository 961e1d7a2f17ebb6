"""The serving's boundary on virtual time: the input contract, outputs of the wrong length,
error isolation inside a batch, deadlines that hold while a batch runs, honest restarts,
factory strings checked at construction, and the loop partition kind."""

from __future__ import annotations

import asyncio
import re
import threading

import numpy as np
import pytest
from serving_helpers import Recorder, double, sample

from corral import KILL, Node
from corral.errors import (
    DeadlineExceeded,
    InvalidInput,
    ServingNotRunning,
    ServingRestarting,
)
from corral.runtime.supervisor import Supervisor
from corral.serving import AsyncFunctionModel, InputSpec, Serving
from corral.testing import Gate, wait_all_tasks_blocked


def start(serving: Serving) -> Node:
    return Node([serving.child_spec()])


# -- the input contract ----------------------------------------------------------------------


async def test_a_request_of_another_shape_batches_apart_instead_of_hanging_its_batch() -> None:
    # The reported case: ten (4,) requests and one (3,) request, batch_size 64.
    model = Recorder()
    model.gate.open()
    serving = Serving(model, name="rank", batch_size=64, batch_timeout=0.01)
    async with start(serving):
        xs = [np.full(4, i, np.float32) for i in range(10)] + [np.full(3, 10, np.float32)]
        results = await asyncio.gather(*[serving.run(x, deadline=2.0) for x in xs])
        assert [r.output.tolist() for r in results] == [(x * 2).tolist() for x in xs]
        assert sorted(model.batches, key=len) == [[10.0], [float(i) for i in range(10)]]
        stats = serving.statistics()
        assert (stats.requests, stats.completed, stats.in_flight) == (11, 11, 0)


async def test_input_spec_refuses_a_nonconforming_request_alone_and_at_once() -> None:
    model = Recorder()
    model.gate.open()
    spec = InputSpec((4,), "float32")
    serving = Serving(model, name="rank", batch_size=8, batch_timeout=0.01, input_spec=spec)
    async with start(serving):
        good = asyncio.create_task(serving.run(np.ones(4, np.float32)))
        with pytest.raises(InvalidInput) as info:
            await serving.run(np.ones(3, np.float32))
        assert str(info.value) == (
            "serving 'rank': input must be shape (4,) and dtype float32; "
            "got shape (3,) and dtype float32"
        )
        assert (info.value.expected, info.value.got) == (
            "shape (4,) and dtype float32",
            "shape (3,) and dtype float32",
        )
        cases: list[tuple[object, str]] = [
            ("four", "a str"),
            (None, "a NoneType"),
            ({"x": 1}, "a dict"),
            (np.ones(4, np.float64), "shape (4,) and dtype float64"),
            ([[1, 2], [3]], "a list"),
        ]
        for x, got in cases:
            with pytest.raises(InvalidInput, match=re.escape(f"; got {got}") + "$"):
                await serving.run(x)
        with pytest.raises(InvalidInput, match=r"must be shape \(n, \*\(4,\)\) and dtype float32"):
            await serving.run_batch(np.ones((2, 3), np.float32))
        # A safe cast is made (int16 -> float32); a list of numbers of the same kind is cast.
        cast = await serving.run(np.ones(4, np.int16))
        assert cast.output.dtype == np.float32
        listed = await serving.run([1.0, 2.0, 3.0, 4.0])
        assert listed.output.tolist() == [2.0, 4.0, 6.0, 8.0]
        await good
        stats = serving.statistics()
        assert (stats.invalid, stats.completed, stats.failed) == (7, 3, 0)
        # No refused request ever reached a batch: only the three accepted ones, all ones.
        assert sorted(v for batch in model.batches for v in batch) == [1.0, 1.0, 1.0]


async def test_without_a_spec_strings_none_and_string_fields_are_refused_by_type() -> None:
    model = Recorder()
    model.gate.open()
    serving = Serving(model, name="rank", batch_size=8, batch_timeout=0.0)
    async with start(serving):
        for x, where, got in [
            ("four", "input", "a str"),
            (None, "input", "a NoneType"),
            ({"a": "x"}, "input field 'a'", "a str"),
        ]:
            with pytest.raises(InvalidInput) as info:
                await serving.run(x)
            assert str(info.value) == (
                f"serving 'rank': {where} must be a bool, int or float array (or a list of "
                f"numbers); got {got}"
            )
        with pytest.raises(InvalidInput, match="run_batch input must be an array with a first"):
            await serving.run_batch(np.ones((9, 2)))


def test_input_spec_is_checked_when_the_serving_is_built() -> None:
    with pytest.raises(ValueError, match="input_spec: InputSpec: dtype must be a bool, int"):
        Serving(double, input_spec=((4,), "U8"))
    with pytest.raises(ValueError, match="input_spec: expected an InputSpec, a"):
        Serving(double, input_spec=(4,))
    assert Serving(double, input_spec=((4,), "float32")).options.input_spec == InputSpec(
        (4,), "float32"
    )


# -- outputs ---------------------------------------------------------------------------------


async def test_an_output_of_the_wrong_length_fails_with_the_rule() -> None:
    serving = Serving(
        lambda: (lambda b: b[:1]), name="rank", batch_size=8, batch_timeout=0.0,
        isolate_errors=False,
    )  # fmt: skip
    async with start(serving):
        results = await asyncio.gather(
            serving.run(sample(1)), serving.run(sample(2)), return_exceptions=True
        )
        assert [str(r) for r in results] == [
            "serving 'rank': the model returned (1, 2) for a batch of 2; it must return an "
            "array with that first axis (or a dict or tuple of them)"
        ] * 2


# -- isolation -------------------------------------------------------------------------------


class Picky:
    """Raises on any batch holding a negative sample; records batch compositions."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []

    def __call__(self) -> AsyncFunctionModel:
        return AsyncFunctionModel(self.run)

    async def run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append([float(v) for v in batch[:, 0]])
        if (batch[:, 0] < 0).any():
            raise ValueError("negative sample")
        return batch * 2


async def test_a_model_error_fails_only_the_offending_request_8_is_4_plus_2_plus_1() -> None:
    model = Picky()
    serving = Serving(model, name="rank", batch_size=8, batch_timeout=0.01)
    async with start(serving):
        values = [0, 1, 2, 3, 4, -5, 6, 7]
        results = await asyncio.gather(
            *[serving.run(sample(v)) for v in values], return_exceptions=True
        )
        for v, r in zip(values, results, strict=True):
            if v < 0:
                assert isinstance(r, ValueError) and str(r) == "negative sample"
            else:
                assert not isinstance(r, BaseException) and float(r.output[0]) == 2 * v
        assert model.batches == [
            [0, 1, 2, 3, 4, -5, 6, 7],
            [0, 1, 2, 3],
            [4, -5, 6, 7],
            [4, -5],
            [4],
            [-5],
            [6, 7],
        ]
        stats = serving.statistics()
        assert (stats.completed, stats.failed, stats.split_batches) == (7, 1, 3)


async def test_without_isolation_a_model_error_fails_the_whole_batch() -> None:
    model = Picky()
    serving = Serving(model, name="rank", batch_size=4, batch_timeout=0.01, isolate_errors=False)
    async with start(serving):
        results = await asyncio.gather(
            *[serving.run(sample(v)) for v in [1, -2, 3, 4]], return_exceptions=True
        )
        assert [str(r) for r in results] == ["negative sample"] * 4
        assert model.batches == [[1, -2, 3, 4]]


# -- deadlines -------------------------------------------------------------------------------


async def test_a_deadline_fires_on_time_while_its_batch_is_still_running() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.0)
    async with start(serving):
        loop = asyncio.get_running_loop()
        patient = asyncio.create_task(serving.run(sample(1)))
        hurried = asyncio.create_task(serving.run(sample(2), deadline=0.5))
        await model.gate.wait_blocked()
        with pytest.raises(DeadlineExceeded) as info:
            await hurried
        assert loop.time() == 0.5 and info.value.ran
        assert str(info.value).startswith(
            "serving 'rank': request's deadline passed after 0.5 s while its batch ran"
        )
        model.gate.open()
        assert float((await patient).output[0]) == 2.0  # the batch's other caller is answered
        stats = serving.statistics()
        assert (stats.completed, stats.expired, stats.in_flight) == (1, 1, 0)


# -- honest states ---------------------------------------------------------------------------


async def test_callers_wait_for_a_restarting_serving_instead_of_being_told_to_start_it() -> None:
    gate = Gate()
    loads = 0

    def load() -> AsyncFunctionModel:
        nonlocal loads
        loads += 1

        async def run(batch: np.ndarray) -> np.ndarray:
            if loads == 2:
                await gate.enter()  # the restarted model loads slowly: hold its first batch
            return batch * 2

        return AsyncFunctionModel(run)

    serving = Serving(load, name="rank", batch_size=1, batch_timeout=0.0)
    async with Node([serving.child_spec()]) as node:
        node.lookup("rank").exit(KILL)
        await wait_all_tasks_blocked()
        result = asyncio.create_task(serving.run(sample(3), deadline=10.0))
        await gate.wait_blocked()  # it reached the restarted serving
        gate.open()
        assert float((await result).output[0]) == 6.0 and loads == 2


async def test_a_serving_that_does_not_come_back_fails_callers_with_serving_restarting() -> None:
    serving = Serving(double, name="rank", batch_size=1, restart_wait=2.0)
    sup = Supervisor([serving.child_spec()], max_restarts=0)
    async with Node([]) as node:
        pid = await node.spawn(sup)
        node.lookup("rank").exit(KILL)  # max_restarts=0: its supervisor gives up
        await pid.wait_exit()
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(ServingRestarting) as info:
            await serving.run(sample(1), deadline=1.0)
        assert loop.time() - began == 1.0  # the deadline, shorter than restart_wait
        assert str(info.value) == (
            "serving 'rank' is not running; it is restarting after a crash (killed) and was "
            "not back within 1 s; retry later"
        )
        with pytest.raises(ServingRestarting, match="not back within 2 s"):
            await serving.run(sample(1))


async def test_not_started_and_stopped_servings_say_so() -> None:
    serving = Serving(double, name="rank")
    with pytest.raises(ServingNotRunning, match=r"start it with child_spec\(\) or start"):
        await serving.run(sample(1))
    async with start(serving):
        pass
    with pytest.raises(ServingNotRunning, match=r"start it with child_spec\(\) or start"):
        await serving.run(sample(1))


# -- construction ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory", ["nc_model.load_v1", "nc_model:", ":load", "nc model:load", "a:b:c"]
)
def test_a_factory_string_of_the_wrong_form_is_refused_when_the_serving_is_built(
    factory: str,
) -> None:
    with pytest.raises(ValueError) as info:
        Serving(factory, name="rank", kind="thread")
    assert str(info.value) == (
        "serving 'rank': a model factory string must be 'module:attr' (e.g. "
        f"'mymodels.ranker:load'); got {factory!r}"
    )


async def test_swap_checks_the_factory_string_too() -> None:
    model = Recorder()
    model.gate.open()
    serving = Serving(model, name="rank")
    async with start(serving):
        with pytest.raises(ValueError, match="serving 'rank' swap: a model factory string"):
            await serving.swap("nc_model.load_v2", version="2")


# -- the loop partition kind -----------------------------------------------------------------


async def test_loop_partitions_run_batches_inline_on_the_event_loop_thread() -> None:
    threads: list[str] = []

    def model(batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return batch * 2

    serving = Serving(lambda: model, name="rank", kind="loop", batch_size=4, batch_timeout=0.0)
    async with start(serving):
        results = await asyncio.gather(*[serving.run(sample(i)) for i in range(6)])
        assert [float(r.output[0]) for r in results] == [0, 2, 4, 6, 8, 10]
        assert set(threads) == {threading.current_thread().name}
        (part,) = serving.statistics().partitions
        assert part.kind == "loop" and part.batches == len(threads)


async def test_a_killed_serving_fails_the_requests_it_held_and_comes_back() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0)
    async with Node([serving.child_spec()]) as node:
        running = asyncio.create_task(serving.run(sample(1)))
        await model.gate.wait_blocked()
        queued = asyncio.create_task(serving.run(sample(2)))
        await wait_all_tasks_blocked()
        node.lookup("rank").exit(KILL)  # a kill: terminate never runs
        for task, what in [(running, "while the batch ran"), (queued, "with queued requests")]:
            with pytest.raises(ServingNotRunning, match=f"it stopped {what}"):
                await task
        model.gate.open()
        assert float((await serving.run(sample(3), deadline=5.0)).output[0]) == 6.0


class Slow:
    """An async model whose every batch takes 0.1 s (virtual time); records compositions."""

    def __init__(self) -> None:
        self.batches: list[list[float]] = []

    def __call__(self) -> AsyncFunctionModel:
        return AsyncFunctionModel(self.run)

    async def run(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append([float(v) for v in batch[:, 0]])
        await asyncio.sleep(0.1)
        return batch * 2


@pytest.mark.parametrize("drop_late", [True, False])
async def test_a_request_that_could_not_be_answered_in_time_is_dropped_at_the_cut(
    drop_late: bool,
) -> None:
    model = Slow()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0, drop_late=drop_late)
    async with start(serving):
        await serving.run(sample(1))  # one batch: compute takes 0.1 s
        first = asyncio.create_task(serving.run(sample(2)))  # runs t=0.1..0.2
        hopeless = asyncio.create_task(serving.run(sample(3), deadline=0.15))  # cut at 0.2
        patient = asyncio.create_task(serving.run(sample(4), deadline=0.35))  # ends at 0.3
        await wait_all_tasks_blocked()
        with pytest.raises(DeadlineExceeded) as info:
            await hopeless
        assert float((await first).output[0]) == 4.0
        assert float((await patient).output[0]) == 8.0
        if drop_late:
            # Cut at t=0.2 with 0.05 s left and batches taking 0.1 s: dropped then, unrun.
            assert info.value.early and not info.value.ran
            assert str(info.value).startswith(
                "serving 'rank': request dropped unrun after 0.1 s in the queue: its batch "
                "would have ended after its deadline (deadline=0.15)"
            )
            assert model.batches == [[1.0], [2.0], [4.0]]
        else:
            # It runs, and fails at its deadline while its batch is still running.
            assert info.value.ran and not info.value.early
            assert model.batches == [[1.0], [2.0], [3.0], [4.0]]
