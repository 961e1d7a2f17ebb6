"""The actor base class: the hooks a process runs and the helpers a hook uses.

An ``Actor`` is the behaviour of a process; ``spawn`` (``corral.runtime.process``) gives it
a ``Pid`` and a task that runs its hooks one message at a time. The hooks' contract (which
task runs them, what happens when they raise) is in ``corral.runtime.process``'s docstring.

``Actor`` and ``Pid`` are two halves of one concept: the helpers here act on the process's
state, which lives on its ``Pid``, and they share its underscore names. Nothing outside
``corral.runtime`` does (``tests/runtime/test_privates.py`` checks); what other packages
need is a public seam: ``start_task``, ``running_as``, ``reports_child_exits`` here,
``Pid.send_system`` and ``Pid.add_exit_callback`` on the pid.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, ClassVar, Self, TypeVar

from corral.errors import NoProcess
from corral.runtime.context import current_pid
from corral.runtime.mailbox import DEFAULT_MAILBOX_SIZE
from corral.runtime.messages import NORMAL, Down, ExitReason, MonitorRef

if TYPE_CHECKING:
    from corral.runtime.node import Node
    from corral.runtime.process import Caller, Pid, Timer

__all__ = ["Actor", "Hooks", "hooks_for"]

logger = logging.getLogger("corral.process")

_T = TypeVar("_T")


class Hooks:
    """Which of an actor class's hooks are coroutine functions (looked up once per class)."""

    __slots__ = ("call", "cast", "info", "init", "terminate")

    def __init__(self, cls: type[Actor]) -> None:
        self.init = inspect.iscoroutinefunction(cls.init)
        self.call = inspect.iscoroutinefunction(cls.handle_call)
        self.cast = inspect.iscoroutinefunction(cls.handle_cast)
        self.info = inspect.iscoroutinefunction(cls.handle_info)
        self.terminate = inspect.iscoroutinefunction(cls.terminate)


_hooks_by_class: dict[type[Actor], Hooks] = {}


def hooks_for(cls: type[Actor]) -> Hooks:
    """``Hooks`` of ``cls``, computed on first use."""
    hooks = _hooks_by_class.get(cls)
    if hooks is None:
        hooks = _hooks_by_class[cls] = Hooks(cls)
    return hooks


