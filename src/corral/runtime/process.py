"""Processes: an actor object, a bounded mailbox and one asyncio task that serves it.

A process is started by ``spawn`` with an ``Actor`` instance and is known by its ``Pid``.
The task runs the actor's hooks one message at a time, in arrival order:

- ``init()`` once, before any message; ``spawn`` returns when it has finished;
- ``handle_call(msg)`` for ``await pid.call(msg)``: its return value is the reply;
- ``handle_cast(msg)`` for ``pid.cast(msg)``;
- ``handle_info(msg)`` for ``pid.send(msg)``, timers, ``Down`` and (when trapping exits)
  ``Exit`` messages;
- ``terminate(reason)`` once at the end, unless the process was killed or init failed.

Hooks may be plain functions or coroutines. An exception that escapes a hook ends the process
with that exception as its reason ("let it crash"); its links and monitors hear about it and
its supervisor decides what happens next.

Exit signals (from a linked process that ended, or from ``pid.exit(reason)``) end a process
that does not trap exits by cancelling its task: the hook that is running sees
``CancelledError`` at its next ``await``, then ``terminate(reason)`` runs. A process that
traps exits receives them as ``Exit`` messages instead, except ``kill``, which no process can
trap. A process that blocks the event loop in synchronous code cannot be interrupted; run such
work in a port (an OS process) instead.

Everything here runs on the node's event loop thread; none of it is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from corral import telemetry
from corral.errors import (
    AlreadyRegistered,
    MailboxFull,
    NoProcess,
    ProcessExited,
    StartError,
)
from corral.runtime.actor import Actor, Hooks, hooks_for
from corral.runtime.context import current_node, current_pid
from corral.runtime.mailbox import CALL, CAST, CRASH, DEFAULT_MAILBOX_SIZE, INFO, Mailbox
from corral.runtime.messages import (
    KILLED,
    NOPROC,
    NORMAL,
    Down,
    Exit,
    ExitReason,
    MonitorRef,
    is_kill,
)

if TYPE_CHECKING:
    from corral.runtime.deadlines import CallDeadlines
    from corral.runtime.node import Node

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_MAILBOX_SIZE",
    "Actor",
    "Caller",
    "Pid",
    "Timer",
    "spawn_process",
]

logger = logging.getLogger("corral.process")

DEFAULT_CALL_TIMEOUT: Final = 5.0
"""Seconds ``call`` waits for a reply unless told otherwise (as gen_server's 5000 ms)."""
FAIRNESS_BUDGET: Final = 128
"""Messages a process handles back to back before it yields to other tasks."""

_STARTING: Final = 0
_RUNNING: Final = 1
_TERMINATING: Final = 2
_DEAD: Final = 3

_CRASHED_EVENT = ("corral", "process", "crashed")


class Caller:
    """A call whose reply was deferred with ``Actor.defer_reply``.

    Reply exactly once, from any task on the node's loop. If the process ends first, the
    caller gets ``ProcessExited``; if the caller gave up, the reply is dropped.
    """

    __slots__ = ("_fut", "_pid")

    def __init__(self, pid: Pid, fut: asyncio.Future[object]) -> None:
        self._pid = pid
        self._fut = fut

    @property
    def done(self) -> bool:
        """Whether the caller has its reply (or an error, or gave up)."""
        return self._fut.done()

    def reply(self, value: object) -> None:
        """Send ``value`` as the reply; no effect if the caller gave up."""
        self._settle()
        if not self._fut.done():
            self._fut.set_result(value)

    def fail(self, exc: BaseException) -> None:
        """Make the caller's ``call`` raise ``exc``; no effect if the caller gave up."""
        self._settle()
        if not self._fut.done():
            self._fut.set_exception(exc)

    def _settle(self) -> None:
        deferred = self._pid._deferred
        if deferred is not None:
            deferred.discard(self._fut)


class Timer:
    """A pending ``send_after``; cancel it with ``cancel()``."""

    __slots__ = ("_handle", "_target", "message")

    def __init__(self, target: Pid, message: object) -> None:
        self._target = target
        self.message = message
        self._handle: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        """Whether the timer has neither fired nor been cancelled."""
        return self._handle is not None

    def cancel(self) -> bool:
        """Cancel the timer; True if it had not fired yet (the message will not come)."""
        handle = self._handle
        if handle is None:
            return False
        handle.cancel()
        self._handle = None
        timers = self._target._timers
        if timers is not None:
            timers.discard(self)
        return True

    def _fire(self) -> None:
        self._handle = None
        target = self._target
        if target._timers is not None:
            target._timers.discard(self)
        target.send_system(self.message)


class Pid:
    """A process: the handle you call, cast to, link to and monitor.

    ``pid.exit_reason`` is ``None`` while the process is alive. Sending to a dead process
    raises ``NoProcess``; a message accepted by a process that then dies is lost, as in
    Erlang; use ``call`` or a monitor when you need to know.
    """

    __slots__ = (
        "__weakref__",
        "_actor",
        "_current_call",
        "_deadlines",
        "_deferred",
        "_exit_callbacks",
        "_exit_future",
        "_interrupted",
        "_links",
        "_loop",
        "_mailbox",
        "_node",
        "_parent",
        "_pending_exit",
        "_state",
        "_stop_reason",
        "_supervised",
        "_task",
        "_tasks",
        "_timers",
        "_trap_exit",
        "_watchers",
        "_watching",
        "actor_type",
        "exit_reason",
        "id",
        "label",
        "name",
    )

    def __init__(
        self,
        node: Node,
        actor: Actor,
        *,
        pid_id: int,
        name: str | None,
        parent: Pid | None,
        capacity: int,
        label: str | None = None,
    ) -> None:
        self.id = pid_id
        self.name = name
        # Where the process sits in the supervision tree, for logs and crash reports: its
        # registered name, else the label its supervisor gave it (see spawn_process).
        self.label = name if name is not None else label
        self.actor_type = type(actor).__name__
        self.exit_reason: ExitReason | None = None
        self._node = node
        self._loop = node.loop
        self._deadlines: CallDeadlines = node._deadlines
        self._actor: Actor | None = actor
        self._mailbox = Mailbox(self._loop, capacity)
        self._task: asyncio.Task[None] | None = None
        self._parent = parent
        self._links: set[Pid] = set()
        self._watchers: dict[MonitorRef, Pid] | None = None
        self._watching: dict[MonitorRef, Pid] | None = None
        self._timers: set[Timer] | None = None
        self._tasks: set[asyncio.Task[object]] | None = None
        self._deferred: set[asyncio.Future[object]] | None = None
        self._current_call: asyncio.Future[object] | None = None
        self._exit_future: asyncio.Future[ExitReason] | None = None
        self._exit_callbacks: list[Callable[[ExitReason], None]] | None = None
        self._trap_exit = False
        self._pending_exit: ExitReason | None = None
        self._stop_reason: ExitReason | None = None
        self._interrupted = False  # _pending_exit or _stop_reason is set: leave the loop
        self._state = _STARTING
        self._supervised = False

    def __repr__(self) -> str:
        if self.name is None:
            return f"<{self.id} {self.actor_type}>"
        return f"<{self.id} '{self.name}' {self.actor_type}>"

    # -- public API ------------------------------------------------------------------------

    @property
    def node(self) -> Node:
        """The node the process runs on."""
        return self._node

    @property
    def alive(self) -> bool:
        """Whether the process has not ended yet."""
        return self.exit_reason is None

    @property
    def mailbox_length(self) -> int:
        """Messages waiting in the mailbox."""
        return len(self._mailbox)

    async def call(self, msg: object, *, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> object:
        """Send ``msg`` to ``handle_call`` and wait for the reply (``timeout`` seconds, or
        forever with ``None``).

        Raises ``NoProcess`` at once if the process is dead, ``MailboxFull`` at once if its
        mailbox is full, ``ProcessExited`` if it ends before replying, ``CallTimeout`` when
        the timeout passes. A call the process had not picked up when the caller gave up
        (timeout or cancellation) is dropped unhandled; a reply that comes after is dropped,
        never left in a mailbox.
        """
        if self.exit_reason is not None:
            raise NoProcess(self)
        mailbox = self._mailbox
        items = mailbox.items
        if len(items) >= mailbox.capacity:
            raise MailboxFull(self, mailbox.capacity)
        if current_pid.get() is self:
            raise RuntimeError(f"call to process {self}: a process cannot call itself")
        fut: asyncio.Future[object] = self._loop.create_future()
        items.append((CALL, msg, fut))  # Mailbox.put, inlined (see corral.runtime.mailbox)
        if mailbox.waiter is not None:
            mailbox.wake()
        if timeout is not None:
            # Inlined fast path of CallDeadlines.add: a non-empty queue for this timeout
            # means the timer is armed no later than the new deadline.
            queue = self._deadlines._queues.get(timeout)
            if queue:
                while queue and queue[0][1].done():
                    queue.popleft()
                queue.append((self._loop.time() + timeout, fut, self))
            else:
                self._deadlines.add(fut, timeout, self)
        return await fut

    def cast(self, msg: object) -> None:
        """Queue ``msg`` for ``handle_cast`` and return at once.

        Raises ``NoProcess`` if the process is dead and ``MailboxFull`` if its mailbox is full.
        """
        if self.exit_reason is not None:
            raise NoProcess(self, action="cast")
        mailbox = self._mailbox
        items = mailbox.items
        if len(items) >= mailbox.capacity:
            raise MailboxFull(self, mailbox.capacity)
        items.append((CAST, msg, None))  # Mailbox.put, inlined (see corral.runtime.mailbox)
        if mailbox.waiter is not None:
            mailbox.wake()

    def send(self, msg: object) -> None:
        """Queue ``msg`` for ``handle_info`` (Erlang's ``!``); errors as ``cast``."""
        if self.exit_reason is not None:
            raise NoProcess(self, action="send")
        mailbox = self._mailbox
        items = mailbox.items
        if len(items) >= mailbox.capacity:
            raise MailboxFull(self, mailbox.capacity)
        items.append((INFO, msg, None))  # Mailbox.put, inlined (see corral.runtime.mailbox)
        if mailbox.waiter is not None:
            mailbox.wake()

    def send_system(self, msg: object) -> None:
        """Queue ``msg`` for ``handle_info`` even when the mailbox is full, as the runtime
        does for ``Down``, ``Exit`` and timer messages. No effect on a dead process.

        For process kinds built on the runtime, whose own machinery must tell the process
        something that may not be lost (a port's worker OS process died). Application
        messages use ``send``, which keeps the mailbox's bound.
        """
        if self.exit_reason is None:
            self._mailbox.put_system((INFO, msg, None))

    def exit(self, reason: ExitReason) -> None:
        """Send an exit signal, as from the calling process (or from outside, ``None``).

        ``kill`` ends the process at once (reason ``killed``). Otherwise a process that traps
        exits receives ``Exit(sender, reason)``; one that does not ignores ``normal`` and
        ends with any other reason. No effect on a dead process.
        """
        self._signal_exit(current_pid.get(), reason, linked=False)

    def send_after(self, delay: float, msg: object) -> Timer:
        """Deliver ``msg`` to ``handle_info`` after ``delay`` seconds; cancelled if the
        process ends first. Timer messages are not refused by a full mailbox."""
        if delay < 0:
            raise ValueError(f"send_after to process {self}: delay must be >= 0; got {delay}")
        if self.exit_reason is not None:
            raise NoProcess(self, action="send_after")
        timer = Timer(self, msg)
        timer._handle = self._loop.call_later(delay, timer._fire)
        if self._timers is None:
            self._timers = set()
        self._timers.add(timer)
        return timer

    def add_exit_callback(self, callback: Callable[[ExitReason], None]) -> None:
        """Call ``callback(reason)`` when the process ends, whatever the cause (kill
        included), right after its links and monitors are told. For releasing resources a
        process owns outside Python's reach (an OS process, shared memory); a callback that
        raises is logged. Called at once if the process is dead already."""
        if self.exit_reason is not None:
            _run_exit_callback(self, callback, self.exit_reason)
            return
        if self._exit_callbacks is None:
            self._exit_callbacks = []
        self._exit_callbacks.append(callback)

    async def wait_exit(self) -> ExitReason:
        """Wait until the process has ended and return its exit reason.

        Cancelling the wait does not affect the process.
        """
        if self.exit_reason is not None:
            return self.exit_reason
        if self._exit_future is None:
            self._exit_future = self._loop.create_future()
        return await asyncio.shield(self._exit_future)

    # -- links, monitors, signals ----------------------------------------------------------

    def _link(self, other: Pid) -> None:
        if other.exit_reason is not None:
            raise NoProcess(other, action="link")
        if other is not self:
            self._links.add(other)
            other._links.add(self)

    def _unlink(self, other: Pid) -> None:
        self._links.discard(other)
        other._links.discard(self)

    def _monitor(self, target: Pid) -> MonitorRef:
        ref = MonitorRef(self._node._next_id())
        if target.exit_reason is not None:
            self.send_system(Down(ref, target, NOPROC))
            return ref
        if target._watchers is None:
            target._watchers = {}
        target._watchers[ref] = self
        if self._watching is None:
            self._watching = {}
        self._watching[ref] = target
        return ref

    def _demonitor(self, ref: MonitorRef) -> bool:
        if self._watching is None:
            return False
        target = self._watching.pop(ref, None)
        if target is None or target._watchers is None:
            return False
        return target._watchers.pop(ref, None) is not None

    def _signal_exit(self, sender: Pid | None, reason: ExitReason, *, linked: bool) -> None:
        if self.exit_reason is not None:
            return
        if is_kill(reason) and not linked:
            self._kill(KILLED)
        elif self._trap_exit:
            self.send_system(Exit(sender, reason))
        elif type(reason) is str and reason == NORMAL:
            return
        else:
            self._kill(KILLED if is_kill(reason) else reason)

    def _kill(self, reason: ExitReason) -> None:
        task = self._task
        if task is None or self.exit_reason is not None:
            return
        if self._state == _TERMINATING:
            if reason is KILLED:
                self._pending_exit = KILLED
                self._interrupted = True
                task.cancel()
            return
        if self._pending_exit is not None and reason is not KILLED:
            return
        self._pending_exit = reason
        self._interrupted = True
        if task is asyncio.current_task():
            # A process signalling itself: the running hook finishes, then the process ends.
            return
        task.cancel()

    def _own_task(self, task: asyncio.Task[object]) -> None:
        # Actor.start_task: the task is cancelled when the process ends (_stop_tasks before
        # terminate, _finish otherwise); its failure crashes the process through the mailbox.
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(task)
        task.add_done_callback(self._owned_task_done)

    def _owned_task_done(self, task: asyncio.Task[object]) -> None:
        if self._tasks is not None:
            self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self.exit_reason is None and self._state != _TERMINATING:
            self._mailbox.put_system((CRASH, exc, None))
        else:
            logger.error("process %s: its task %r failed as it ended", self, task, exc_info=exc)

    async def _stop_tasks(self) -> None:
        tasks = self._tasks
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.wait(list(tasks))

    def _defer_reply(self) -> Caller:
        fut = self._current_call
        if fut is None:
            raise RuntimeError(
                f"defer_reply in process {self}: only valid once, inside handle_call"
            )
        self._current_call = None
        if self._deferred is None:
            self._deferred = set()
        self._deferred.add(fut)
        return Caller(self, fut)

    # -- the process's task ----------------------------------------------------------------

    async def _main(self, started: asyncio.Future[None]) -> None:
        actor = self._actor
        assert actor is not None  # set until _finish
        hooks = hooks_for(type(actor))
        try:
            result = actor.init()
            if hooks.init:
                await result  # type: ignore[misc]
        except asyncio.CancelledError:
            reason = self._take_pending_exit()
            self._fail_start(started, KILLED if reason is None else reason)
            if reason is None:
                raise
            return
        except Exception as exc:
            self._fail_start(started, exc)
            return
        if not started.done():
            started.set_result(None)
        self._state = _RUNNING
        external_cancel = False
        try:
            await self._serve(actor, hooks)
            reason = self._exit_reason_after_serve()
        except asyncio.CancelledError:
            pending = self._take_pending_exit()
            external_cancel = pending is None
            reason = KILLED if pending is None else pending
        except Exception as exc:
            reason = exc
        except BaseException:  # KeyboardInterrupt, SystemExit: end the process, then re-raise
            self._finish(KILLED)
            raise
        if reason is not KILLED:
            reason = await self._terminate(actor, hooks, reason)
        self._finish(reason)
        if external_cancel:
            raise asyncio.CancelledError

    async def _serve(self, actor: Actor, hooks: Hooks) -> None:
        mailbox = self._mailbox
        items = mailbox.items
        handle_call, call_async = actor.handle_call, hooks.call
        handle_cast, cast_async = actor.handle_cast, hooks.cast
        handle_info, info_async = actor.handle_info, hooks.info
        budget = FAIRNESS_BUDGET
        msg: object = None
        fut: asyncio.Future[object] | None = None
        reply: object = None
        result: Awaitable[None] | None = None
        while True:
            if not items:
                # Drop the last message before idling: it may pin a large array.
                msg = fut = reply = result = None
                await mailbox.wait()
                continue
            kind, msg, fut = items.popleft()
            if kind == CALL:
                assert fut is not None
                if fut.done():
                    continue
                self._current_call = fut
                reply = handle_call(msg)
                if call_async:
                    reply = await reply  # type: ignore[misc]
                if self._current_call is fut:
                    self._current_call = None
                    if not fut.done():
                        fut.set_result(reply)
            elif kind == CAST:
                result = handle_cast(msg)
                if cast_async:
                    await result  # type: ignore[misc]
            elif kind == CRASH:
                raise msg  # type: ignore[misc]  # a task the process owns failed
            else:
                if self._trap_exit and type(msg) is Exit and msg.pid is self._parent:
                    self._stop_reason = msg.reason
                    return
                result = handle_info(msg)
                if info_async:
                    await result  # type: ignore[misc]
            if self._interrupted:
                return
            budget -= 1
            if not budget:
                budget = FAIRNESS_BUDGET
                await asyncio.sleep(0)

    async def _terminate(self, actor: Actor, hooks: Hooks, reason: ExitReason) -> ExitReason:
        self._state = _TERMINATING
        try:
            if self._tasks:
                await self._stop_tasks()
            result = actor.terminate(reason)
            if hooks.terminate:
                await result  # type: ignore[misc]
        except asyncio.CancelledError:
            pending = self._take_pending_exit()
            if pending is None:
                self._finish(KILLED)
                raise
            return pending
        except Exception:
            logger.exception("process %s: terminate(%r) raised", self, reason)
        return reason

    def _exit_reason_after_serve(self) -> ExitReason:
        pending = self._take_pending_exit()
        if pending is not None:
            return pending
        return NORMAL if self._stop_reason is None else self._stop_reason

    def _take_pending_exit(self) -> ExitReason | None:
        reason = self._pending_exit
        if reason is not None and self._task is not None:
            self._task.uncancel()
        return reason

    def _fail_start(self, started: asyncio.Future[None], reason: ExitReason) -> None:
        if not started.done():
            # The spawner hears of the failure through StartError, not through the link.
            if self._parent is not None:
                self._unlink(self._parent)
            started.set_exception(StartError(f"process {self}", reason))
        self._finish(reason, report=False)

    def _on_task_done(self, started: asyncio.Future[None]) -> None:
        # Safety net: a task cancelled before its first step never ran _main's handlers.
        if self.exit_reason is None:
            self._fail_start(started, KILLED if self._pending_exit is None else self._pending_exit)
        # Pid -> Task -> Context -> Pid is a reference cycle; break it so a finished process
        # is freed by reference counting, not by the cycle collector.
        self._task = None

    def _finish(self, reason: ExitReason, *, report: bool = True) -> None:
        if self.exit_reason is not None:
            return
        self._state = _DEAD
        self.exit_reason = reason
        self._actor = None
        self._node._forget(self)
        exited: ProcessExited | None = None
        pending = [item[2] for item in self._mailbox.clear() if item[0] == CALL]
        if self._current_call is not None:
            pending.append(self._current_call)
            self._current_call = None
        if self._deferred:
            pending.extend(self._deferred)
            self._deferred = None
        for fut in pending:
            if fut is not None and not fut.done():
                exited = exited or ProcessExited(self, reason)
                fut.set_exception(exited)
        if self._timers:
            for timer in list(self._timers):
                timer.cancel()
        if self._tasks:
            # Killed, or init failed: nobody awaits them here, so the node does as it stops.
            tasks, self._tasks = self._tasks, None
            for task in tasks:
                task.cancel()
            self._node.add_cleanup(_settle(tasks))
        if self._watching:
            for ref, target in self._watching.items():
                if target._watchers is not None:
                    target._watchers.pop(ref, None)
            self._watching = None
        if self._watchers:
            watchers, self._watchers = self._watchers, None
            for ref, watcher in watchers.items():
                if watcher._watching is not None:
                    watcher._watching.pop(ref, None)
                watcher.send_system(Down(ref, self, reason))
        links, self._links = self._links, set()
        for other in links:
            other._links.discard(self)
            other._signal_exit(self, reason, linked=True)
        if self._exit_future is not None and not self._exit_future.done():
            self._exit_future.set_result(reason)
        if self._exit_callbacks:
            callbacks, self._exit_callbacks = self._exit_callbacks, None
            for callback in callbacks:
                _run_exit_callback(self, callback, reason)
        if report and isinstance(reason, BaseException):
            telemetry.emit(_CRASHED_EVENT, {}, {"pid": self, "reason": reason})
            if not self._supervised:
                logger.error("process %s crashed with %r", self, reason, exc_info=reason)


async def _settle(tasks: set[asyncio.Task[object]]) -> None:
    await asyncio.wait(tasks)


def _run_exit_callback(
    pid: Pid, callback: Callable[[ExitReason], None], reason: ExitReason
) -> None:
    try:
        callback(reason)
    except Exception:
        logger.exception("process %s: exit callback %r raised", pid, callback)


async def spawn_process(
    node: Node,
    actor: Actor,
    *,
    name: str | None = None,
    link: bool = False,
    mailbox_size: int | None = None,
    label: str | None = None,
) -> Pid:
    """Start ``actor`` in a new process on ``node`` and wait until its ``init`` finished.

    ``link=True`` links it to the calling process, which becomes its parent. ``label``
    names the process in logs when it has no registered ``name`` (a supervisor passes the
    child's path in its tree, e.g. ``"rank/partitions-v1"``); it becomes ``pid.label``. Raises
    ``StartError`` if init fails (the link is removed first, so the caller is not also hit
    by an exit signal), ``AlreadyRegistered`` if ``name`` is taken. If the caller is
    cancelled while waiting, the new process keeps running.
    """
    if not isinstance(actor, Actor):
        raise TypeError(f"spawn: actor must be an Actor instance; got {actor!r}")
    if actor._pid is not None:
        raise ValueError(
            f"spawn: this {type(actor).__name__} instance already ran as process {actor._pid}; "
            "spawn a new instance (supervisors take a factory for this reason)"
        )
    capacity = actor.mailbox_size if mailbox_size is None else mailbox_size
    if type(capacity) is not int or capacity < 1:
        raise ValueError(f"spawn: mailbox_size must be an int >= 1; got {capacity!r}")
    if name is not None and (type(name) is not str or not name):
        raise ValueError(f"spawn: name must be a non-empty str or None; got {name!r}")
    parent = current_pid.get() if link else None
    if link and parent is None:
        raise RuntimeError("spawn(link=True): only a process can link; call it from a hook")
    if name is not None:
        existing = node.whereis(name)
        if existing is not None:
            raise AlreadyRegistered(name, existing)
    pid = Pid(
        node,
        actor,
        pid_id=node._next_id(),
        name=name,
        parent=parent,
        capacity=capacity,
        label=label,
    )
    actor._pid = pid
    if parent is not None:
        parent._link(pid)
        pid._supervised = parent._actor is not None and parent._actor.reports_child_exits
    node._register(pid)
    loop = node.loop
    started: asyncio.Future[None] = loop.create_future()
    context = contextvars.copy_context()
    context.run(current_pid.set, pid)
    context.run(current_node.set, node)
    task = loop.create_task(pid._main(started), name=f"corral {pid}", context=context)
    pid._task = task
    task.add_done_callback(lambda _: pid._on_task_done(started))
    await started
    return pid
