"""Supervisors: processes that start children, watch them and restart them by a strategy.

A supervisor traps exits. It starts its children in list order, each linked to it, and
waits for each one's ``init`` before the next. When a child exits, the child's ``restart``
type decides whether anything happens, the ``strategy`` decides which children are stopped
(in reverse start order) and started again (in start order), and the restart intensity
decides whether the supervisor may go on: more than ``max_restarts`` restarts within
``max_seconds`` and it stops every child and exits with ``RestartIntensityExceeded``, for its
own supervisor to handle. Stopping a child sends it ``shutdown`` and waits up to its
``shutdown`` seconds, then kills it.

Every child exit produces a ``CrashReport``: logged on ``corral.supervisor`` (ERROR for
exits that are not clean, with the reason's traceback unless only corral's plumbing is in
it; the record carries the report as ``record.crash_report``) and
emitted as the telemetry event ``("corral", "supervisor", "child_exited")``. Logs name a
supervisor by its label: every child gets one, its supervisor's label and its own id
(``rank/partitions-v1``), or its registered name.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeVar

from corral import telemetry
from corral._options import Options, is_int, is_number, one_of, option
from corral.errors import (
    ChildAlreadyPresent,
    ChildAlreadyStarted,
    ChildNotRestarted,
    ChildRunning,
    PortExited,
    RestartIntensityExceeded,
    StartError,
    UnknownChild,
    describe_reason,
)
from corral.runtime.messages import KILL, SHUTDOWN, Exit, ExitReason, is_clean_exit
from corral.runtime.process import Actor, Caller, Pid, spawn_process
from corral.runtime.restart import (
    RESTART_TYPES,
    RestartIntensity,
    RestartType,
    Strategy,
    plan_restart,
    should_restart,
)

__all__ = [
    "ChildInfo",
    "ChildSpec",
    "CrashReport",
    "RestartWindow",
    "Supervisor",
    "SupervisorOptions",
]

logger = logging.getLogger("corral.supervisor")

CHILD_EXITED_EVENT: Final = ("corral", "supervisor", "child_exited")
GAVE_UP_EVENT: Final = ("corral", "supervisor", "gave_up")

Shutdown = float | Literal["brutal_kill", "infinity"]


def _valid_shutdown(value: object) -> bool:
    if value in ("brutal_kill", "infinity") or value is None:
        return True
    return type(value) in (int, float) and value >= 0  # type: ignore[operator]


@dataclass(frozen=True, kw_only=True)
class ChildSpec(Options):
    """How a supervisor starts and treats one child."""

    _what = "child spec"

    id: str = option(
        "",
        doc="Unique among the supervisor's children; names the child in reports.",
        rule="a non-empty str",
        check=lambda v: type(v) is str and v != "",
    )
    start: Callable[[], Actor] = option(
        None,
        doc="Factory called for every (re)start; returns a fresh Actor instance.",
        rule="a callable returning an Actor",
        check=callable,
    )
    restart: RestartType = option(
        "permanent",
        doc="permanent: always restarted; transient: restarted after an exit that is not "
        "normal/shutdown; temporary: never restarted.",
        rule="one of 'permanent', 'transient', 'temporary'",
        check=one_of(*RESTART_TYPES),
    )
    shutdown: Shutdown | None = option(
        None,
        doc="Seconds to wait for the child to stop before killing it, 'brutal_kill', or "
        "'infinity'. None: 5.0 for workers, 'infinity' for supervisors.",
        rule="a number >= 0, 'brutal_kill', 'infinity' or None",
        check=_valid_shutdown,
    )
    type: Literal["worker", "supervisor"] = option(
        "worker",
        doc="'supervisor' for a child that is itself a supervisor.",
        rule="'worker' or 'supervisor'",
        check=one_of("worker", "supervisor"),
    )
    name: str | None = option(
        None,
        doc="Register the child's process under this name.",
        rule="a non-empty str or None",
        check=lambda v: v is None or (type(v) is str and v != ""),
    )

    @property
    def shutdown_timeout(self) -> Shutdown:
        """The effective shutdown: the default depends on ``type``."""
        if self.shutdown is not None:
            return self.shutdown
        return "infinity" if self.type == "supervisor" else 5.0


@dataclass(frozen=True, kw_only=True)
class SupervisorOptions(Options):
    """A supervisor's strategy and restart intensity."""

    _what = "supervisor"

    strategy: Strategy = option(
        "one_for_one",
        doc="one_for_one: restart the child that exited; one_for_all: restart all children; "
        "rest_for_one: restart it and the children started after it.",
        rule="one of 'one_for_one', 'one_for_all', 'rest_for_one'",
        check=one_of("one_for_one", "one_for_all", "rest_for_one"),
    )
    max_restarts: int = option(
        3,
        doc="Restarts allowed within max_seconds before the supervisor gives up.",
        rule="an int >= 0",
        check=is_int(0),
    )
    max_seconds: float = option(
        5.0,
        doc="Length of the restart-intensity window, in seconds.",
        rule="a number > 0",
        check=is_number(0, strict=True),
    )
    start_concurrently: bool = option(
        False,
        doc="At the supervisor's own start, run every child's init at once instead of one "
        "after another (for children that are independent and slow to start, such as model "
        "partitions). If any fails, those that started are stopped in reverse order and the "
        "supervisor fails to start. Restarts are unaffected.",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )


