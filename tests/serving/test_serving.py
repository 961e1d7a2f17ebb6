"""Serving on virtual time with gated models: exact batch compositions, deadlines, overload,
cancellation, crashes and their retries."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from serving_helpers import Recorder, double, sample

from corral import KILL, Node, telemetry
from corral.errors import (
    DeadlineExceeded,
    PartitionCrashed,
    ServingNotRunning,
    ServingOverloaded,
)
from corral.serving import AsyncFunctionModel, Serving
from corral.serving.server import ServingServer
from corral.testing import wait_all_tasks_blocked


def start(serving: Serving) -> Node:
    return Node([serving.child_spec()])


async def test_7_is_3_plus_3_plus_1_on_one_partition() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=3, batch_timeout=0.1)
    async with start(serving):
        tasks = [asyncio.create_task(serving.run(sample(i))) for i in range(7)]
        await model.gate.wait_blocked()
        # [0, 1, 2] was full and runs; [3, 4, 5] is full but waits for the partition.
        assert model.batches == [[0, 1, 2]]
        assert serving.statistics().queue_length == 4
        model.gate.release()
        await model.gate.wait_blocked()
        assert model.batches == [[0, 1, 2], [3, 4, 5]]
        model.gate.release()
        await model.gate.wait_blocked()
        assert model.batches == [[0, 1, 2], [3, 4, 5], [6]]
        assert model.times == [0.0, 0.0, 0.1]
        model.gate.release()
        results = await asyncio.gather(*tasks)
        assert [float(r.output[0]) for r in results] == [0, 2, 4, 6, 8, 10, 12]
        assert {r.version for r in results} == {"1"}
        stats = serving.statistics()
        assert stats.batch_sizes == ((1, 1), (3, 2))
        assert (stats.batches, stats.completed, stats.requests) == (3, 7, 7)


async def test_5_is_3_plus_2_pad_the_model_sees_padded_batches() -> None:
    model = Recorder()
    model.gate.open()
    serving = Serving(model, name="rank", batch_size=3, batch_timeout=0.1, pad_to=(3,))
    async with start(serving):
        results = await asyncio.gather(*[serving.run(sample(i + 1)) for i in range(5)])
        assert model.batches == [[1, 2, 3], [4, 5, 0]]
        assert [float(r.output[0]) for r in results] == [2, 4, 6, 8, 10]
        assert serving.statistics().batch_sizes == ((2, 1), (3, 1))


async def test_two_partitions_run_two_batches_at_once() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.1, partitions=2)
    async with start(serving):
        tasks = [asyncio.create_task(serving.run(sample(i))) for i in range(4)]
        await model.gate.wait_blocked(2)
        assert model.batches == [[0, 1], [2, 3]]
        states = [p.state for p in serving.statistics().partitions]
        assert states == ["busy", "busy"]
        model.gate.release(2)
        await asyncio.gather(*tasks)
        assert model.loads == 2


async def test_run_batch_keeps_a_small_batch_together() -> None:
    model = Recorder()
    model.gate.open()
    serving = Serving(model, name="rank", batch_size=4, batch_timeout=0.1)
    async with start(serving):
        a = asyncio.create_task(serving.run(sample(1)))
        b = asyncio.create_task(serving.run_batch(np.stack([sample(2), sample(3)])))
        c = asyncio.create_task(serving.run_batch(np.stack([sample(4), sample(5)])))
        ra, rb, rc = await asyncio.gather(a, b, c)
        assert model.batches == [[1, 2, 3], [4, 5]]
        assert rb.output.shape == (2, 2) and rb.output[:, 0].tolist() == [4, 6]
        assert ra.output.tolist() == [2, 2] and rc.output[:, 0].tolist() == [8, 10]


async def test_batch_keys_make_one_queue_per_key() -> None:
    model = Recorder()
    model.gate.open()
    serving = Serving(
        model, name="rank", batch_size=2, batch_timeout=0.1, batch_keys=lambda x: int(x[0]) % 2
    )
    async with start(serving):
        await asyncio.gather(*[serving.run(sample(i)) for i in range(5)])
        assert sorted(model.batches) == [[0, 2], [1, 3], [4]]


async def test_expired_request_is_dropped_before_compute_at_its_deadline() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0)
    async with start(serving):
        busy = asyncio.create_task(serving.run(sample(0)))
        await model.gate.wait_blocked()
        late = asyncio.create_task(serving.run(sample(1), deadline=0.05))
        with pytest.raises(DeadlineExceeded) as info:
            await late
        assert asyncio.get_running_loop().time() == 0.05
        assert str(info.value) == (
            "serving 'rank': request dropped unrun after 0.05 s in the queue (deadline=0.05); "
            "the serving is slower than the load, or the deadline is shorter than "
            "batch_timeout plus the model's compute time"
        )
        model.gate.release_all()
        await busy
        assert model.batches == [[0]]
        assert serving.statistics().expired == 1


async def test_request_within_its_deadline_runs() -> None:
    model = Recorder()
    model.gate.open()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.01)
    async with start(serving):
        result = await serving.run(sample(3), deadline=0.5)
        assert float(result.output[0]) == 6 and asyncio.get_running_loop().time() == 0.01


async def test_full_queue_fails_at_once_with_overloaded() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0, max_queue=2)
    async with start(serving):
        running = asyncio.create_task(serving.run(sample(0)))
        await model.gate.wait_blocked()
        queued = [asyncio.create_task(serving.run(sample(i))) for i in (1, 2)]
        await wait_all_tasks_blocked()
        with pytest.raises(ServingOverloaded) as info:
            await serving.run(sample(3))
        assert str(info.value) == "serving 'rank' is overloaded: 2 requests queued (max_queue=2)"
        assert (info.value.queued, info.value.max_queue) == (2, 2)
        model.gate.open()
        await asyncio.gather(running, *queued)
        assert serving.statistics().overloaded == 1


async def test_cancelled_caller_leaves_the_queue() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.1)
    async with start(serving):
        first = asyncio.create_task(serving.run(sample(0)))
        second = asyncio.create_task(serving.run(sample(1)))
        await model.gate.wait_blocked()
        gone = asyncio.create_task(serving.run(sample(2)))
        kept = asyncio.create_task(serving.run(sample(3)))
        await wait_all_tasks_blocked()
        assert serving.statistics().queue_length == 2
        gone.cancel()
        await wait_all_tasks_blocked()
        assert serving.statistics().queue_length == 1
        model.gate.open()
        await asyncio.gather(first, second, kept)
        assert model.batches == [[0, 1], [3]]
        assert serving.statistics().cancelled == 1


async def test_model_error_fails_only_its_batch() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0)
    async with start(serving):
        bad = asyncio.create_task(serving.run(sample(0)))
        await model.gate.wait_blocked()
        model.fail_with = ValueError("bad input")
        good = asyncio.create_task(serving.run(sample(1)))
        model.gate.release()
        with pytest.raises(ValueError, match="bad input"):
            await bad
        model.fail_with = None
        model.gate.open()
        assert float((await good).output[0]) == 2
        assert serving.statistics().failed == 1


async def test_killed_partition_retries_its_batch_on_another_and_restarts() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.1, partitions=2)
    async with start(serving):
        tasks = [asyncio.create_task(serving.run(sample(i))) for i in range(2)]
        await model.gate.wait_blocked()
        serving.partition_pids()[0].exit(KILL)
        # Let the killed partition's task leave the gate before counting who is held there.
        await wait_all_tasks_blocked()
        await model.gate.wait_blocked()  # the retry, on partition 1
        model.gate.open()
        results = await asyncio.gather(*tasks)
        assert [float(r.output[0]) for r in results] == [0, 2]
        # The crashed batch is split: each request runs alone (either could be the killer).
        assert model.batches == [[0, 1], [0], [1]]
        await wait_all_tasks_blocked()
        stats = serving.statistics()
        assert [(p.state, p.crashes) for p in stats.partitions] == [("idle", 1), ("idle", 0)]
        assert stats.retried_batches == 1
        assert model.loads == 3  # the restart loaded the model again
        # Both partitions serve again.
        more = [asyncio.create_task(serving.run(sample(i))) for i in range(4)]
        await asyncio.gather(*more)


async def test_crash_without_retries_fails_the_batch_with_partition_crashed() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0, retry_on_crash=0)
    async with start(serving):
        task = asyncio.create_task(serving.run(sample(0)))
        await model.gate.wait_blocked()
        serving.partition_pids()[0].exit(KILL)
        await wait_all_tasks_blocked()
        with pytest.raises(PartitionCrashed, match=r"serving 'rank': partition 0 died"):
            await task
        model.gate.open()
        await wait_all_tasks_blocked()
        assert float((await serving.run(sample(2))).output[0]) == 4


async def test_batch_telemetry_event() -> None:
    model = Recorder()
    model.gate.open()
    seen: list[tuple[dict[str, float], dict[str, object]]] = []
    telemetry.attach(
        "test-batch",
        ("corral", "serving", "batch"),
        lambda _e, m, md, _c: seen.append((dict(m), dict(md))),
    )
    try:
        serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.25)
        async with start(serving):
            await serving.run(sample(1))
    finally:
        telemetry.detach("test-batch")
    assert seen == [
        (
            {
                "size": 1,
                "padded_size": 1,
                "requests": 1,
                "wait": 0.25,
                "compute": 0.0,
                "attempts": 1,
            },
            {"serving": "rank", "version": "1", "partition": 0, "key": None, "reason": "timeout"},
        )
    ]


async def test_a_plain_model_runs_on_its_partition_thread() -> None:
    threads: list[str] = []

    def factory() -> object:
        def model(batch: np.ndarray) -> np.ndarray:
            threads.append(threading.current_thread().name)
            return batch + 1

        return model

    serving = Serving(factory, name="plain", batch_size=4, batch_timeout=0.0)
    async with start(serving):
        assert float((await serving.run(sample(1))).output[0]) == 2
    assert threads == ["corral-plain-v1-p0"]


async def test_run_sync_from_another_thread() -> None:
    serving = Serving(double, name="sync", batch_size=4, batch_timeout=0.0)
    async with start(serving):
        result = await asyncio.to_thread(serving.run_sync, sample(4))
        assert result.output.tolist() == [8, 8]
        batch = await asyncio.to_thread(serving.run_batch_sync, np.ones((2, 2)))
        assert batch.output.tolist() == [[2, 2], [2, 2]]
        with pytest.raises(RuntimeError, match="run_sync called on the node's event loop thread"):
            serving.run_sync(sample(1))


async def test_calls_before_start_and_after_stop_fail_with_not_running() -> None:
    serving = Serving(double, name="idle")
    with pytest.raises(ServingNotRunning, match="serving 'idle' is not running"):
        await serving.run(sample(1))
    async with start(serving):
        pass
    with pytest.raises(ServingNotRunning):
        await serving.run(sample(1))
    with pytest.raises(ServingNotRunning):
        serving.run_sync(sample(1))


async def test_stopping_fails_queued_requests() -> None:
    model = Recorder()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0)
    node = start(serving)
    await node.start()
    running = asyncio.create_task(serving.run(sample(0)))
    await model.gate.wait_blocked()
    queued = asyncio.create_task(serving.run(sample(1)))
    await wait_all_tasks_blocked()
    await node.stop()
    with pytest.raises(ServingNotRunning, match="it stopped with queued requests"):
        await queued
    with pytest.raises(ServingNotRunning, match="it stopped while the batch ran"):
        await running


def test_run_inline_loads_once_and_does_not_batch() -> None:
    loads: list[int] = []

    def factory() -> object:
        loads.append(1)
        return lambda b: b * 3

    serving = Serving(factory, name="inline")
    assert serving.run_inline(sample(1)).output.tolist() == [3, 3]
    assert serving.run_batch_inline(np.ones((2, 2))).output.tolist() == [[3, 3], [3, 3]]
    assert loads == [1]


def test_options_are_validated_naming_the_option() -> None:
    with pytest.raises(ValueError) as info:
        Serving(double, name="rank", batch_size=0)
    assert str(info.value) == (
        "invalid options for serving 'rank': batch_size must be an int >= 1; got 0"
    )
    with pytest.raises(ValueError, match="invalid options for serving 'rank': kind must be"):
        Serving(double, name="rank", kind="gpu")
    with pytest.raises(ValueError, match="pad_to must hold a size >= batch_size=8"):
        Serving(double, name="rank", batch_size=8, pad_to=(4,))
    with pytest.raises(
        ValueError, match=r"serving 'rank': unknown option 'batch_sizy'; valid options: batch_size,"
    ):
        Serving(double, name="rank", batch_sizy=3)


class Held:
    """A plain (threaded) model whose first batch blocks its thread until ``release``."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.hold = threading.Event()
        self.calls = 0

    def __call__(self) -> object:
        def model(batch: np.ndarray) -> np.ndarray:
            self.calls += 1
            if self.calls == 1:
                self.started.set()
                self.hold.wait(10.0)
            return batch * 2

        return model


