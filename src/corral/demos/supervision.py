"""``corral supervision``: a small supervision tree that survives crashes, narrated as it runs.

The tree::

    root (one_for_one)
    ├── stats        counts what happened
    └── scoring      (rest_for_one, max_restarts=2 within 5 ticks)
        ├── model    scores events; a "poison" event crashes it
        └── feeder   sends numbered events to the model, and sends an event again when
                     the model died before answering it (at-least-once)

Crashes are injected: every few events is poison, and near the end a burst of poison
makes ``scoring`` exceed its restart intensity, so it gives up and ``root`` restarts the
whole subtree. Every event is still scored exactly once by a model that answered: none is
lost. The narration comes from telemetry (``corral.supervisor.child_exited``), the same hook
a metrics exporter would use.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from corral import telemetry
from corral.errors import (
    NoProcess,
    ProcessExited,
    RestartIntensityExceeded,
    describe_reason,
)
from corral.runtime import (
    Actor,
    ChildInfo,
    ChildSpec,
    CrashReport,
    Node,
    Pid,
    Supervisor,
)

__all__ = ["DemoResult", "run_demo"]


class PoisonEvent(Exception):
    """The model cannot score this event; the process crashes, as designed."""


@dataclass
class DemoResult:
    """What the demo counted."""

    events: int
    scored: dict[int, float] = field(default_factory=dict)
    retried: int = 0
    crashes: int = 0
    restarts: int = 0
    gave_up: int = 0

    @property
    def lost(self) -> int:
        return self.events - len(self.scored)


class Model(Actor):
    """Scores an event; raises ``PoisonEvent`` on poison, which ends the process."""

    def handle_call(self, msg: object) -> object:
        match msg:
            case ("score", int(number), bool(poison)):
                if poison:
                    raise PoisonEvent(f"cannot score event #{number}")
                return round((number * 37 % 101) / 100, 2)
        raise TypeError(f"Model.handle_call: unknown request {msg!r}")


class Feeder(Actor):
    """Sends every event to the model by name, once per tick, retrying after a crash."""

    def __init__(self, plan: _Plan, result: DemoResult, out: _Out) -> None:
        self.plan = plan
        self.result = result
        self.out = out

    def init(self) -> None:
        self.send_after(self.plan.tick, "tick")

    async def handle_info(self, msg: object) -> None:
        if msg != "tick":
            return
        number = self.plan.next_event
        if number >= self.result.events:
            self.plan.done.set()
            return
        poison = number in self.plan.poison and number not in self.plan.poisoned
        try:
            model = self.node.lookup("model")
            score = await model.call(("score", number, poison), timeout=1.0)
        except (ProcessExited, NoProcess):
            # The model died (or is being restarted): this event goes out again.
            self.plan.poisoned.add(number)
            self.result.retried += 1
            self.send_after(self.plan.tick, "tick")
            return
        assert isinstance(score, float)
        self.result.scored[number] = score
        self.plan.next_event += 1
        if number % self.plan.report_every == 0:
            self.out(f"event #{number:>3} scored {score:.2f}")
        self.send_after(self.plan.tick, "tick")


class Stats(Actor):
    """A sibling that must not notice anything when the scoring subtree crashes."""

    def handle_call(self, msg: object) -> object:
        return "ok"


@dataclass
class _Plan:
    poison: set[int]
    tick: float
    report_every: int
    next_event: int = 0
    poisoned: set[int] = field(default_factory=set)
    done: asyncio.Event = field(default_factory=asyncio.Event)


_Out = Callable[[str], None]


def _scoring_tree(plan: _Plan, result: DemoResult, out: _Out) -> Supervisor:
    return Supervisor(
        [
            ChildSpec(id="model", start=Model, name="model"),
            ChildSpec(id="feeder", start=lambda: Feeder(plan, result, out), name="feeder"),
        ],
        strategy="rest_for_one",
        max_restarts=2,
        # Wide enough to catch the burst of poison, narrow enough to forgive the others.
        max_seconds=max(5 * plan.tick, 0.25),
    )


async def _draw_tree(sup: Pid, out: _Out, prefix: str = "") -> None:
    children: list[ChildInfo] = await Supervisor.which_children(sup)
    for index, child in enumerate(children):
        last = index == len(children) - 1
        branch = "└── " if last else "├── "
        state = f"{child.pid}" if child.pid is not None else "(not running)"
        out(f"{prefix}{branch}{child.id:<8} {state}  restarts: {child.restart_count}")
        if child.type == "supervisor" and child.pid is not None:
            await _draw_tree(child.pid, out, prefix + ("    " if last else "│   "))


async def run_demo(
    *, events: int = 60, tick: float = 0.02, stream: TextIO | None = None
) -> DemoResult:
    """Run the demo on the running event loop and return what it counted.

    ``events`` events are fed one per ``tick`` seconds; the output goes to ``stream``
    (stdout by default). Takes about ``events * tick`` seconds plus restarts.
    """
    stream = stream or sys.stdout
    loop = asyncio.get_running_loop()
    start = loop.time()

    def out(line: str) -> None:
        print(f"[{loop.time() - start:6.2f}s] {line}", file=stream, flush=True)

    if events < 30:
        raise ValueError(f"corral supervision: events must be >= 30; got {events}")
    burst_at = events * 3 // 4
    poison = {events // 6, events // 3, events // 2, burst_at, burst_at + 1, burst_at + 2}
    result = DemoResult(events=events)
    plan = _Plan(poison=poison, tick=tick, report_every=max(1, events // 6))

    def on_child_exit(
        event: tuple[str, ...], measurements: object, metadata: object, config: object
    ) -> None:
        assert isinstance(metadata, dict)
        report: CrashReport = metadata["report"]
        if report.action in ("restart", "give_up"):
            result.crashes += 1
        if report.action == "restart":
            result.restarts += 1
        if report.action == "give_up":
            result.gave_up += 1
        reason = report.reason
        if isinstance(reason, RestartIntensityExceeded):
            why = (
                f"gave up after more than {reason.max_restarts} restarts "
                f"within {reason.max_seconds:g} s"
            )
        else:
            why = describe_reason(reason)
        out(f"CRASH  {report.child_id} {report.pid}: {why}")
        what = {
            "restart": f"restarting '{report.child_id}'",
            "give_up": "too many restarts: giving up, its own supervisor takes over",
            "none": "no restart needed",
            "remove": "temporary child removed",
        }[report.action]
        out(f"       supervisor {report.supervisor}: {what}")

    handler_id = f"corral-demo-{id(result)}"
    telemetry.attach(handler_id, ("corral", "supervisor", "child_exited"), on_child_exit)
    try:
        out("starting the tree: root -> [stats, scoring -> [model, feeder]]")
        node = Node(
            [
                ChildSpec(id="stats", start=Stats, name="stats"),
                ChildSpec(
                    id="scoring",
                    start=lambda: _scoring_tree(plan, result, out),
                    type="supervisor",
                    name="scoring",
                ),
            ],
            name="demo",
        )
        async with node:
            stats = node.lookup("stats")
            await _draw_tree(node.root, out)
            out(f"feeding {events} events; poison at {sorted(poison)}")
            await plan.done.wait()
            out("all events fed; the tree now:")
            await _draw_tree(node.root, out)
            still_same_stats = node.lookup("stats") is stats
            out(f"stats untouched by the crashes next door: {still_same_stats}")
            out("stopping the node: children stop in reverse start order")
    finally:
        telemetry.detach(handler_id)
    out(
        f"done: {len(result.scored)}/{events} events scored, {result.lost} lost, "
        f"{result.retried} sent again after a crash, {result.crashes} crashes, "
        f"{result.restarts} restarts, {result.gave_up} supervisor gave up and was restarted"
    )
    return result