@dataclass(frozen=True)
class ChildInfo:
    """One row of ``which_children``: ``pid`` is None while the child is not running."""

    id: str
    pid: Pid | None
    type: Literal["worker", "supervisor"]
    restart: RestartType
    restart_count: int


@dataclass(frozen=True)
class RestartWindow:
    """A supervisor's restart intensity now (``Supervisor.restart_window``): ``used``
    restarts in the last ``max_seconds`` seconds, of the ``max_restarts`` it may make there
    (one more and it gives up). Counts every restart it made, a failed restart attempt
    included."""

    used: int
    max_restarts: int
    max_seconds: float


@dataclass(frozen=True)
class CrashReport:
    """What a supervisor knows about one child exit.

    ``action`` is ``"restart"`` (the strategy runs), ``"none"`` (the restart type says the
    exit needs nothing), ``"remove"`` (a temporary child, forgotten) or ``"give_up"`` (the
    restart intensity is exceeded; the supervisor exits).
    """

    supervisor: Pid
    child_id: str
    pid: Pid
    reason: ExitReason
    restart_count: int
    action: Literal["restart", "none", "remove", "give_up"]
    _traceback: list[str] | None = field(default=None, repr=False, compare=False)

    @property
    def traceback(self) -> str | None:
        """The formatted traceback when the reason is an exception, else None."""
        if not isinstance(self.reason, BaseException):
            return None
        lines = traceback.format_exception(self.reason)
        return "".join(lines)

    def describe(self) -> str:
        """One line for a log."""
        what = {
            "restart": f"restarting (restart {self.restart_count + 1})",
            "none": "not restarted",
            "remove": "removed (temporary)",
            "give_up": "restart intensity exceeded; supervisor shuts down",
        }[self.action]
        return (
            f"supervisor {describe_supervisor(self.supervisor)}: child '{self.child_id}' "
            f"{self.pid} exited with {describe_reason(self.reason)}; {what}"
        )


def describe_supervisor(pid: Pid) -> str:
    """How logs name a supervisor: its label in quotes (its registered name, or its path of
    child ids in the tree, ``'rank/partitions-v1'``), or its pid when it has none."""
    return repr(pid) if pid.label is None else f"'{pid.label}'"


def _untold(reason: BaseException) -> bool:
    """Whether a crash report's log record leaves out the traceback of ``reason``: only
    corral's plumbing would be in it. A port's worker OS process ended (``PortExited``: the
    status or signal says it all), or a child supervisor gave up (the crash that made it
    give up was reported, with its traceback, just before). ``report.traceback`` keeps it."""
    return isinstance(reason, PortExited | RestartIntensityExceeded)


class _Child:
    __slots__ = ("pid", "restart_count", "spec")

    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.pid: Pid | None = None
        self.restart_count = 0


@dataclass(frozen=True)
class _Failure:
    error: BaseException


