"""A real ``Supervisor`` driven by random crash sequences, checked against a reference model.

``SupervisorModel`` below is the spec: OTP's rules for strategies, restart types and restart
intensity, written out as plain Python with no event loop and nothing imported from
``corral.runtime.restart``. Hypothesis generates a supervisor (strategy, 1-5 children with
random restart types, ``max_restarts``, ``max_seconds``) and a sequence of steps (advance the
virtual clock, then make one child exit with ``crash``, ``normal`` or ``shutdown``). After each
step the test compares, exactly, the children's start/stop log, which children run (and under
which pid), their restart counts, the live processes and whether the supervisor is alive.

A few example-based tests below pin the trickiest cases by name.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corral.testing
from corral import (
    Actor,
    ChildInfo,
    ChildSpec,
    ExitReason,
    Node,
    Pid,
    RestartIntensityExceeded,
    Supervisor,
)

StrategyName = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartName = Literal["permanent", "transient", "temporary"]
ExitKind = Literal["crash", "normal", "shutdown"]

# Written out here rather than imported: the model must not borrow corral's own policy.
STRATEGY_NAMES: tuple[StrategyName, ...] = ("one_for_one", "one_for_all", "rest_for_one")
RESTART_NAMES: tuple[RestartName, ...] = ("permanent", "transient", "temporary")
EXIT_KINDS: tuple[ExitKind, ...] = ("crash", "normal", "shutdown")

# Durations are sums of binary fractions, so the virtual clock adds them up exactly and
# "a restart exactly max_seconds old" happens often and is exact.
MAX_SECONDS = (0.5, 1.0, 2.0, 5.0)
TIME_STEPS = (0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 5.0)

# One entry of the children's shared log: ("start", id) from init, ("stop", id, why) from
# terminate, where why is "normal", "shutdown" or "crash".
Event = tuple[str, ...]


# -- the reference model -------------------------------------------------------------------


@dataclass
class ModelChild:
    id: str
    restart: RestartName
    running: bool = True
    starts: int = 1


@dataclass
class SupervisorModel:
    """What an OTP supervisor does, as a pure state machine (no event loop).

    Rules:

    - A child that exits is restarted by its type: ``permanent`` always, ``transient`` only
      when the reason is not clean (clean: ``normal`` or ``shutdown``), ``temporary`` never;
      a temporary child that exits is forgotten.
    - Every exit that needs a restart counts one restart at the current time. If then more
      than ``max_restarts`` restarts are younger than ``max_seconds`` (one exactly
      ``max_seconds`` old no longer counts), the supervisor stops every running child in
      reverse start order and exits with ``RestartIntensityExceeded``; nothing is restarted.
    - Otherwise the strategy picks the affected children: the failed one (``one_for_one``),
      all (``one_for_all``), or the failed one and those after it (``rest_for_one``). The
      running ones among the others are stopped with ``shutdown`` in reverse start order,
      temporary ones are forgotten, and the rest are started in start order, the failed one
      included, whether they were running or not.
    - Stopping the supervisor stops the running children in reverse start order.
    """

    strategy: StrategyName
    max_restarts: int
    max_seconds: float
    children: list[ModelChild]
    now: float = 0.0
    alive: bool = True
    log: list[Event] = field(default_factory=list)
    restart_times: list[float] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        strategy: StrategyName,
        restarts: Sequence[RestartName],
        max_restarts: int,
        max_seconds: float,
    ) -> SupervisorModel:
        children = [ModelChild(child_id(i), restart) for i, restart in enumerate(restarts)]
        model = cls(strategy, max_restarts, max_seconds, children)
        model.log.extend(("start", child.id) for child in children)
        return model

    def find(self, child_id: str) -> ModelChild | None:
        return next((c for c in self.children if c.id == child_id), None)

    def is_running(self, child_id: str) -> bool:
        child = self.find(child_id)
        return self.alive and child is not None and child.running

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def child_exited(self, child_id: str, kind: ExitKind) -> None:
        child = self.find(child_id)
        assert self.alive and child is not None and child.running, "model misuse"
        child.running = False
        self.log.append(("stop", child_id, kind))
        clean = kind in ("normal", "shutdown")
        if child.restart == "temporary":
            self.children.remove(child)
            return
        if child.restart == "transient" and clean:
            return
        self.restart_times.append(self.now)
        recent = [t for t in self.restart_times if self.now - t < self.max_seconds]
        if len(recent) > self.max_restarts:
            self.stop()
            return
        self._restart(child)

    def _restart(self, failed: ModelChild) -> None:
        index = self.children.index(failed)
        if self.strategy == "one_for_one":
            affected = [failed]
        elif self.strategy == "one_for_all":
            affected = list(self.children)
        else:
            affected = self.children[index:]
        for child in reversed(affected):
            if child is not failed and child.running:
                child.running = False
                self.log.append(("stop", child.id, "shutdown"))
        for child in affected:
            if child is not failed and child.restart == "temporary":
                self.children.remove(child)
                continue
            child.running = True
            child.starts += 1
            self.log.append(("start", child.id))

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.running:
                child.running = False
                self.log.append(("stop", child.id, "shutdown"))
        self.alive = False


def child_id(index: int) -> str:
    return f"c{index}"


# -- the real thing: children that log and exit on command ---------------------------------


class ChildCrash(Exception):
    """What a child raises when told to crash."""


class LoggingChild(Actor):
    """Logs ("start", id) in init and ("stop", id, why) in terminate; exits on command.

    The cast ``("exit", "crash")`` makes it raise ``ChildCrash``; ``("exit", reason)`` makes
    it stop with ``reason``.
    """

    def __init__(self, child_id: str, log: list[Event]) -> None:
        self.child_id = child_id
        self.log = log

    def init(self) -> None:
        self.log.append(("start", self.child_id))

    def handle_cast(self, msg: object) -> None:
        match msg:
            case ("exit", "crash"):
                raise ChildCrash(f"child {self.child_id} told to crash")
            case ("exit", str(reason)):
                self.stop(reason)
            case _:
                raise AssertionError(f"unexpected cast {msg!r}")

    def terminate(self, reason: ExitReason) -> None:
        self.log.append(("stop", self.child_id, describe(reason)))


def describe(reason: ExitReason) -> str:
    if isinstance(reason, ChildCrash):
        return "crash"
    if isinstance(reason, str):
        return reason
    return repr(reason)


@dataclass
class Harness:
    """A supervisor of ``LoggingChild`` processes on a running node, and their shared log."""

    node: Node
    sup: Pid
    log: list[Event]

    @classmethod
    async def start(
        cls,
        node: Node,
        restarts: Sequence[RestartName],
        *,
        strategy: StrategyName,
        max_restarts: int,
        max_seconds: float,
    ) -> Harness:
        log: list[Event] = []
        specs = [
            ChildSpec(
                id=child_id(i),
                start=functools.partial(LoggingChild, child_id(i), log),
                restart=restart,
            )
            for i, restart in enumerate(restarts)
        ]
        sup = await node.spawn(
            Supervisor(specs, strategy=strategy, max_restarts=max_restarts, max_seconds=max_seconds)
        )
        return cls(node, sup, log)

    async def children(self) -> list[ChildInfo]:
        return await Supervisor.which_children(self.sup)

    async def pids(self) -> dict[str, Pid | None]:
        return {info.id: info.pid for info in await self.children()}

    async def make_exit(self, child: str, kind: ExitKind) -> Pid:
        """Tell ``child`` to exit, and wait until the supervisor has dealt with it."""
        pid = (await self.pids())[child]
        assert pid is not None, f"child {child} is not running"
        pid.cast(("exit", kind))
        await corral.testing.wait_all_tasks_blocked()
        return pid


@pytest.fixture(autouse=True, scope="module")
def _quiet_crash_reports() -> Iterator[None]:
    # Every crash is logged at ERROR with its traceback; hundreds of them would flood the output.
    corral_logger = logging.getLogger("corral")
    level = corral_logger.level
    corral_logger.setLevel(logging.CRITICAL)
    yield
    corral_logger.setLevel(level)


# -- the property --------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    child: int
    kind: ExitKind
    advance: float


@dataclass(frozen=True)
class Scenario:
    strategy: StrategyName
    restarts: tuple[RestartName, ...]
    max_restarts: int
    max_seconds: float
    steps: tuple[Step, ...]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    restarts = draw(st.lists(st.sampled_from(RESTART_NAMES), min_size=1, max_size=5))
    step = st.builds(
        Step,
        child=st.integers(0, len(restarts) - 1),
        kind=st.sampled_from(EXIT_KINDS),
        advance=st.sampled_from(TIME_STEPS),
    )
    return Scenario(
        strategy=draw(st.sampled_from(STRATEGY_NAMES)),
        restarts=tuple(restarts),
        max_restarts=draw(st.integers(0, 4)),
        max_seconds=draw(st.sampled_from(MAX_SECONDS)),
        steps=tuple(draw(st.lists(step, min_size=1, max_size=15))),
    )


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(scenarios())
def test_supervisor_follows_the_reference_model_for_any_crash_sequence(
    scenario: Scenario,
) -> None:
    corral.testing.run(check_scenario(scenario))


async def check_scenario(scenario: Scenario) -> None:
    loop = asyncio.get_running_loop()
    model = SupervisorModel.start(
        scenario.strategy, scenario.restarts, scenario.max_restarts, scenario.max_seconds
    )
    async with Node() as node:
        harness = await Harness.start(
            node,
            scenario.restarts,
            strategy=scenario.strategy,
            max_restarts=scenario.max_restarts,
            max_seconds=scenario.max_seconds,
        )
        starts = {child.id: child.starts for child in model.children}
        pids = await check_matches(harness, model, previous={}, starts=starts)
        for step in scenario.steps:
            target = child_id(step.child)
            if not model.is_running(target):
                continue
            if step.advance:
                await asyncio.sleep(step.advance)
                model.advance(step.advance)
            assert loop.time() == model.now
            exited = await harness.make_exit(target, step.kind)
            model.child_exited(target, step.kind)
            assert describe_exit(exited.exit_reason) == step.kind
            if not model.alive:
                check_gave_up(harness, model, target, step.kind)
                break
            pids = await check_matches(harness, model, previous=pids, starts=starts)
        if model.alive:
            # Stopped from outside, the supervisor stops what still runs in reverse order.
            # (Done here rather than by leaving the node, which signals every process it
            # did not start under its root supervisor at once, children included.)
            harness.sup.exit("shutdown")
            assert await harness.sup.wait_exit() == "shutdown"
            model.stop()
            assert harness.log == model.log
            assert set(node.processes()) == {node.root}


async def check_matches(
    harness: Harness,
    model: SupervisorModel,
    *,
    previous: dict[str, Pid | None],
    starts: dict[str, int],
) -> dict[str, Pid | None]:
    """Compare the real supervisor with the model; return the pids for the next step.

    ``starts`` holds each child's start count as of the last check, updated in place: a child
    started since then must have a new pid, any other must keep its pid.
    """
    assert harness.log == model.log
    assert harness.sup.alive
    infos = await harness.children()
    assert [(i.id, i.restart, i.pid is not None, i.restart_count) for i in infos] == [
        (c.id, c.restart, c.running, c.starts - 1) for c in model.children
    ]
    pids: dict[str, Pid | None] = {}
    for info, child in zip(infos, model.children, strict=True):
        pids[info.id] = info.pid
        if info.pid is None:
            continue
        assert info.pid.alive
        if child.starts != starts.get(child.id, child.starts):
            assert info.pid is not previous.get(child.id), f"{child.id} kept its old pid"
        elif child.id in previous:
            assert info.pid is previous[child.id], f"{child.id} changed pid without a restart"
        starts[child.id] = child.starts
    # Nothing else is left running: no sibling that should have been stopped lingers.
    running = {info.pid for info in infos if info.pid is not None}
    assert set(harness.node.processes()) == {harness.node.root, harness.sup, *running}
    return pids


def check_gave_up(harness: Harness, model: SupervisorModel, child: str, kind: ExitKind) -> None:
    assert harness.log == model.log
    assert not harness.sup.alive
    error = harness.sup.exit_reason
    assert isinstance(error, RestartIntensityExceeded)
    assert (error.max_restarts, error.max_seconds) == (model.max_restarts, model.max_seconds)
    assert (error.child_id, describe_exit(error.reason)) == (child, kind)
    assert set(harness.node.processes()) == {harness.node.root}


def describe_exit(reason: ExitReason | None) -> str:
    assert reason is not None, "the process is still alive"
    return describe(reason)


# -- the trickiest cases, by name -----------------------------------------------------------


async def test_one_for_all_restarts_siblings_in_start_order_after_stopping_them_in_reverse() -> (
    None
):
    async with Node() as node:
        h = await Harness.start(
            node,
            ["permanent", "transient", "permanent", "temporary"],
            strategy="one_for_all",
            max_restarts=3,
            max_seconds=5.0,
        )
        before = await h.pids()
        h.log.clear()

        await h.make_exit("c2", "crash")

        assert h.log == [
            ("stop", "c2", "crash"),
            ("stop", "c3", "shutdown"),
            ("stop", "c1", "shutdown"),
            ("stop", "c0", "shutdown"),
            ("start", "c0"),
            ("start", "c1"),
            ("start", "c2"),
        ]
        after = await h.children()
        assert [(i.id, i.restart_count) for i in after] == [("c0", 1), ("c1", 1), ("c2", 1)]
        assert all(i.pid is not None and i.pid is not before[i.id] for i in after)
        assert [before[i].exit_reason for i in ("c0", "c1", "c3")] == ["shutdown"] * 3


async def test_one_for_all_starts_again_a_transient_sibling_that_had_exited_normally() -> None:
    async with Node() as node:
        h = await Harness.start(
            node,
            ["transient", "permanent"],
            strategy="one_for_all",
            max_restarts=3,
            max_seconds=5.0,
        )
        await h.make_exit("c0", "normal")
        assert (await h.pids())["c0"] is None
        h.log.clear()

        await h.make_exit("c1", "crash")

        # c0 is not running, so it is not stopped; it is in the affected set, so it starts.
        assert h.log == [("stop", "c1", "crash"), ("start", "c0"), ("start", "c1")]
        assert all(pid is not None for pid in (await h.pids()).values())


async def test_temporary_sibling_is_removed_not_restarted_under_rest_for_one() -> None:
    async with Node() as node:
        h = await Harness.start(
            node,
            ["permanent", "permanent", "temporary", "transient"],
            strategy="rest_for_one",
            max_restarts=3,
            max_seconds=5.0,
        )
        before = await h.pids()
        h.log.clear()

        await h.make_exit("c1", "crash")

        assert h.log == [
            ("stop", "c1", "crash"),
            ("stop", "c3", "shutdown"),
            ("stop", "c2", "shutdown"),
            ("start", "c1"),
            ("start", "c3"),
        ]
        after = await h.pids()
        assert list(after) == ["c0", "c1", "c3"]
        assert after["c0"] is before["c0"]
        assert before["c2"] is not None and not before["c2"].alive


async def test_intensity_exceeded_stops_children_in_reverse_and_exits_with_restart_intensity_exceeded() -> (  # noqa: E501
    None
):
    async with Node() as node:
        h = await Harness.start(
            node,
            ["permanent", "permanent", "permanent"],
            strategy="one_for_one",
            max_restarts=1,
            max_seconds=2.0,
        )
        await h.make_exit("c1", "crash")  # t=0: one restart in the window, allowed
        await asyncio.sleep(2.0)
        await h.make_exit("c1", "crash")  # t=2: the restart at t=0 is exactly 2 s old, gone
        h.log.clear()
        await asyncio.sleep(1.5)

        await h.make_exit("c1", "crash")  # t=3.5: restarts at 2 and 3.5, more than 1 in 2 s

        assert h.log == [
            ("stop", "c1", "crash"),
            ("stop", "c2", "shutdown"),
            ("stop", "c0", "shutdown"),
        ]
        error = h.sup.exit_reason
        assert isinstance(error, RestartIntensityExceeded)
        assert str(error) == (
            f"supervisor {h.sup!r}: more than 1 restarts within 2 s (max_restarts=1, "
            "max_seconds=2); last exit: child 'c1' with "
            "ChildCrash('child c1 told to crash')"
        )
        assert node.processes() == [node.root]