async def test_thread_partition_killed_mid_batch_retries_it_and_drops_the_late_result() -> None:
    model = Held()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.1, partitions=2)
    async with start(serving):
        tasks = [asyncio.create_task(serving.run(sample(i))) for i in range(2)]
        await asyncio.to_thread(model.started.wait, 10.0)
        serving.partition_pids()[0].exit(KILL)
        results = await asyncio.gather(*tasks)  # the retry, on partition 1
        assert [float(r.output[0]) for r in results] == [0, 2]
        model.hold.set()  # the killed partition's thread finishes; its result is dropped
        stats = serving.statistics()
        assert (stats.completed, stats.failed, stats.retried_batches) == (2, 0, 1)
        assert [p.crashes for p in stats.partitions] == [1, 0]


@pytest.mark.realtime  # on virtual time the clock would jump past the retry's thread, too
async def test_thread_batch_past_call_timeout_kills_its_partition_and_retries() -> None:
    model = Held()
    serving = Serving(model, name="rank", batch_size=1, batch_timeout=0.0, call_timeout=0.2)
    async with start(serving):
        try:
            result = await serving.run(sample(3))  # retried on the restarted partition
        finally:
            model.hold.set()
        assert float(result.output[0]) == 6
        stats = serving.statistics()
        assert (stats.completed, stats.retried_batches, stats.partitions[0].crashes) == (1, 1, 1)


