"""Supervisors: strategies, restart types, intensity, nesting, dynamic children, reports."""

from __future__ import annotations

import asyncio
import logging

import pytest
from runtime_helpers import Recorder

from corral import (
    Actor,
    ChildAlreadyPresent,
    ChildAlreadyStarted,
    ChildInfo,
    ChildRunning,
    ChildSpec,
    CrashReport,
    Node,
    Pid,
    RestartIntensityExceeded,
    RestartWindow,
    StartError,
    Supervisor,
    UnknownChild,
    telemetry,
)
from corral.runtime.restart import RestartType, Strategy
from corral.testing import wait_all_tasks_blocked

Log = list[tuple[str, str]]


def spec(tag: str, log: Log, restart: RestartType = "permanent", **kw: object) -> ChildSpec:
    return ChildSpec(id=tag, start=lambda: Recorder(tag, log), restart=restart, name=tag, **kw)  # type: ignore[arg-type]


async def start_sup(
    node: Node, specs: list[ChildSpec], strategy: Strategy = "one_for_one", **kw: object
) -> Pid:
    return await node.spawn(Supervisor(specs, strategy=strategy, **kw))  # type: ignore[arg-type]


async def crash(node: Node, tag: str) -> Pid:
    pid = node.lookup(tag)
    pid.cast(("crash", f"{tag} failed"))
    await pid.wait_exit()
    return pid


async def test_children_start_in_order_and_stop_in_reverse_order() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("a", log), spec("b", log), spec("c", log)])
        sup.exit("shutdown")
        assert await sup.wait_exit() == "shutdown"
    assert log == [
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("stop", "c"),
        ("stop", "b"),
        ("stop", "a"),
    ]


async def test_one_for_one_restarts_only_the_child_that_crashed() -> None:
    log: Log = []
    async with Node() as node:
        await start_sup(node, [spec("a", log), spec("b", log)])
        b = node.lookup("b")
        old_a = await crash(node, "a")
        await wait_all_tasks_blocked()
        assert node.lookup("a") is not old_a
        assert node.lookup("b") is b
        assert log[2:] == [("stop", "a"), ("start", "a")]


async def test_one_for_all_stops_siblings_in_reverse_then_starts_all_in_order() -> None:
    log: Log = []
    async with Node() as node:
        await start_sup(node, [spec("a", log), spec("b", log), spec("c", log)], "one_for_all")
        log.clear()
        await crash(node, "b")
        await wait_all_tasks_blocked()
        assert log == [
            ("stop", "b"),
            ("stop", "c"),
            ("stop", "a"),
            ("start", "a"),
            ("start", "b"),
            ("start", "c"),
        ]


async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it() -> None:
    log: Log = []
    async with Node() as node:
        await start_sup(node, [spec("a", log), spec("b", log), spec("c", log)], "rest_for_one")
        a = node.lookup("a")
        log.clear()
        await crash(node, "b")
        await wait_all_tasks_blocked()
        assert log == [("stop", "b"), ("stop", "c"), ("start", "b"), ("start", "c")]
        assert node.lookup("a") is a


async def test_a_transient_child_is_restarted_after_a_crash_but_not_after_a_normal_exit() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("t", log, "transient")])
        await crash(node, "t")
        await wait_all_tasks_blocked()
        t = node.lookup("t")
        await t.call(("stop", "normal"))
        await t.wait_exit()
        await wait_all_tasks_blocked()
        assert node.whereis("t") is None
        [info] = await Supervisor.which_children(sup)
        assert info == ChildInfo("t", None, "worker", "transient", 1)


async def test_a_temporary_child_is_never_restarted_and_is_forgotten() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("tmp", log, "temporary"), spec("p", log)])
        await crash(node, "tmp")
        await wait_all_tasks_blocked()
        assert node.whereis("tmp") is None
        assert [c.id for c in await Supervisor.which_children(sup)] == ["p"]


async def test_more_than_three_restarts_in_five_seconds_make_the_supervisor_give_up() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("a", log), spec("b", log)])
        for _ in range(3):
            await crash(node, "a")
            await wait_all_tasks_blocked()
            await asyncio.sleep(1.0)
        assert sup.alive
        log.clear()
        await crash(node, "a")
        reason = await sup.wait_exit()
        assert isinstance(reason, RestartIntensityExceeded)
        assert (reason.max_restarts, reason.max_seconds, reason.child_id) == (3, 5.0, "a")
        assert str(reason).startswith(
            f"supervisor {sup}: more than 3 restarts within 5 s (max_restarts=3, max_seconds=5); "
            "last exit: child 'a' with RuntimeError('a failed')"
        )
        assert log == [("stop", "a"), ("stop", "b")]


