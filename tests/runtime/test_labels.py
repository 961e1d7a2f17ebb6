"""Processes started by a supervisor carry a label, their path of child ids in the tree (or
their registered name), and crash reports name supervisors by it."""

from __future__ import annotations

import logging

import pytest

from corral import Actor, ChildSpec, Node, Supervisor
from corral.errors import PortExited
from corral.testing import wait_all_tasks_blocked


class Boom(Actor):
    def handle_cast(self, msg: object) -> None:
        raise RuntimeError("boom")


def tree() -> Supervisor:
    return Supervisor(
        [
            ChildSpec(
                id="partitions-v1",
                start=lambda: Supervisor([ChildSpec(id="worker", start=Boom)]),
                type="supervisor",
            ),
            ChildSpec(id="named", start=Boom, name="rank.named"),
        ]
    )


async def test_children_are_labelled_by_their_path_of_child_ids_or_registered_name() -> None:
    async with Node([ChildSpec(id="rank", start=tree, type="supervisor")]) as node:
        lone = await node.spawn(Boom())
        labels = [p.label for p in node.processes() if p.label is not None]
        assert node.root.label is None and lone.label is None
        assert sorted(labels) == [
            "rank",
            "rank.named",
            "rank/partitions-v1",
            "rank/partitions-v1/worker",
        ]


async def test_a_crash_report_names_a_nested_supervisor_by_its_label(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="corral"):
        async with Node([ChildSpec(id="rank", start=tree, type="supervisor")]) as node:
            [worker] = [p for p in node.processes() if p.label == "rank/partitions-v1/worker"]
            worker.cast("crash")
            await wait_all_tasks_blocked()
            [restarted] = [p for p in node.processes() if p.label == "rank/partitions-v1/worker"]
    [record] = caplog.records
    assert record.getMessage() == (
        f"supervisor 'rank/partitions-v1': child 'worker' {worker} exited with "
        "RuntimeError('boom'); restarting (restart 1)"
    )
    assert record.crash_report.child_id == "worker"  # type: ignore[attr-defined]
    assert restarted is not worker


class WorkerDied(Actor):
    def handle_cast(self, msg: object) -> None:
        raise PortExited("port <9 Port>", signal=9)


async def test_a_crash_report_leaves_out_a_traceback_that_only_shows_corrals_plumbing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A port worker killed by a signal (PortExited), and a child supervisor giving up
    # (RestartIntensityExceeded): the reason says it all; a model's own error keeps its trace.
    def inner() -> Supervisor:
        return Supervisor([ChildSpec(id="boom", start=Boom)], max_restarts=0)

    children = [
        ChildSpec(id="port", start=WorkerDied),
        ChildSpec(id="inner", start=inner, type="supervisor"),
    ]
    with caplog.at_level(logging.ERROR, logger="corral"):
        async with Node(
            [ChildSpec(id="top", start=lambda: Supervisor(children), type="supervisor")]
        ) as node:
            for label in ("top/port", "top/inner/boom"):
                [pid] = [p for p in node.processes() if p.label == label]
                pid.cast("crash")
                await wait_all_tasks_blocked()
    assert [(r.getMessage().split(":")[0], r.exc_info is not None) for r in caplog.records] == [
        ("supervisor 'top'", False),
        ("supervisor 'top/inner'", True),
        ("supervisor 'top'", False),
    ]


async def test_a_labelled_supervisor_that_gives_up_is_named_by_its_label() -> None:
    def inner() -> Supervisor:
        return Supervisor([ChildSpec(id="boom", start=Boom)], max_restarts=0)

    top = Supervisor([ChildSpec(id="inner", start=inner, type="supervisor", restart="temporary")])
    async with Node() as node:
        sup = await node.spawn(top, label="top")
        [child] = await Supervisor.which_children(sup)
        assert child.pid is not None
        [boom] = await Supervisor.which_children(child.pid)
        assert boom.pid is not None
        boom.pid.cast("crash")
        reason = await child.pid.wait_exit()
    assert str(reason) == (
        "supervisor 'top/inner': more than 0 restarts within 5 s (max_restarts=0, "
        "max_seconds=5); last exit: child 'boom' with RuntimeError('boom')"
    )