async def test_no_timer_stays_armed_once_the_queue_is_empty() -> None:
    model = Recorder()
    model.gate.open()
    serving = Serving(model, name="rank", batch_size=2, batch_timeout=0.1)
    async with start(serving):
        server = serving._door.current
        assert isinstance(server, ServingServer)
        first = asyncio.create_task(serving.run(sample(1)))
        await wait_all_tasks_blocked()
        assert server._timer is not None  # the batch timeout of the queued request
        await asyncio.gather(first, serving.run(sample(2)))  # full: cut at once
        assert server._timer is None and asyncio.get_running_loop().time() == 0.0


async def test_latency_percentiles_of_101_requests_answered_one_a_second() -> None:
    async def slow(batch: np.ndarray) -> np.ndarray:
        await asyncio.sleep(1.0)
        return batch

    serving = Serving(
        lambda: AsyncFunctionModel(slow), name="rank", batch_size=1, batch_timeout=0.1
    )
    async with start(serving):
        assert (serving.statistics().p50_latency, serving.statistics().p99_latency) == (0, 0)
        # All arrive at t = 0; request i is answered at t = i + 1: latencies 1 .. 101 s.
        await asyncio.gather(*[serving.run(sample(i)) for i in range(101)])
        stats = serving.statistics()
        assert asyncio.get_running_loop().time() == 101.0
        assert (stats.p50_latency, stats.p99_latency) == (51.0, 100.0)


async def test_latency_percentiles_leave_out_a_request_that_expired_while_its_batch_ran() -> None:
    async def slow(batch: np.ndarray) -> np.ndarray:
        await asyncio.sleep(1.0)
        return batch

    serving = Serving(lambda: AsyncFunctionModel(slow), name="rank", batch_size=3, batch_timeout=1)
    async with start(serving):
        first = asyncio.create_task(serving.run(sample(0)))  # arrives at t = 0
        await asyncio.sleep(0.05)
        late = asyncio.create_task(serving.run(sample(1), deadline=0.5))
        last = asyncio.create_task(serving.run(sample(2)))  # the batch [0, 1, 2] runs at 0.05
        with pytest.raises(DeadlineExceeded):
            await late
        await asyncio.gather(first, last)
        end = asyncio.get_running_loop().time()
        assert end == 0.05 + 1.0
        stats = serving.statistics()
        assert (stats.completed, stats.expired, stats.batch_sizes) == (2, 1, ((3, 1),))
        # Only the two answered: latencies end - 0 and end - 0.05 (the late one's would be too).
        expected = np.percentile([end - 0.0, end - 0.05], (50, 99))
        assert (stats.p50_latency, stats.p99_latency) == tuple(map(float, expected))
