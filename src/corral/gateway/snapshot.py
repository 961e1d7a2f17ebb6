"""What the dashboard shows, as one plain dict built from the introspection APIs.

``snapshot(node, servings, ...)`` is a JSON-ready dict: the node, its supervision tree
(``Supervisor.which_children`` from the root down, then the processes outside the root tree:
the system supervisor, a serving's partition supervisors, strays), the servings
(``serving.statistics()``) and the latest crash reports. No HTTP here; the dashboard's event
stream sends one snapshot per tick. Runs on the node's loop: it awaits one call per
supervisor, each bounded by ``call_timeout`` (a supervisor busy restarting a child past it
shows ``"busy": true`` and no children this time).

A supervisor's restart window (restarts in its last ``max_seconds``, of ``max_restarts``)
is the supervisor's own count (``Supervisor.restart_window``): every restart it made, from
its start, failed restart attempts included; ``used`` is None when it was too busy to answer.

Every string in it (names, crash reasons) is user data: whoever renders it must escape it.

Pipelines are those given (``pipelines``: nothing lists a node's pipelines yet), with
``pipeline.statistics()``. Training runs are those a ``TrainingLog`` heard report a round
(the trainer's ``("corral", "train", "round")`` event): each trainer's latest round and
loss, and the worker restarts over the rounds heard.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral import telemetry
from corral.errors import CallTimeout, MailboxFull, NoProcess, ProcessExited, describe_reason
from corral.port import Port
from corral.runtime.node import Node
from corral.runtime.process import Pid
from corral.runtime.supervisor import CHILD_EXITED_EVENT, CrashReport, Supervisor
from corral.serving import Serving

if TYPE_CHECKING:
    from corral.pipeline import Pipeline

__all__ = ["TRAIN_ROUND_EVENT", "CrashLog", "Rates", "TrainingLog", "rate", "snapshot"]

Json = dict[str, object]

REASON_LIMIT = 500
"""Longest crash reason a snapshot carries, in characters (the rest is cut)."""


def rate(before: tuple[float, int] | None, now: tuple[float, int]) -> float:
    """Events per second between two ``(time in seconds, count)`` readings; 0.0 without an
    earlier reading, when no time passed, or when the count went down (a restart)."""
    if before is None or now[0] <= before[0] or now[1] < before[1]:
        return 0.0
    return (now[1] - before[1]) / (now[0] - before[0])


class Rates:
    """Per-key rates from successive counts: ``rate(key, now, count)`` answers the rate
    since the last reading of ``key`` and remembers this one. One per event stream."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}

    def rate(self, key: str, now: float, count: int) -> float:
        reading = (now, count)
        value = rate(self._last.get(key), reading)
        self._last[key] = reading
        return value


@dataclass(frozen=True)
class Crash:
    """One child exit that was not clean, as the dashboard lists it."""

    time: float
    supervisor: str
    child_id: str
    pid: str
    reason: str
    action: str


class CrashLog:
    """The latest ``limit`` unclean child exits on ``node``, from the supervisor's telemetry
    event ``("corral", "supervisor", "child_exited")``. ``attach`` starts listening, ``detach``
    stops; the handler only appends to a bounded deque (it runs inside the supervisor)."""

    def __init__(self, limit: int = 20) -> None:
        self.crashes: deque[Crash] = deque(maxlen=limit)
        self._node: Node | None = None
        self._id = f"corral-dashboard-crashes-{id(self)}"

    def attach(self, node: Node) -> None:
        """Listen to ``node``'s supervisors (the handler is process-wide; it keeps only
        reports from ``node``)."""
        self.detach()
        self._node = node
        telemetry.attach(self._id, CHILD_EXITED_EVENT, self._handle)

    def detach(self) -> None:
        telemetry.detach(self._id)
        self._node = None

    def _handle(
        self,
        event: object,
        measurements: Mapping[str, object],
        metadata: Mapping[str, object],
        config: object,
    ) -> None:
        report = metadata.get("report")
        if not isinstance(report, CrashReport) or report.supervisor.node is not self._node:
            return
        if report.action == "none" or report.action == "remove":
            return  # a clean exit, or one its restart type does not act on
        now = report.supervisor.node.clock.now()
        self.crashes.append(
            Crash(
                time=now,
                supervisor=repr(report.supervisor),
                child_id=report.child_id,
                pid=repr(report.pid),
                reason=_cut(describe_reason(report.reason)),
                action=report.action,
            )
        )

    def last_reasons(self) -> dict[tuple[str, str], str]:
        """The last crash reason of each ``(supervisor, child id)``."""
        return {(c.supervisor, c.child_id): c.reason for c in self.crashes}


