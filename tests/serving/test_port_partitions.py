"""Port partitions: real worker processes, real SIGKILLs (real time)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serving_models import scale

from corral import Node
from corral.errors import PortCallError
from corral.serving import Serving

HERE = str(Path(__file__).resolve().parent)


def port_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {"PYTHONPATH": f"{HERE}{os.pathsep}{path}" if path else HERE}


def serving(factory: Any, **options: object) -> Serving:
    return Serving(factory, name="ports", kind="port", port_options={"env": port_env()}, **options)


@pytest.mark.realtime
async def test_port_partition_runs_batches_in_a_worker_process() -> None:
    s = serving("serving_models:double", batch_size=8, batch_timeout=0.005)
    async with Node([s.child_spec()]):
        results = await asyncio.gather(*[s.run(np.full(3, i, np.float32)) for i in range(20)])
        assert [float(r.output[0]) for r in results] == [2.0 * i for i in range(20)]
        (part,) = s.statistics().partitions
        assert part.kind == "port" and part.os_pid not in (None, os.getpid())


@pytest.mark.realtime
async def test_port_model_error_fails_only_its_batch() -> None:
    s = serving("serving_models:failing", batch_size=2, batch_timeout=0.0)
    async with Node([s.child_spec()]):
        with pytest.raises(PortCallError, match="the handler raised ValueError: bad batch"):
            await s.run(np.ones(2))
        assert s.statistics().partitions[0].crashes == 0


@pytest.mark.realtime
async def test_sigkilled_port_partition_under_load_loses_no_request() -> None:
    s = serving("serving_models:slow_double", batch_size=8, batch_timeout=0.002, partitions=2)
    async with Node([s.child_spec()]):
        done = 0
        flowing = asyncio.Event()

        async def caller(i: int) -> None:
            nonlocal done
            for j in range(15):
                result = await s.run(np.full(4, i * 100 + j, np.float32))
                assert float(result.output[0]) == 2.0 * (i * 100 + j)
                done += 1
                if done == 40:
                    flowing.set()

        callers = [asyncio.create_task(caller(i)) for i in range(32)]
        await flowing.wait()  # the load is flowing: both partitions run batches
        victim = s.statistics().partitions[0].os_pid
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        await asyncio.gather(*callers)
        stats = s.statistics()
        assert (stats.completed, stats.failed) == (32 * 15, 0)
        # Killed mid-batch (the usual case under this load), its batch was retried; killed
        # between two batches, there was none to retry.
        assert stats.partitions[0].crashes == 1 and stats.retried_batches <= 1


@pytest.mark.realtime
async def test_swap_port_partitions() -> None:
    s = serving("serving_models:double", batch_size=4, batch_timeout=0.0)
    async with Node([s.child_spec()]):
        assert float((await s.run(np.ones(2))).output[0]) == 2.0
        await s.swap("serving_models:triple", version="2", warmup=np.ones(2))
        result = await s.run(np.ones(2))
        assert (float(result.output[0]), result.version) == (3.0, "2")


def test_port_partitions_need_an_importable_factory() -> None:
    with pytest.raises(ValueError, match="the model factory must be importable"):
        Serving(lambda: lambda b: b, name="ports", kind="port")


@pytest.mark.realtime
async def test_partial_factories_send_their_arguments_to_the_worker() -> None:
    s = serving(functools.partial(scale, 10.0, offset=1.0), batch_size=4, batch_timeout=0.0)
    async with Node([s.child_spec()]):
        assert float((await s.run(np.ones(2))).output[0]) == 11.0
        await s.swap(functools.partial(scale, 100.0), version="2", warmup=np.ones(2))
        result = await s.run(np.ones(2))
        assert (float(result.output[0]), result.version) == (100.0, "2")


def test_partial_factory_arguments_must_be_plain_data() -> None:
    with pytest.raises(ValueError, match="argument 0 is ndarray"):
        Serving(functools.partial(scale, np.ones(2)), name="ports", kind="port")
    with pytest.raises(ValueError, match="argument 'offset' is object"):
        Serving(functools.partial(scale, 1.0, offset=object()), name="ports", kind="port")


def test_port_options_take_a_mapping_or_pairs_and_keep_pairs() -> None:
    env = port_env()
    as_mapping = Serving(
        "serving_models:double", kind="port", port_options={"spares": 0, "env": env}
    )
    as_pairs = Serving(
        "serving_models:double", kind="port", port_options=(("spares", 0), ("env", env))
    )
    assert as_mapping.options.port_options == (("spares", 0), ("env", env))
    assert as_pairs.options.port_options == as_mapping.options.port_options


VALID_KEYS = (
    "valid keys: command, python, env, cwd, max_frame_size, shm_threshold, max_in_flight, "
    "start_timeout, stop_timeout, spin, spares, crash_on_error"
)


@pytest.mark.parametrize(
    ("port_options", "message"),
    [
        ({"spare": 1}, f"port_options has an unknown key 'spare'; {VALID_KEYS}"),
        ((("spare", 1),), f"port_options has an unknown key 'spare'; {VALID_KEYS}"),
        (
            {"handler": "x:Y"},
            f"port_options cannot set 'handler': the serving sets it for its partitions; "
            f"{VALID_KEYS}",
        ),
        ((("spares", 1), ("spares", 2)), f"port_options names 'spares' twice; {VALID_KEYS}"),
        ({"spares": -1}, "port_options: spares must be an int >= 0; got -1"),
        (
            {1: 2},
            "port_options must be a mapping of str to value, or a tuple of (str, value) pairs; "
            "got {1: 2}",
        ),
        (
            [("spares", 1)],
            "port_options must be a mapping of str to value, or a tuple of (str, value) pairs; "
            "got [('spares', 1)]",
        ),
    ],
)
def test_bad_port_options_are_refused_naming_port_options_and_the_key(
    port_options: object, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        Serving("serving_models:double", name="ports", kind="port", port_options=port_options)
    assert str(info.value) == f"invalid options for serving 'ports': {message}"
