"""Rolling swaps: one partition at a time, never fewer than N in service, rolled back
partition by partition; a retired port version's workers and spares are stopped."""

from __future__ import annotations

import asyncio
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import Recorder, sample
from serving_models import triple_once

from corral import Node, telemetry
from corral.errors import SwapFailed
from corral.port import Port, PortOptions
from corral.port.spares import wait_spares
from corral.runtime.supervisor import Supervisor
from corral.serving import AsyncFunctionModel, Serving
from corral.serving.options import ServingOptions, swap_strategy
from corral.serving.swap import STEP_EVENT
from corral.testing import wait_all_tasks_blocked

HERE = str(Path(__file__).resolve().parent)


class Log:
    """One ordered log of a swap's steps (from the loop, each with the partitions in
    service right after it) and of model loads (from the partitions' threads)."""

    def __init__(self) -> None:
        self.entries: list[object] = []
        self.serving: Serving | None = None

    def step(self, _event: object, _m: object, md: dict[str, object], _c: object) -> None:
        assert self.serving is not None
        count = in_service(self.serving)
        self.entries.append((md["step"], md["version"], md["partition"], count))

    def load(self, what: str) -> None:
        self.entries.append(what)  # list.append is atomic: safe from a partition thread


def in_service(serving: Serving) -> int:
    """Partitions batches may be cut for (idle or busy; not draining, not down)."""
    return sum(p.state in ("idle", "busy") for p in serving.statistics().partitions)


@pytest.fixture
def log() -> Iterator[Log]:
    log = Log()
    telemetry.attach("test-rolling", STEP_EVENT, log.step)
    try:
        yield log
    finally:
        telemetry.detach("test-rolling")


class Loading(Recorder):
    """An ungated ``Recorder`` whose loads are logged, and whose ``fail_load``-th load
    raises."""

    def __init__(self, factor: float, log: Log, name: str, *, fail_load: int = 0) -> None:
        super().__init__(factor)
        self.gate.open()
        self.log = log
        self.name = name
        self.fail_load = fail_load

    def __call__(self) -> AsyncFunctionModel:
        self.log.load(f"load {self.name}")
        if self.loads + 1 == self.fail_load:
            self.loads += 1
            raise OSError(f"{self.name}: weights missing")
        return super().__call__()


def test_auto_is_rolling_for_port_partitions_and_all_at_once_otherwise() -> None:
    assert swap_strategy(ServingOptions(kind="port")) == "rolling"
    assert swap_strategy(ServingOptions(kind="thread")) == "all_at_once"
    assert swap_strategy(ServingOptions(kind="thread", swap="rolling")) == "rolling"
    assert swap_strategy(ServingOptions(kind="port", swap="all_at_once")) == "all_at_once"
    with pytest.raises(ValueError, match="swap must be 'auto', 'rolling' or 'all_at_once'"):
        ServingOptions(swap="rolled")


async def test_a_rolling_swap_loads_one_partition_at_a_time_and_keeps_n_in_service(
    log: Log,
) -> None:
    serving = log.serving = Serving(
        Recorder(), name="rank", partitions=3, swap="rolling", batch_size=2
    )
    new = Loading(3.0, log, "v2")
    async with Node([serving.child_spec()]):
        assert in_service(serving) == 3
        await serving.swap(new, version="2", warmup=sample(1))
        # Each new partition loads (and warms) while the 3 old ones serve; then it takes
        # batches (4 in service) before the old one at its index stops (3).
        assert log.entries == [
            "load v2",
            ("serving", "2", 0, 4),
            ("stopped", "1", 0, 3),
            "load v2",
            ("serving", "2", 1, 4),
            ("stopped", "1", 1, 3),
            "load v2",
            ("serving", "2", 2, 4),
            ("stopped", "1", 2, 3),
        ]
        assert new.batches == [[1.0], [1.0], [1.0]]  # one warm-up per partition
        stats = serving.statistics()
        assert (stats.version, stats.swaps) == ("2", 1)
        assert [(p.index, p.version, p.state) for p in stats.partitions] == [
            (0, "2", "idle"),
            (1, "2", "idle"),
            (2, "2", "idle"),
        ]
        result = await serving.run(sample(2))
        assert (float(result.output[0]), result.version) == (6.0, "2")


async def test_midway_through_a_rolling_swap_both_versions_take_batches() -> None:
    old, new = Recorder(2.0), Recorder(3.0)
    old.gate.open()
    serving = Serving(
        old, name="rank", partitions=2, swap="rolling", batch_size=1, batch_timeout=0.0
    )
    async with Node([serving.child_spec()]):
        swap = asyncio.create_task(serving.swap(new, version="2", warmup=sample(1)))
        await new.gate.wait_blocked()
        new.gate.release()  # partition 0 warmed up: in service; the old partition 0 stops
        await new.gate.wait_blocked()  # partition 1 warms up (not in service yet)
        assert serving.version == "2"
        states = [(p.index, p.version, p.state) for p in serving.statistics().partitions]
        assert states == [(0, "2", "idle"), (1, "1", "idle")]
        first = asyncio.create_task(serving.run(sample(5)))
        second = asyncio.create_task(serving.run(sample(6)))
        await wait_all_tasks_blocked()
        # The new version's partition takes the first batch (held at its gate), the old
        # one's the second.
        assert new.batches == [[1.0], [1.0], [5.0]]
        assert second.done()
        assert (float(second.result().output[0]), second.result().version) == (12.0, "1")
        new.gate.open()
        assert (float((await first).output[0]), (await first).version) == (15.0, "2")
        await swap
        assert [p.version for p in serving.statistics().partitions] == ["2", "2"]


