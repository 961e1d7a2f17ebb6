"""A serving's crash reports name its partitions' supervisor '<serving>/partitions-v<version>'."""

from __future__ import annotations

import logging

import pytest
from serving_helpers import double

from corral import KILL, Node
from corral.serving import Serving
from corral.testing import wait_all_tasks_blocked


async def test_a_killed_partition_is_reported_under_the_servings_name_and_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    serving = Serving(double, name="rank", partitions=2, batch_timeout=0.01)
    with caplog.at_level(logging.ERROR, logger="corral.supervisor"):
        async with Node([serving.child_spec()]) as node:
            labels = sorted(p.label for p in node.processes() if p.label is not None)
            victim = serving.partition_pids()[1]
            victim.exit(KILL)
            await wait_all_tasks_blocked()
    assert [label for label in labels if label.startswith("rank/")] == [
        "rank/partitions-v1",
        "rank/partitions-v1/partition-0",
        "rank/partitions-v1/partition-1",
    ]
    [record] = [r for r in caplog.records if r.name == "corral.supervisor"]
    assert record.getMessage() == (
        f"supervisor 'rank/partitions-v1': child 'partition-1' {victim} exited with killed; "
        "restarting (restart 1)"
    )