TRAIN_ROUND_EVENT = ("corral", "train", "round")
"""A trainer's round event (``corral.train.ROUND_EVENT``, documented API; named here so the
gateway does not import the training package)."""


class TrainingLog:
    """The latest round of each trainer, from ``TRAIN_ROUND_EVENT``. ``attach`` starts
    listening, ``detach`` stops. The handler is process-wide; it keeps only the rounds
    emitted on the event loop that attached it (the node's), and only stores numbers."""

    def __init__(self) -> None:
        self.trainers: dict[str, Json] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._id = f"corral-dashboard-training-{id(self)}"

    def attach(self) -> None:
        """Listen to rounds emitted on the running loop. Call on the node's loop."""
        self.detach()
        self._loop = asyncio.get_running_loop()
        telemetry.attach(self._id, TRAIN_ROUND_EVENT, self._handle)

    def detach(self) -> None:
        telemetry.detach(self._id)
        self._loop = None

    def _handle(
        self,
        event: object,
        measurements: Mapping[str, object],
        metadata: Mapping[str, object],
        config: object,
    ) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        trainer = metadata.get("trainer")
        if loop is not self._loop or not isinstance(trainer, str):
            return
        before = self.trainers.get(trainer)
        total = before["restarts"] if before is not None else 0
        restarts = measurements.get("restarts", 0)
        self.trainers[trainer] = {
            "name": trainer,
            "round": measurements.get("round"),
            "loss": measurements.get("loss"),
            "restarts": (total if isinstance(total, int) else 0)
            + (restarts if isinstance(restarts, int) else 0),
            "duration": measurements.get("duration"),
        }


def _cut(text: str) -> str:
    return text if len(text) <= REASON_LIMIT else text[: REASON_LIMIT - 1] + "…"


def _process(pid: Pid) -> Json:
    os_pid = Port.os_pid_of(pid) if Port.running_as(pid) is not None else None
    return {
        "pid": repr(pid),
        "id": pid.id,
        "name": pid.name,
        "kind": pid.actor_type,
        "state": "running" if pid.alive else "exited",
        "mailbox": pid.mailbox_length,
        "os_pid": os_pid,
    }


class _Walk:
    def __init__(self, call_timeout: float, crashes: CrashLog | None) -> None:
        self.seen: set[int] = set()
        self.timeout = call_timeout
        self.reasons = crashes.last_reasons() if crashes is not None else {}

    async def process(self, pid: Pid) -> Json:
        self.seen.add(pid.id)
        row = _process(pid)
        actor = Supervisor.running_as(pid)
        if actor is None:
            return row
        row["supervisor"] = True
        options = actor.options
        window: Json = {
            "used": None,
            "max_restarts": options.max_restarts,
            "max_seconds": options.max_seconds,
        }
        row["window"] = window
        row["strategy"] = options.strategy
        try:
            used = await asyncio.wait_for(Supervisor.restart_window(pid), self.timeout)
            window["used"] = used.used
            children = await asyncio.wait_for(Supervisor.which_children(pid), self.timeout)
        except (CallTimeout, TimeoutError, MailboxFull):
            row["busy"] = True
            return row
        except (NoProcess, ProcessExited):
            row["state"] = "exited"
            return row
        rows: list[Json] = []
        for child in children:
            if child.pid is None or not child.pid.alive:
                sub: Json = {"pid": None, "name": None, "kind": None, "state": "down"}
            else:
                sub = await self.process(child.pid)
            sub.update(
                child_id=child.id,
                type=child.type,
                restart=child.restart,
                restarts=child.restart_count,
                last_crash=self.reasons.get((repr(pid), child.id)),
            )
            rows.append(sub)
        row["children"] = rows
        return row