class Actor:
    """Base class for process behaviour; override the hooks you need.

    Every hook runs in the process's own task, one at a time, and may be ``def`` or
    ``async def``. Inside a hook, ``self.pid`` is the process and the helper methods
    (``spawn``, ``link``, ``monitor``, ``send_after``, ``stop``, ``defer_reply``,
    ``start_task``) act on it. The class attribute ``mailbox_size`` bounds the mailbox
    (overridable per spawn).
    """

    mailbox_size: int = DEFAULT_MAILBOX_SIZE
    reports_child_exits: ClassVar[bool] = False
    """True for a process kind that reports the exits of the children it spawns linked, as
    their supervisor (``Supervisor`` does, with a ``CrashReport``): such a child does not log
    its own crash as well. Telemetry's ``crashed`` event is emitted either way."""

    _pid: Pid | None = None

    # -- hooks ---------------------------------------------------------------------------

    def init(self) -> Awaitable[None] | None:
        """Runs first, in the new process. ``spawn`` waits for it; if it raises, the
        process never runs and ``spawn`` raises ``StartError``."""
        return None

    def handle_call(self, msg: object) -> object:
        """Handles ``await pid.call(msg)``; the return value is the reply.

        To reply later, call ``defer_reply()`` and reply through the ``Caller`` it returns;
        the return value is then ignored. The default raises, ending the process.
        """
        raise NotImplementedError(f"{type(self).__name__}.handle_call does not handle {msg!r}")

    def handle_cast(self, msg: object) -> Awaitable[None] | None:
        """Handles ``pid.cast(msg)``. The default raises, ending the process."""
        raise NotImplementedError(f"{type(self).__name__}.handle_cast does not handle {msg!r}")

    def handle_info(self, msg: object) -> Awaitable[None] | None:
        """Handles plain messages, timers, ``Down`` and ``Exit``. The default logs the
        message at WARNING (``Down`` at DEBUG) and drops it."""
        level = logging.DEBUG if isinstance(msg, Down) else logging.WARNING
        logger.log(level, "process %s: unhandled message %r dropped", self.pid, msg)
        return None

    def terminate(self, reason: ExitReason) -> Awaitable[None] | None:
        """Runs last with the exit reason, unless the process was killed or init failed.

        It runs within the shutdown timeout its supervisor allows; past that the process is
        killed. The tasks started with ``start_task`` are cancelled, and have finished,
        before it runs. An exception here is logged and does not change the exit reason.
        """
        return None

    # -- helpers, for use inside hooks -----------------------------------------------------

    @property
    def pid(self) -> Pid:
        """This actor's process."""
        pid = self._pid
        if pid is None:
            raise RuntimeError(f"{type(self).__name__}.pid: the actor has not been spawned")
        return pid

    @property
    def node(self) -> Node:
        """The node this actor's process runs on."""
        return self.pid.node

    @property
    def trap_exit(self) -> bool:
        """Whether exit signals arrive as ``Exit`` messages instead of ending the process."""
        return self.pid._trap_exit

    @trap_exit.setter
    def trap_exit(self, value: bool) -> None:
        self.pid._trap_exit = bool(value)

    async def spawn(
        self, actor: Actor, *, name: str | None = None, link: bool = False, label: str | None = None
    ) -> Pid:
        """Spawn another process; ``link=True`` links it to this one. Waits for its init.
        ``label`` names it in logs when it has no ``name`` (see ``Node.spawn``)."""
        return await self.node.spawn(actor, name=name, link=link, label=label)

    def link(self, pid: Pid) -> None:
        """Link this process and ``pid`` both ways. ``NoProcess`` if ``pid`` is dead."""
        self.pid._link(pid)

    def unlink(self, pid: Pid) -> None:
        """Remove the link with ``pid``, if any."""
        self.pid._unlink(pid)

    def monitor(self, pid: Pid) -> MonitorRef:
        """Watch ``pid``: one ``Down(ref, pid, reason)`` arrives when it ends (``"noproc"``
        at once if it is dead already)."""
        return self.pid._monitor(pid)

    def demonitor(self, ref: MonitorRef) -> bool:
        """Stop watching; True if the monitor was active. A ``Down`` already queued stays."""
        return self.pid._demonitor(ref)

    def send_after(self, delay: float, msg: object) -> Timer:
        """Deliver ``msg`` to this process's ``handle_info`` after ``delay`` seconds."""
        return self.pid.send_after(delay, msg)

    def stop(self, reason: ExitReason = NORMAL) -> None:
        """Stop this process once the running hook returns (after its reply, in a call)."""
        pid = self.pid
        pid._stop_reason = reason
        pid._interrupted = True

    def defer_reply(self) -> Caller:
        """In ``handle_call``: reply later through the returned ``Caller``."""
        return self.pid._defer_reply()

    def start_task(
        self, coro: Coroutine[object, None, _T], *, name: str | None = None
    ) -> asyncio.Task[_T]:
        """Run ``coro`` as a task this process owns, and return the task.

        The task runs in the process's context, from whichever task calls this: processes
        it spawns with ``link=True`` are linked to this process. It is cancelled when the
        process ends: before ``terminate`` runs (which waits until it has finished), or at
        once when the process is killed or its init fails. If it raises, the process
        crashes with that exception once the running hook returns, as if a hook had raised
        it (its supervisor decides what follows); its result, if any, is not used. Does not
        block; ``NoProcess`` if the process has ended.
        """
        pid = self.pid
        if pid.exit_reason is not None:
            coro.close()
            raise NoProcess(pid, action="start_task")
        context = contextvars.copy_context()
        context.run(current_pid.set, pid)
        task = pid.node.loop.create_task(coro, name=name or f"corral {pid} task", context=context)
        pid._own_task(task)
        return task

    @classmethod
    def running_as(cls, pid: Pid) -> Self | None:
        """The instance of this class that runs as ``pid``; None once the process has
        ended, or when it runs another kind of actor (``pid.actor_type`` names it).

        For a process kind's own tools that read its state from outside the process
        (``Port.os_pid_of``). Everything runs on one event loop, so such a read sees a
        consistent state; never call the actor's hooks or helpers this way.
        """
        actor = pid._actor
        return actor if isinstance(actor, cls) else None