class Supervisor(Actor):
    """A process that starts ``children`` and restarts them by ``strategy``.

    Start one with ``await node.spawn(Supervisor([...]))`` or as a child of another
    supervisor (``ChildSpec(..., type="supervisor")``). Manage it through the class's async
    functions, which take its pid: ``start_child``, ``terminate_child``, ``restart_child``,
    ``delete_child``, ``which_children``, ``count_children``, ``restart_window``,
    ``wait_restarted``.

    Subclassing: ``terminate(reason)`` runs only when the supervisor itself stops (never on a
    restart inside it), and ``await super().terminate(reason)`` stops the children in reverse
    start order. A subclass may do work first — a pipeline drains its stages there — and
    this order is part of the API.
    """

    reports_child_exits = True

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        start_concurrently: bool = False,
        **unknown: object,
    ) -> None:
        # The options schema checks every value, and names a misspelt option with the valid
        # ones (``unknown`` only exists to carry it there).
        self.options = SupervisorOptions.from_kwargs(
            {
                "strategy": strategy,
                "max_restarts": max_restarts,
                "max_seconds": max_seconds,
                "start_concurrently": start_concurrently,
                **unknown,
            }
        )
        self._children: list[_Child] = []
        seen: set[str] = set()
        for spec in children:
            if not isinstance(spec, ChildSpec):
                raise TypeError(f"Supervisor: children must be ChildSpec values; got {spec!r}")
            if spec.id in seen:
                raise ValueError(f"Supervisor: child ids must be unique; got '{spec.id}' twice")
            seen.add(spec.id)
            self._children.append(_Child(spec))
        self._restart_waiters: dict[str, list[Caller]] = {}
        self._intensity = RestartIntensity(max_restarts, max_seconds)

    # -- public API (called with the supervisor's pid) -------------------------------------

    @staticmethod
    async def start_child(sup: Pid, spec: ChildSpec) -> Pid:
        """Add ``spec`` as the last child and start it; raises ``StartError`` if its init
        fails (the child is then not added), ``ChildAlreadyStarted`` (with the child's pid)
        if a running child has the id, ``ChildAlreadyPresent`` if a stopped one has it (both
        are ``ValueError``)."""
        return _unwrap(await sup.call(("start_child", spec), timeout=None), Pid)

    @staticmethod
    async def terminate_child(sup: Pid, child_id: str) -> None:
        """Stop a child (its shutdown rules apply); its spec stays unless temporary."""
        _unwrap(await sup.call(("terminate_child", child_id), timeout=None), type(None))

    @staticmethod
    async def restart_child(sup: Pid, child_id: str) -> Pid:
        """Start a stopped child again; ``ChildRunning`` (a ``ValueError``) if it is running."""
        return _unwrap(await sup.call(("restart_child", child_id), timeout=None), Pid)

    @staticmethod
    async def delete_child(sup: Pid, child_id: str) -> None:
        """Forget a stopped child's spec; ``ChildRunning`` (a ``ValueError``) if it is running."""
        _unwrap(await sup.call(("delete_child", child_id)), type(None))

    @staticmethod
    async def wait_restarted(
        sup: Pid, child_id: str, old_pid: Pid, *, timeout: float | None = None
    ) -> Pid:
        """Wait until the child ``child_id`` runs as a process other than ``old_pid``, and
        return that process (at once if it does already). For code that saw a child die
        (``old_pid``) and needs its replacement.

        Blocks while the supervisor has not yet handled ``old_pid``'s exit and while it
        restarts the child, up to ``timeout`` seconds (``None``: as long as that takes;
        ``CallTimeout`` past it). Raises ``ChildNotRestarted`` if the child is stopped and
        will not be started again (its restart type, ``terminate_child``),
        ``UnknownChild`` if the supervisor has no such child (a temporary child is
        forgotten when it ends), ``ProcessExited`` or ``NoProcess`` if the supervisor ends
        first (it gave up: the reason is its ``RestartIntensityExceeded``). Cancelling the
        wait affects nothing else.
        """
        reply = await sup.call(("wait_restarted", child_id, old_pid), timeout=timeout)
        return _unwrap(reply, Pid)

    @staticmethod
    async def which_children(sup: Pid) -> list[ChildInfo]:
        """The children in start order."""
        return _unwrap(await sup.call(("which_children",)), list)

    @staticmethod
    async def count_children(sup: Pid) -> dict[str, int]:
        """``specs``, ``active``, ``supervisors`` and ``workers`` counts."""
        return _unwrap(await sup.call(("count_children",)), dict)

    @staticmethod
    async def restart_window(sup: Pid) -> RestartWindow:
        """The restart intensity ``sup`` has used: restarts in its last ``max_seconds``, of
        ``max_restarts``, from its own count as of now on the node's clock. A call: it
        waits while the supervisor is busy (restarting a child, say)."""
        return _unwrap(await sup.call(("restart_window",)), RestartWindow)

    # -- hooks -----------------------------------------------------------------------------

    async def init(self) -> None:
        self.trap_exit = True
        if self.options.start_concurrently:
            results = await asyncio.gather(
                *(self._start(child) for child in self._children), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                await self._stop_all()
                raise failed[0]
            return
        for child in self._children:
            try:
                await self._start(child)
            except StartError:
                await self._stop_all()
                raise

    async def handle_call(self, msg: object) -> object:
        try:
            match msg:
                case ("start_child", ChildSpec() as spec):
                    return await self._add_child(spec)
                case ("terminate_child", str(child_id)):
                    await self._terminate_child(child_id)
                    return None
                case ("restart_child", str(child_id)):
                    return await self._restart_stopped(child_id)
                case ("delete_child", str(child_id)):
                    self._delete_child(child_id)
                    return None
                case ("wait_restarted", str(child_id), Pid() as old_pid):
                    return self._wait_restarted(child_id, old_pid)
                case ("which_children",):
                    return [
                        ChildInfo(c.spec.id, c.pid, c.spec.type, c.spec.restart, c.restart_count)
                        for c in self._children
                    ]
                case ("count_children",):
                    return self._count()
                case ("restart_window",):
                    intensity = self._intensity
                    used = intensity.used(self.node.clock.now())
                    return RestartWindow(used, intensity.max_restarts, intensity.max_seconds)
        except (StartError, UnknownChild, ChildNotRestarted, ValueError) as exc:
            return _Failure(exc)
        return _Failure(TypeError(f"supervisor {self.pid}: unknown request {msg!r}"))

    async def handle_info(self, msg: object) -> None:
        if isinstance(msg, Exit) and msg.pid is not None:
            await self._child_exited(msg.pid, msg.reason)

    async def terminate(self, reason: ExitReason) -> None:
        await self._stop_all()

    # -- internals -------------------------------------------------------------------------

    def _find(self, child_id: str) -> _Child:
        for child in self._children:
            if child.spec.id == child_id:
                return child
        raise UnknownChild(repr(self.pid), child_id)

    async def _start(self, child: _Child) -> Pid:
        spec = child.spec
        actor = spec.start()
        parent = self.pid.label
        label = spec.id if parent is None else f"{parent}/{spec.id}"
        pid = child.pid = await spawn_process(
            self.node, actor, name=spec.name, link=True, label=label
        )
        for caller in self._restart_waiters.pop(spec.id, ()):
            caller.reply(pid)
        return pid

    def _wait_restarted(self, child_id: str, old_pid: Pid) -> Pid | None:
        # Calls are handled between messages, and a restart runs inside the handling of the
        # exit, so the child is either running (as old_pid: its exit is still to come) or
        # stopped for good until someone restarts it by hand.
        child = self._find(child_id)
        if child.pid is not None and child.pid is not old_pid:
            return child.pid
        if child.pid is None:
            raise ChildNotRestarted(repr(self.pid), child_id)
        self._restart_waiters.setdefault(child_id, []).append(self.defer_reply())
        return None

    def _not_restarted(self, child_id: str) -> None:
        for caller in self._restart_waiters.pop(child_id, ()):
            caller.fail(ChildNotRestarted(repr(self.pid), child_id))

    async def _stop(self, child: _Child) -> None:
        pid = child.pid
        if pid is None:
            return
        child.pid = None
        shutdown = child.spec.shutdown_timeout
        if shutdown == "brutal_kill":
            pid.exit(KILL)
        else:
            pid.exit(SHUTDOWN)
            if shutdown != "infinity":
                try:
                    async with asyncio.timeout(float(shutdown)):
                        await pid.wait_exit()
                except TimeoutError:
                    logger.warning(
                        "supervisor %s: child '%s' %s did not stop within %g s; killing it",
                        describe_supervisor(self.pid),
                        child.spec.id,
                        pid,
                        shutdown,
                    )
                    pid.exit(KILL)
        await pid.wait_exit()

    async def _stop_all(self) -> None:
        for child in reversed(self._children):
            await self._stop(child)

    async def _child_exited(self, pid: Pid, reason: ExitReason) -> None:
        child = next((c for c in self._children if c.pid is pid), None)
        if child is None:
            return  # an exit we caused, or from a process that is not our child
        child.pid = None
        spec = child.spec
        if not should_restart(spec.restart, reason):
            action: Literal["restart", "none", "remove", "give_up"] = "none"
            if spec.restart == "temporary":
                action = "remove"
                self._children.remove(child)
            self._report(child, pid, reason, action)
            self._not_restarted(spec.id)
            return
        if not self._intensity.add(self.node.clock.now()):
            self._report(child, pid, reason, "give_up")
            self._give_up(spec.id, reason)
            return
        self._report(child, pid, reason, "restart")
        await self._restart(child)

    async def _restart(self, failed: _Child) -> None:
        plan = plan_restart(
            self.options.strategy,
            [(c.spec.id, c.spec.restart) for c in self._children],
            failed.spec.id,
        )
        for child_id in plan.stop:
            await self._stop(self._find(child_id))
        for child_id in plan.remove:
            self._children.remove(self._find(child_id))
            self._not_restarted(child_id)
        for child_id in plan.start:
            child = self._find(child_id)
            while True:
                try:
                    child.restart_count += 1
                    await self._start(child)
                    break
                except StartError as exc:
                    logger.error(
                        "supervisor %s: restarting child '%s' failed: %s",
                        describe_supervisor(self.pid),
                        child_id,
                        exc,
                    )
                    if not self._intensity.add(self.node.clock.now()):
                        self._give_up(child_id, exc.reason)
                        return

    def _give_up(self, child_id: str, reason: ExitReason) -> None:
        options = self.options
        error = RestartIntensityExceeded(
            describe_supervisor(self.pid),
            options.max_restarts,
            options.max_seconds,
            child_id,
            reason,
        )
        telemetry.emit(GAVE_UP_EVENT, {}, {"supervisor": self.pid, "error": error})
        self.stop(error)

    def _report(
        self,
        child: _Child,
        pid: Pid,
        reason: ExitReason,
        action: Literal["restart", "none", "remove", "give_up"],
    ) -> None:
        clean = is_clean_exit(reason)
        level = logging.INFO if clean else logging.ERROR
        wanted = telemetry.has_handlers(CHILD_EXITED_EVENT)
        if not wanted and not logger.isEnabledFor(level):
            return
        report = CrashReport(self.pid, child.spec.id, pid, reason, child.restart_count, action)
        if wanted:
            telemetry.emit(
                CHILD_EXITED_EVENT,
                {"restart_count": child.restart_count},
                {"report": report, "supervisor": self.pid, "child_id": child.spec.id},
            )
        exc_info = None
        if isinstance(reason, BaseException) and not clean and not _untold(reason):
            exc_info = reason
        logger.log(
            level, "%s", report.describe(), exc_info=exc_info, extra={"crash_report": report}
        )

    async def _add_child(self, spec: ChildSpec) -> Pid:
        for existing in self._children:
            if existing.spec.id == spec.id:
                if existing.pid is not None:
                    raise ChildAlreadyStarted(repr(self.pid), spec.id, existing.pid)
                raise ChildAlreadyPresent(repr(self.pid), spec.id)
        child = _Child(spec)
        pid = await self._start(child)
        self._children.append(child)
        return pid

    async def _terminate_child(self, child_id: str) -> None:
        child = self._find(child_id)
        await self._stop(child)
        if child.spec.restart == "temporary":
            self._children.remove(child)
        self._not_restarted(child_id)

    async def _restart_stopped(self, child_id: str) -> Pid:
        child = self._find(child_id)
        if child.pid is not None:
            raise ChildRunning(repr(self.pid), child_id, child.pid)
        return await self._start(child)

    def _delete_child(self, child_id: str) -> None:
        child = self._find(child_id)
        if child.pid is not None:
            raise ChildRunning(repr(self.pid), child_id, child.pid, hint="; terminate it first")
        self._children.remove(child)

    def _count(self) -> dict[str, int]:
        return {
            "specs": len(self._children),
            "active": sum(c.pid is not None for c in self._children),
            "supervisors": sum(c.spec.type == "supervisor" for c in self._children),
            "workers": sum(c.spec.type == "worker" for c in self._children),
        }


_T = TypeVar("_T")


def _unwrap(reply: object, kind: type[_T]) -> _T:
    if isinstance(reply, _Failure):
        raise reply.error
    if not isinstance(reply, kind):
        raise TypeError(f"supervisor reply: expected {kind.__name__}; got {reply!r}")
    return reply