async def test_restarts_older_than_max_seconds_no_longer_count() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("a", log)], max_restarts=2, max_seconds=10.0)
        for _ in range(6):
            await crash(node, "a")
            await wait_all_tasks_blocked()
            await asyncio.sleep(5.0)
        assert sup.alive
        [info] = await Supervisor.which_children(sup)
        assert info.restart_count == 6


async def test_restart_window_counts_restarts_within_max_seconds_of_now() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("a", log)], max_restarts=3, max_seconds=10.0)
        assert await Supervisor.restart_window(sup) == RestartWindow(0, 3, 10.0)
        await crash(node, "a")  # t = 0
        await wait_all_tasks_blocked()
        await asyncio.sleep(4.0)
        await crash(node, "a")  # t = 4
        await wait_all_tasks_blocked()
        assert await Supervisor.restart_window(sup) == RestartWindow(2, 3, 10.0)
        await asyncio.sleep(6.0)  # t = 10: the restart at t = 0 is exactly 10 s old
        assert await Supervisor.restart_window(sup) == RestartWindow(1, 3, 10.0)
        await asyncio.sleep(4.0)  # t = 14: none within the last 10 s
        assert node.clock.now() == 14.0
        assert await Supervisor.restart_window(sup) == RestartWindow(0, 3, 10.0)


async def test_a_nested_supervisor_that_gives_up_is_restarted_by_its_parent() -> None:
    log: Log = []
    inner = ChildSpec(
        id="inner",
        start=lambda: Supervisor([spec("w", log)], max_restarts=0),
        type="supervisor",
    )
    async with Node() as node:
        outer = await start_sup(node, [inner, spec("sibling", log)])
        sibling = node.lookup("sibling")
        [inner_info, _] = await Supervisor.which_children(outer)
        await crash(node, "w")
        assert isinstance(await inner_info.pid.wait_exit(), RestartIntensityExceeded)  # type: ignore[union-attr]
        await wait_all_tasks_blocked()
        [new_inner, _] = await Supervisor.which_children(outer)
        assert new_inner.pid is not None and new_inner.pid is not inner_info.pid
        assert new_inner.restart_count == 1
        assert node.lookup("w").alive
        assert node.lookup("sibling") is sibling


async def test_a_child_that_fails_to_restart_counts_against_intensity() -> None:
    attempts = 0
    log: Log = []

    def flaky() -> Recorder:
        nonlocal attempts
        attempts += 1
        if attempts > 1:
            return _BrokenRecorder("f", log)
        return Recorder("f", log)

    async with Node() as node:
        sup = await start_sup(node, [ChildSpec(id="f", start=flaky, name="f")], max_restarts=2)
        await crash(node, "f")
        reason = await sup.wait_exit()
        assert isinstance(reason, RestartIntensityExceeded)
        assert attempts == 3  # the first start, then two failed restarts


class _BrokenRecorder(Recorder):
    def init(self) -> None:
        raise ConnectionError("model server unreachable")


async def test_a_supervisor_whose_child_fails_to_start_fails_to_start() -> None:
    log: Log = []
    broken = ChildSpec(id="broken", start=lambda: _BrokenRecorder("x", log))
    async with Node() as node:
        with pytest.raises(StartError) as info:
            await start_sup(node, [spec("a", log), broken, spec("c", log)])
        assert isinstance(info.value.reason, StartError)
        assert log == [("start", "a"), ("stop", "a")]


async def test_dynamic_children_can_be_started_terminated_restarted_and_deleted() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("a", log)])
        b = await Supervisor.start_child(sup, spec("b", log))
        assert node.lookup("b") is b
        with pytest.raises(ValueError, match="a child with id 'b' already exists"):
            await Supervisor.start_child(sup, spec("b", log))
        await Supervisor.terminate_child(sup, "b")
        assert not b.alive
        assert [(c.id, c.pid is not None) for c in await Supervisor.which_children(sup)] == [
            ("a", True),
            ("b", False),
        ]
        assert await Supervisor.count_children(sup) == {
            "specs": 2,
            "active": 1,
            "supervisors": 0,
            "workers": 2,
        }
        with pytest.raises(ValueError, match="child 'a' is running; terminate it first"):
            await Supervisor.delete_child(sup, "a")
        b2 = await Supervisor.restart_child(sup, "b")
        assert b2.alive and b2 is not b
        await Supervisor.terminate_child(sup, "b")
        await Supervisor.delete_child(sup, "b")
        with pytest.raises(UnknownChild) as info:
            await Supervisor.terminate_child(sup, "b")
        assert str(info.value) == f"supervisor {sup}: no child with id 'b'"
        assert sup.alive


