"""Port partitions at the boundary, for real: a request that kills its worker (SIGABRT) fails
alone, a stream of them stays within the restart intensity, a version's partitions start at
once, and workers import what this process can import (real processes, real time)."""

from __future__ import annotations

import asyncio
import functools
import textwrap
from pathlib import Path

import numpy as np
import pytest

from corral import Node
from corral.errors import PartitionCrashed, StartError
from corral.serving import Serving


def sample(value: float) -> np.ndarray:
    return np.full(3, value, np.float32)


@pytest.mark.realtime
async def test_a_request_that_kills_its_worker_fails_alone_after_two_crashes() -> None:
    s = Serving(
        "serving_models:poisoned_double",
        name="poison",
        kind="port",
        partitions=2,
        batch_size=8,
        batch_timeout=0.05,
        retry_on_crash=1,
        port_options={"spares": 1},
    )
    async with Node([s.child_spec()]) as node:
        server = node.lookup("poison")
        values = [1, 2, 3, -4, 5, 6, 7, 8]
        results = await asyncio.gather(*[s.run(sample(v)) for v in values], return_exceptions=True)
        for v, r in zip(values, results, strict=True):
            if v < 0:
                assert isinstance(r, PartitionCrashed) and r.attempts == 2, r
            else:
                assert not isinstance(r, BaseException) and float(r.output[0]) == 2 * v
        stats = s.statistics()
        # The batch of 8 crashed once; its requests ran alone; the poison crashed again.
        assert sum(p.crashes for p in stats.partitions) == 2
        assert (stats.completed, stats.failed, stats.in_flight) == (7, 1, 0)
        assert node.lookup("poison") is server  # the serving itself never restarted


@pytest.mark.realtime
async def test_one_poison_in_a_hundred_sustained_fails_only_the_poison() -> None:
    s = Serving(
        "serving_models:poisoned_double",
        name="poison",
        kind="port",
        partitions=2,
        batch_size=16,
        batch_timeout=0.002,
        retry_on_crash=1,
        # Each poison costs retry_on_crash + 1 = 2 restarts: 20 in 5 s bear 10 of them.
        partition_max_restarts=20,
        port_options={"spares": 1},
    )
    total, callers = 500, 8
    async with Node([s.child_spec()]) as node:
        server = node.lookup("poison")
        outcomes: dict[int, object] = {}

        async def caller(c: int) -> None:
            for k in range(c, total, callers):
                value = -float(k) if k % 100 == 50 else float(k)
                try:
                    outcomes[k] = float((await s.run(sample(value))).output[0])
                except Exception as exc:
                    outcomes[k] = exc

        await asyncio.gather(*[caller(c) for c in range(callers)])
        poisons = [k for k in range(total) if k % 100 == 50]
        for k in range(total):
            if k in poisons:
                assert isinstance(outcomes[k], PartitionCrashed), (k, outcomes[k])
            else:
                assert outcomes[k] == 2.0 * k, (k, outcomes[k])
        stats = s.statistics()
        assert sum(p.crashes for p in stats.partitions) == 2 * len(poisons)
        assert (stats.completed, stats.failed) == (total - len(poisons), len(poisons))
        assert node.lookup("poison") is server


@pytest.mark.realtime
async def test_a_versions_partitions_load_at_the_same_time(tmp_path: Path) -> None:
    # Each partition's model loads only once both are loading: one after another, the
    # first would wait for the second until its 60 s run out.
    factory = functools.partial(__import__("serving_models").meeting, str(tmp_path), 2)
    # No warm spare: a spare loading beside the first partition would meet it.
    s = Serving(
        factory, name="meet", kind="port", partitions=2, batch_timeout=0.0,
        port_options={"spares": 0},
    )  # fmt: skip
    async with Node([s.child_spec()]):
        assert float((await s.run(sample(2))).output[0]) == 4.0
        assert len(await asyncio.to_thread(lambda: list(tmp_path.iterdir()))) == 2


MODEL = textwrap.dedent(
    """
    def load():
        return lambda batch: batch + 1
    """
)


@pytest.mark.realtime
async def test_port_workers_import_what_this_process_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "elsewhere_model.py").write_text(MODEL)
    monkeypatch.syspath_prepend(str(models))
    monkeypatch.chdir(tmp_path)  # run from another directory, as a user would
    s = Serving("elsewhere_model:load", name="path", kind="port", batch_timeout=0.0)
    async with Node([s.child_spec()]):
        assert float((await s.run(sample(1))).output[0]) == 2.0
    closed = Serving(
        "elsewhere_model:load", name="path", kind="port", batch_timeout=0.0,
        inherit_sys_path=False,
    )  # fmt: skip
    with pytest.raises(StartError, match="No module named 'elsewhere_model'"):
        async with Node([closed.child_spec()]):
            pass
