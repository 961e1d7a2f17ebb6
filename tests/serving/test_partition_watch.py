"""An idle partition that dies is seen down at once, and back up after its restart, with no
request needed to find out (what the gateway's readiness reads)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from corral import Node
from corral.port import Port
from corral.serving import Serving

HERE = str(Path(__file__).resolve().parent)


async def _until(check: object, within: float) -> None:
    loop = asyncio.get_running_loop()
    began = loop.time()
    while not check():  # type: ignore[operator]
        assert loop.time() - began < within
        await asyncio.sleep(0.005)


@pytest.mark.realtime
async def test_a_killed_idle_port_partition_is_down_then_idle_without_a_request() -> None:
    s = Serving(
        "serving_models:double",
        name="watched",
        kind="port",
        partitions=2,
        port_options={"env": {"PYTHONPATH": HERE}},
    )
    async with Node([s.child_spec()]):
        first, second = s.partition_pids()
        os_pid = Port.os_pid_of(first)
        assert os_pid is not None
        os.kill(os_pid, signal.SIGKILL)
        # Seen dead with no request (the crash is counted), then back. "down" itself may be
        # too brief to poll for: a warm spare restarts the partition in milliseconds.
        await _until(lambda: s.statistics().partitions[0].crashes == 1, 10.0)
        assert s.statistics().partitions[1].state == "idle"
        await _until(lambda: s.statistics().partitions[0].state == "idle", 10.0)
        assert s.partition_pids()[0] is not first and s.partition_pids()[1] is second
        assert s.statistics().failed == 0 and s.statistics().batches == 0
        result = await s.run_batch(np.ones((2, 3), np.float32))
        assert result.output.tolist() == [[2.0] * 3] * 2