async def test_an_existing_id_is_refused_as_data_running_started_or_stopped_present() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("a", log)])
        a = node.lookup("a")
        with pytest.raises(ChildAlreadyStarted) as started:
            await Supervisor.start_child(sup, spec("a", log))
        assert (started.value.child_id, started.value.pid) == ("a", a)
        assert started.value.supervisor == repr(sup)
        assert str(started.value) == (
            f"supervisor {sup}: a child with id 'a' already exists; it is running as {a}"
        )
        with pytest.raises(ChildRunning) as running:
            await Supervisor.restart_child(sup, "a")
        assert (running.value.child_id, running.value.pid) == ("a", a)
        assert str(running.value) == f"supervisor {sup}: child 'a' is running"
        with pytest.raises(ChildRunning) as running:
            await Supervisor.delete_child(sup, "a")
        assert str(running.value) == (f"supervisor {sup}: child 'a' is running; terminate it first")
        await Supervisor.terminate_child(sup, "a")
        with pytest.raises(ChildAlreadyPresent) as present:
            await Supervisor.start_child(sup, spec("a", log))
        assert present.value.child_id == "a"
        assert str(present.value) == (
            f"supervisor {sup}: a child with id 'a' already exists, stopped; "
            "restart_child starts it, delete_child removes it"
        )
        assert [c.id for c in await Supervisor.which_children(sup)] == ["a"]


async def test_start_child_raises_start_error_and_does_not_add_the_child() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [])
        with pytest.raises(StartError):
            await Supervisor.start_child(
                sup, ChildSpec(id="x", start=lambda: _BrokenRecorder("x", log))
            )
        assert await Supervisor.which_children(sup) == []


async def test_a_child_that_ignores_shutdown_is_killed_after_its_shutdown_timeout() -> None:
    class Stubborn(Recorder):
        async def terminate(self, reason: object) -> None:  # type: ignore[override]
            await asyncio.sleep(3600)

    log: Log = []
    async with Node() as node:
        sup = await start_sup(
            node, [ChildSpec(id="s", start=lambda: Stubborn("s", log), shutdown=2.5, name="s")]
        )
        s = node.lookup("s")
        loop = asyncio.get_running_loop()
        start = loop.time()
        await Supervisor.terminate_child(sup, "s")
        assert loop.time() - start == 2.5
        assert s.exit_reason == "killed"


async def test_brutal_kill_skips_terminate() -> None:
    log: Log = []
    async with Node() as node:
        sup = await start_sup(node, [spec("a", log, shutdown="brutal_kill")])
        await Supervisor.terminate_child(sup, "a")
        assert log == [("start", "a")]


async def test_every_child_exit_is_reported_to_logging_and_telemetry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reports: list[CrashReport] = []
    telemetry.attach(
        "test-reports",
        ("corral", "supervisor", "child_exited"),
        lambda event, measurements, metadata, config: reports.append(metadata["report"]),  # type: ignore[arg-type]
    )
    log: Log = []
    try:
        with caplog.at_level(logging.ERROR, logger="corral"):
            async with Node() as node:
                sup = await start_sup(node, [spec("a", log)])
                old = await crash(node, "a")
                await wait_all_tasks_blocked()
                await crash(node, "a")
                await wait_all_tasks_blocked()
    finally:
        telemetry.detach("test-reports")
    first, second = reports
    assert (first.supervisor, first.child_id, first.pid, first.restart_count, first.action) == (
        sup,
        "a",
        old,
        0,
        "restart",
    )
    assert second.restart_count == 1
    assert isinstance(first.reason, RuntimeError)
    assert first.traceback is not None and "RuntimeError: a failed" in first.traceback
    records = [r for r in caplog.records if r.name == "corral.supervisor"]
    assert [r.getMessage() for r in records] == [
        f"supervisor {sup}: child 'a' {old} exited with RuntimeError('a failed'); "
        "restarting (restart 1)",
        f"supervisor {sup}: child 'a' {second.pid} exited with RuntimeError('a failed'); "
        "restarting (restart 2)",
    ]
    assert records[0].exc_info is not None
    # A supervised child's crash is reported once, by its supervisor.
    assert not [r for r in caplog.records if r.name == "corral.process"]


async def test_an_unsupervised_crash_is_logged_by_the_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="corral"):
        async with Node() as node:
            pid = await node.spawn(Recorder("lone", []))
            pid.cast(("crash", "lone failed"))
            await pid.wait_exit()
    [record] = caplog.records
    assert record.name == "corral.process"
    assert record.getMessage() == f"process {pid} crashed with RuntimeError('lone failed')"
    assert record.exc_info is not None


def test_supervisor_options_are_validated_with_the_option_name_and_rule() -> None:
    with pytest.raises(ValueError) as info:
        Supervisor([], max_restarts=-1)
    assert (
        str(info.value)
        == "invalid options for supervisor: max_restarts must be an int >= 0; got -1"
    )
    with pytest.raises(
        ValueError,
        match="strategy must be one of 'one_for_one', 'one_for_all', 'rest_for_one'; "
        "got 'one_for_some'",
    ):
        Supervisor([], strategy="one_for_some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_seconds must be a number > 0; got 0"):
        Supervisor([], max_seconds=0)
    with pytest.raises(ValueError, match="child ids must be unique; got 'a' twice"):
        Supervisor([spec("a", []), spec("a", [])])