def _serving(serving: Serving, rates: Rates, key: str, now: float) -> Json:
    from corral.errors import ServingNotRunning

    try:
        stats = serving.statistics()
    except ServingNotRunning:
        return {"name": serving.name, "running": False, "version": serving.version}
    versions = sorted({p.version for p in stats.partitions} | {stats.version})
    return {
        "name": stats.name,
        "running": True,
        "version": stats.version,
        "versions": versions,
        "swapping": len(versions) > 1,
        "queue_length": stats.queue_length,
        "requests": stats.requests,
        "completed": stats.completed,
        "failed": stats.failed,
        "in_flight": stats.in_flight,
        "requests_per_second": round(rates.rate(key, now, stats.requests), 3),
        "batches": stats.batches,
        "batch_sizes": {str(size): count for size, count in stats.batch_sizes},
        "mean_batch_size": stats.mean_batch_size,
        "mean_wait": stats.mean_wait,
        "max_wait": stats.max_wait,
        "mean_compute": stats.mean_compute,
        "max_compute": stats.max_compute,
        "p50_latency": stats.p50_latency,
        "p99_latency": stats.p99_latency,
        "swaps": stats.swaps,
        "buckets": [
            {
                "bucket": b.bucket,
                "batches": b.batches,
                "mean_batch_size": b.mean_batch_size,
                "padding": b.padding,
                "promoted": b.promoted,
                "window": b.window,
                "window_throughput": b.window_throughput,
                "window_mean_batch_size": b.window_mean_batch_size,
                "window_padding": b.window_padding,
            }
            for b in stats.buckets
        ],
        "partitions_up": sum(
            p.state in ("idle", "busy") and p.version == stats.version for p in stats.partitions
        ),
        "partitions": [
            {
                "index": p.index,
                "version": p.version,
                "state": p.state,
                "batches": p.batches,
                "crashes": p.crashes,
                "os_pid": p.os_pid,
            }
            for p in stats.partitions
        ],
    }


def _pipeline(pipeline: Pipeline, node: Node, rates: Rates, now: float) -> Json:
    stats = pipeline.statistics()
    return {
        "name": stats.name,
        "running": node.whereis(pipeline.name) is not None,
        "produced": stats.produced,
        "in_flight": stats.in_flight,
        "acked": stats.acked,
        "failed": stats.failed,
        "ended_per_second": round(
            rates.rate(f"pipeline {stats.name}", now, stats.acked + stats.failed), 3
        ),
        "stages": {
            key: {"acked": stage.acked, "failed": stage.failed}
            for key, stage in stats.stages.items()
        },
    }


async def snapshot(
    node: Node,
    servings: Sequence[Serving] = (),
    *,
    pipelines: Sequence[Pipeline] = (),
    rates: Rates | None = None,
    crashes: CrashLog | None = None,
    training: TrainingLog | None = None,
    call_timeout: float = 0.25,
) -> Json:
    """The dashboard's view of ``node`` and ``servings`` now (see the module docstring).

    ``pipelines`` are shown with their ``statistics()``. ``rates`` keeps the previous counts
    for requests (and pipeline messages) per second (a fresh one: 0.0);
    ``crashes`` gives the latest crash reports, ``training`` the trainers' latest rounds
    (without it, ``training`` is empty). Call on the node's loop; awaits one call per
    live supervisor (each at most ``call_timeout`` seconds). Cancellable."""
    now = node.clock.now()
    log = crashes.crashes if crashes is not None else ()
    walk = _Walk(call_timeout, crashes)
    tree = await walk.process(node.root) if node.running else None
    outside: list[Json] = []
    for pid in node.processes():
        if pid.id not in walk.seen and pid.alive:
            outside.append(await walk.process(pid))
    rates = rates if rates is not None else Rates()
    return {
        "node": {
            "name": node.name,
            "running": node.running,
            "time": now,
            "processes": len(node.processes()),
            "registered": node.registered(),
        },
        "tree": tree,
        "outside": outside,
        "servings": [_serving(s, rates, f"serving {s.name}", now) for s in servings],
        "crashes": [
            {
                "time": c.time,
                "supervisor": c.supervisor,
                "child_id": c.child_id,
                "pid": c.pid,
                "reason": c.reason,
                "action": c.action,
            }
            for c in reversed(log)
        ],
        "pipelines": [_pipeline(p, node, rates, now) for p in pipelines],
        "training": [
            dict(row) for _, row in sorted((training.trainers if training else {}).items())
        ],
    }