async def test_no_request_fails_during_rolling_swaps_under_load() -> None:
    models = [Recorder(float(k)) for k in range(1, 4)]
    for m in models:
        m.gate.open()
    serving = Serving(
        models[0], name="rank", batch_size=4, batch_timeout=0.01, partitions=3, swap="rolling"
    )
    async with Node([serving.child_spec()]):

        async def caller(i: int) -> set[str]:
            versions = set()
            for j in range(20):
                result = await serving.run(sample(1))
                versions.add(result.version)
                assert float(result.output[0]) == float(result.version)
                await asyncio.sleep(0.003 * ((i + j) % 3))
            return versions

        callers = [asyncio.create_task(caller(i)) for i in range(8)]
        for k in (2, 3):
            await asyncio.sleep(0.02)
            await serving.swap(models[k - 1], version=str(k), warmup=np.ones(2, np.float32))
        seen = await asyncio.gather(*callers)
        stats = serving.statistics()
        assert (stats.failed, stats.completed, stats.swaps) == (0, 8 * 20, 2)
        assert set().union(*seen) >= {"1", "3"}


async def test_a_load_failing_midway_puts_the_replaced_partitions_back_on_the_old_version(
    log: Log,
) -> None:
    first = Loading(2.0, log, "v1")
    serving = log.serving = Serving(first, name="rank", partitions=3, swap="rolling", batch_size=2)
    new = Loading(3.0, log, "v2", fail_load=3)  # partition 2's load fails
    async with Node([serving.child_spec()]):
        log.entries.clear()
        with pytest.raises(SwapFailed) as info:
            await serving.swap(new, version="2", warmup=sample(1))
        assert str(info.value) == (
            "serving 'rank': swap to version '2' failed and was rolled back: StartError(\"start "
            "process <10 ThreadPartition>: init failed with OSError('v2: weights missing')\")"
        )
        # Partitions 1 then 0 go back to version 1 the way they came: the old partition
        # loads again and takes batches, then the new one stops. Never fewer than 3.
        assert log.entries == [
            "load v2",
            ("serving", "2", 0, 4),
            ("stopped", "1", 0, 3),
            "load v2",
            ("serving", "2", 1, 4),
            ("stopped", "1", 1, 3),
            "load v2",
            "load v1",
            ("serving", "1", 1, 4),
            ("stopped", "2", 1, 3),
            "load v1",
            ("serving", "1", 0, 4),
            ("stopped", "2", 0, 3),
        ]
        stats = serving.statistics()
        assert (stats.version, stats.swaps, stats.failed) == ("1", 0, 0)
        assert [(p.index, p.version, p.state) for p in stats.partitions] == [
            (0, "1", "idle"),
            (1, "1", "idle"),
            (2, "1", "idle"),
        ]
        result = await serving.run(sample(2))
        assert (float(result.output[0]), result.version) == (4.0, "1")


async def test_no_request_fails_while_a_rolling_swap_rolls_back_under_load() -> None:
    old = Recorder(2.0)
    old.gate.open()
    warmups = 0

    async def warm_fails_on_the_second(batch: np.ndarray) -> np.ndarray:
        nonlocal warmups
        if float(batch[0, 0]) == -1.0:
            warmups += 1
            if warmups == 2:
                raise RuntimeError("NaN in the output")
        return batch * 3.0

    serving = Serving(
        old, name="rank", batch_size=4, batch_timeout=0.01, partitions=2, swap="rolling"
    )
    async with Node([serving.child_spec()]):

        async def caller(i: int) -> None:
            for j in range(15):
                result = await serving.run(sample(1))
                assert float(result.output[0]) == {"1": 2.0, "2": 3.0}[result.version]
                await asyncio.sleep(0.002 * ((i + j) % 3))

        callers = [asyncio.create_task(caller(i)) for i in range(6)]
        await asyncio.sleep(0.01)
        with pytest.raises(SwapFailed, match="NaN in the output"):
            await serving.swap(
                lambda: AsyncFunctionModel(warm_fails_on_the_second),
                version="2",
                warmup=np.full(2, -1.0, np.float32),
            )
        await asyncio.gather(*callers)
        stats = serving.statistics()
        assert (stats.failed, stats.completed, stats.version) == (0, 6 * 15, "1")
        assert [p.version for p in stats.partitions] == ["1", "1"]


