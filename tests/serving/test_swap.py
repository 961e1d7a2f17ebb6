"""Hot swap on virtual time: load beside, warm, flip, drain, stop; roll back on failure."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from serving_helpers import Recorder, sample

from corral import Node, telemetry
from corral.errors import SwapFailed
from corral.serving import Serving
from corral.testing import wait_all_tasks_blocked


async def test_swap_flips_new_batches_and_drains_the_old_version() -> None:
    old, new = Recorder(2.0), Recorder(10.0)
    new.gate.open()
    serving = Serving(old, name="rank", batch_size=1, batch_timeout=0.0)
    events: list[dict[str, object]] = []
    telemetry.attach(
        "test-swap",
        ("corral", "serving", "swapped"),
        lambda _e, _m, md, _c: events.append(dict(md)),
    )
    try:
        async with Node([serving.child_spec()]):
            in_flight = asyncio.create_task(serving.run(sample(1)))
            await old.gate.wait_blocked()
            swap = asyncio.create_task(serving.swap(new, version="2", warmup=sample(7)))
            await wait_all_tasks_blocked()
            # Loaded beside the old one and warmed up; new batches go to the new version.
            assert new.batches == [[7]]
            assert serving.version == "2"
            assert not swap.done()  # the old version still runs a batch
            states = [(p.version, p.state) for p in serving.statistics().partitions]
            assert states == [("2", "idle"), ("1", "busy")]
            fresh = await serving.run(sample(3))
            assert (float(fresh.output[0]), fresh.version) == (30.0, "2")
            old.gate.release()
            done = await in_flight
            assert (float(done.output[0]), done.version) == (2.0, "1")
            await swap
            stats = serving.statistics()
            assert (stats.version, stats.swaps, stats.failed) == ("2", 1, 0)
            assert [(p.version, p.state) for p in stats.partitions] == [("2", "idle")]
    finally:
        telemetry.detach("test-swap")
    assert events == [{"serving": "rank", "version": "2", "previous": "1"}]


async def test_failed_warmup_rolls_back_and_the_old_version_keeps_serving() -> None:
    old, new = Recorder(2.0), Recorder(10.0)
    old.gate.open()
    new.gate.open()
    new.fail_with = RuntimeError("weights corrupt")
    serving = Serving(old, name="rank", batch_size=1, batch_timeout=0.0)
    async with Node([serving.child_spec()]):
        with pytest.raises(SwapFailed) as info:
            await serving.swap(new, version="2", warmup=sample(1))
        assert str(info.value) == (
            "serving 'rank': swap to version '2' failed and was rolled back: "
            "RuntimeError('weights corrupt')"
        )
        assert isinstance(info.value.__cause__, RuntimeError)
        assert serving.version == "1"
        result = await serving.run(sample(4))
        assert (float(result.output[0]), result.version) == (8.0, "1")
        parts = serving.statistics().partitions
        assert [(p.version, p.state) for p in parts] == [("1", "idle")]


async def test_a_model_that_fails_to_load_rolls_back() -> None:
    old = Recorder()
    old.gate.open()

    def broken() -> object:
        raise OSError("no such file: model.pt")

    serving = Serving(old, name="rank", batch_size=1, batch_timeout=0.0)
    async with Node([serving.child_spec()]):
        with pytest.raises(SwapFailed, match="swap to version 'bad' failed and was rolled back"):
            await serving.swap(broken, version="bad")
        assert (await serving.run(sample(1))).version == "1"


async def test_no_request_fails_during_repeated_swaps_under_load() -> None:
    models = [Recorder(float(k)) for k in range(1, 5)]
    for m in models:
        m.gate.open()
    serving = Serving(models[0], name="rank", batch_size=4, batch_timeout=0.01, partitions=2)
    async with Node([serving.child_spec()]):

        async def caller(i: int) -> list[str]:
            versions = []
            for j in range(20):
                result = await serving.run(sample(1))
                versions.append(result.version)
                assert float(result.output[0]) == float(result.version)
                await asyncio.sleep(0.003 * ((i + j) % 3))
            return versions

        callers = [asyncio.create_task(caller(i)) for i in range(8)]
        for k in range(2, 5):
            await asyncio.sleep(0.02)
            await serving.swap(models[k - 1], version=str(k), warmup=np.ones(2, np.float32))
        seen = await asyncio.gather(*callers)
        assert serving.statistics().failed == 0
        assert {v for vs in seen for v in vs} >= {"1", "4"}