def test_child_specs_are_validated_and_unknown_keys_are_listed() -> None:
    with pytest.raises(ValueError) as info:
        ChildSpec.from_mapping(
            {"id": "a", "start": Recorder, "restrat": "permanent"}, path="children.a."
        )
    assert str(info.value) == (
        "invalid options for child spec: unknown option 'children.a.restrat'; "
        "valid options: id, start, restart, shutdown, type, name"
    )
    with pytest.raises(
        ValueError,
        match="restart must be one of 'permanent', 'transient', 'temporary'; got 'always'",
    ):
        ChildSpec(id="a", start=Recorder, restart="always")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match="shutdown must be a number >= 0, 'brutal_kill', 'infinity' or None; got -1",
    ):
        ChildSpec(id="a", start=Recorder, shutdown=-1)
    with pytest.raises(ValueError, match="id must be a non-empty str; got ''"):
        ChildSpec(id="", start=Recorder)
    assert ChildSpec(id="s", start=Supervisor, type="supervisor").shutdown_timeout == "infinity"
    assert ChildSpec(id="w", start=Recorder).shutdown_timeout == 5.0


async def test_a_nested_start_failure_reads_as_a_chain_not_nested_reprs() -> None:
    broken = ChildSpec(id="broken", start=lambda: _BrokenRecorder("x", []))
    async with Node() as node:
        with pytest.raises(StartError) as info:
            await start_sup(node, [broken])
    text = str(info.value)
    assert text.startswith("start process <")
    assert ": init failed because start process <" in text
    assert text.endswith(": init failed with ConnectionError('model server unreachable')")
    assert "\\\\" not in text


class Meeting(Actor):
    """Its init returns only once every party's init has begun (or fails after 10 s)."""

    def __init__(self, tag: str, arrived: list[str], parties: int, fail: bool = False) -> None:
        self.tag, self.arrived, self.parties, self.fail = tag, arrived, parties, fail

    async def init(self) -> None:
        self.arrived.append(self.tag)
        if self.fail:
            raise RuntimeError(f"{self.tag} cannot start")
        async with asyncio.timeout(10.0):
            await wait_all_tasks_blocked()  # the others' inits have run as far as they can
            if len(self.arrived) < self.parties:
                await asyncio.Event().wait()  # never set: only the timeout ends it


async def test_start_concurrently_runs_every_childs_init_at_once() -> None:
    arrived: list[str] = []
    specs = [ChildSpec(id=t, start=lambda t=t: Meeting(t, arrived, 3)) for t in "abc"]
    async with Node() as node:
        sup = await node.spawn(Supervisor(specs, start_concurrently=True))
        children = await Supervisor.which_children(sup)
        assert [c.id for c in children] == ["a", "b", "c"]
        assert all(c.pid is not None and c.pid.alive for c in children)
        assert asyncio.get_running_loop().time() < 0.01
    # One after another, the first child's init waits for the others and times out.
    arrived.clear()
    async with Node() as node:
        with pytest.raises(StartError, match="init failed with TimeoutError"):
            await node.spawn(Supervisor(specs))


async def test_a_child_failing_a_concurrent_start_stops_the_others_and_fails_the_start() -> None:
    arrived: list[str] = []
    log: Log = []
    specs = [
        spec("a", log),
        ChildSpec(id="b", start=lambda: Meeting("b", arrived, 1, fail=True)),
        spec("c", log),
    ]
    async with Node() as node:
        with pytest.raises(StartError, match="b cannot start"):
            await node.spawn(Supervisor(specs, start_concurrently=True))
    assert sorted(log) == [("start", "a"), ("start", "c"), ("stop", "a"), ("stop", "c")]


def test_a_misspelt_supervisor_or_node_option_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError) as info:
        Supervisor([], max_restart=3)
    assert str(info.value) == (
        "invalid options for supervisor: unknown option 'max_restart'; valid options: "
        "strategy, max_restarts, max_seconds, start_concurrently"
    )
    with pytest.raises(ValueError) as info:
        Node([], name="n", shutdown_timout=1.0)
    assert str(info.value) == (
        "invalid options for node 'n': unknown option 'shutdown_timout'; valid options: "
        "strategy, max_restarts, max_seconds, start_concurrently, shutdown_timeout, handle_signals"
    )
    with pytest.raises(ValueError, match=r"^invalid options for node .n.: shutdown_timeout must"):
        Node([], name="n", shutdown_timeout=-1)