async def test_when_the_old_version_cannot_load_again_the_serving_restarts_whole(
    log: Log,
) -> None:
    # Version 2 fails on partition 1; putting partition 0 back needs version 1's third
    # load, which fails too: nothing is left to go back to.
    old = Loading(2.0, log, "v1", fail_load=3)
    serving = log.serving = Serving(old, name="rank", partitions=2, swap="rolling")
    async with Node([serving.child_spec()]) as node:
        before = serving.partition_pids()
        server = node.lookup("rank")
        with pytest.raises(RuntimeError) as info:
            await serving.swap(Loading(3.0, log, "v2", fail_load=2), version="2")
        assert str(info.value) == (
            "serving 'rank': swap to version '2' failed and could not be rolled back: "
            "partition 0 of version '1' did not load again: StartError(\"start process "
            "<9 ThreadPartition>: init failed with OSError('v1: weights missing')\")"
        )
        # The server crashed; its supervisor starts it again, on version 1's factory.
        await Supervisor.wait_restarted(node.root, "rank", server)
        result = await serving.run(sample(2))
        assert (float(result.output[0]), result.version) == (4.0, "1")
        assert serving.statistics().swaps == 0
        assert set(serving.partition_pids()).isdisjoint(before)
        assert log.entries == [
            "load v1",
            "load v1",
            "load v2",
            ("serving", "2", 0, 3),
            ("stopped", "1", 0, 2),
            "load v2",  # fails
            "load v1",  # fails: the server crashes
            "load v1",  # the restarted server's partitions
            "load v1",
        ]


# -- port partitions: real worker processes (real time) ------------------------------------


def port_serving(**options: object) -> Serving:
    path = os.environ.get("PYTHONPATH", "")
    env = {"PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else HERE}
    spares = options.pop("spares", 1)
    return Serving(
        "serving_models:double",
        name="ports",
        kind="port",
        partitions=2,
        batch_size=8,
        batch_timeout=0.002,
        port_options={"env": env, "spares": spares},
        **options,
    )


def alive(os_pid: int) -> bool:
    try:
        os.kill(os_pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_options(serving: Serving) -> PortOptions:
    port = Port.running_as(serving.partition_pids()[0])
    assert port is not None
    return port.options


async def load(serving: Serving, done: asyncio.Event) -> int:
    """Closed-loop callers until ``done``; every answer checked against its version."""

    async def caller(i: int) -> int:
        n = 0
        while not done.is_set():
            x = np.full(2, i * 1000 + n, np.float32)
            result = await serving.run(x)
            assert float(result.output[0]) == {"1": 2.0, "2": 3.0}[result.version] * x[0]
            n += 1
        return n

    return sum(await asyncio.gather(*(caller(i) for i in range(16))))


@pytest.mark.realtime
async def test_a_rolling_port_swap_under_load_fails_nothing_and_stops_the_old_workers_and_spare(
    log: Log,
) -> None:
    serving = log.serving = port_serving()
    async with Node([serving.child_spec()]) as node:
        old_workers = [p.os_pid for p in serving.statistics().partitions]
        [old_spare] = await wait_spares(node, port_options(serving))
        done = asyncio.Event()
        callers = asyncio.create_task(load(serving, done))
        await serving.swap("serving_models:triple", version="2", warmup=np.ones(2, np.float32))
        done.set()
        answered = await callers
        stats = serving.statistics()
        assert (stats.failed, stats.completed, stats.version) == (0, answered, "2")
        assert log.entries == [
            ("serving", "2", 0, 3),
            ("stopped", "1", 0, 2),
            ("serving", "2", 1, 3),
            ("stopped", "1", 1, 2),
        ]
        # The old version's workers and its spare are gone once swap returns; the new
        # version has its own spare.
        assert [pid for pid in (*old_workers, old_spare) if pid and alive(pid)] == []
        [new_spare] = await wait_spares(node, port_options(serving))
        assert alive(new_spare) and new_spare not in old_workers
        new_workers = [p.os_pid for p in stats.partitions]
        assert all(pid is not None and alive(pid) for pid in new_workers)
    assert not alive(new_spare)


@pytest.mark.realtime
async def test_a_port_swap_failing_midway_rolls_back_under_load_with_real_workers() -> None:
    serving = port_serving(spares=0)
    with tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "weights")
        async with Node([serving.child_spec()]):
            before = [p.os_pid for p in serving.statistics().partitions]
            done = asyncio.Event()
            callers = asyncio.create_task(load(serving, done))
            with pytest.raises(SwapFailed, match=r"weights missing \(weights was read already\)"):
                # Partition 0 loads it; partition 1's load fails.
                await serving.swap(
                    functools.partial(triple_once, marker),
                    version="2",
                    warmup=np.ones(2, np.float32),
                )
            done.set()
            answered = await callers
            stats = serving.statistics()
            assert (stats.failed, stats.completed, stats.version) == (0, answered, "1")
            after = [(p.version, p.os_pid) for p in stats.partitions]
            # Partition 0 went back to version 1 in a new worker; partition 1 never left.
            assert [v for v, _ in after] == ["1", "1"]
            assert after[0][1] != before[0] and after[1][1] == before[1]
            assert (await serving.run(np.ones(2, np.float32))).version == "1"
