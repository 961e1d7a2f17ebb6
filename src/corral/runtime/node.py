"""The node: owns one event loop's processes, their registry, a root supervisor and the clock.

Use it as an async context manager inside a running loop::

    async with Node([ChildSpec(id="counter", start=Counter)]) as node:
        pid = node.lookup("counter")

or from synchronous code with ``node.run()``, which creates the loop (uvloop when installed),
starts the node, runs ``main`` if given, and stops on SIGINT/SIGTERM.

Stopping is graceful: the root supervisor stops its children in reverse start order, each
within its shutdown timeout (supervisors stop theirs the same way, depth first); then any
process started outside the tree gets ``shutdown`` and, after ``shutdown_timeout`` seconds,
``kill``.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final, TypeVar

from corral import logs
from corral._options import is_number, option
from corral.errors import ChildAlreadyStarted, NodeError, NoProcess
from corral.runtime.clock import Clock
from corral.runtime.context import current_node
from corral.runtime.deadlines import CallDeadlines
from corral.runtime.loops import default_loop_factory
from corral.runtime.messages import KILL, SHUTDOWN, ExitReason
from corral.runtime.process import Actor, Pid, Timer, spawn_process
from corral.runtime.restart import Strategy
from corral.runtime.supervisor import ChildSpec, Supervisor, SupervisorOptions

__all__ = ["SYSTEM_SUPERVISOR", "Node", "NodeOptions"]

logger = logging.getLogger("corral.node")

_T = TypeVar("_T")

SYSTEM_SUPERVISOR: Final = "corral.system"
"""The name of a node's system supervisor (see ``Node.start_system_child``)."""


@dataclass(frozen=True, kw_only=True)
class NodeOptions(SupervisorOptions):
    """A node's options: those of its root supervisor (``SupervisorOptions``), and how the
    node stops."""

    _what = "node"

    shutdown_timeout: float = option(
        5.0,
        doc="Seconds the node waits for its processes to stop before it kills them.",
        rule="a number >= 0",
        check=is_number(0),
    )
    handle_signals: bool = option(
        False,
        doc="Stop gracefully on SIGINT and SIGTERM (Node.run sets it).",
        rule="a bool",
        check=lambda v: type(v) is bool,
    )


class Node:
    """A corral node. One per event loop; not thread-safe (use it from its loop).

    ``children``, ``strategy``, ``max_restarts`` and ``max_seconds`` configure the root
    supervisor. ``shutdown_timeout`` (seconds) bounds how long processes outside the tree get
    to stop. ``handle_signals`` makes SIGINT and SIGTERM stop the node gracefully (always on
    in ``run()``; only possible in the main thread).
    """

    def __init__(
        self,
        children: Sequence[ChildSpec] = (),
        *,
        name: str = "corral",
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        shutdown_timeout: float = 5.0,
        handle_signals: bool = False,
        **unknown: object,
    ) -> None:
        # One schema checks every option and names a misspelt one with the valid ones.
        options = NodeOptions.from_kwargs(
            {
                "strategy": strategy,
                "max_restarts": max_restarts,
                "max_seconds": max_seconds,
                "shutdown_timeout": shutdown_timeout,
                "handle_signals": handle_signals,
                **unknown,
            },
            what=f"node '{name}'",
        )
        self.name = name
        self.options = options
        self.shutdown_timeout = float(options.shutdown_timeout)
        self.handle_signals = options.handle_signals
        self._root_actor = Supervisor(
            children,
            strategy=options.strategy,
            max_restarts=options.max_restarts,
            max_seconds=options.max_seconds,
            start_concurrently=options.start_concurrently,
        )
        self._ids = itertools.count(1)
        self._processes: dict[int, Pid] = {}
        self._names: dict[str, Pid] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: Clock | None = None
        self._deadlines: CallDeadlines
        self._root: Pid | None = None
        self._stop_task: asyncio.Task[None] | None = None
        self._stopped: asyncio.Future[ExitReason] | None = None
        self._signals: list[signal.Signals] = []
        self._node_token: contextvars.Token[Node | None] | None = None
        self.exit_reason: ExitReason | None = None
        self._cleanups: set[asyncio.Task[None]] = set()
        self._system_lock = asyncio.Lock()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<Node '{self.name}' {state}, {len(self._processes)} processes>"

    # -- state -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the node has started and is not stopping or stopped."""
        return self._loop is not None and self._stop_task is None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the node runs on; ``NodeError`` before ``start``."""
        if self._loop is None:
            raise NodeError(f"node '{self.name}' is not started; use `async with node`")
        return self._loop

    @property
    def clock(self) -> Clock:
        """The clock every timer of this node uses."""
        if self._clock is None:
            raise NodeError(f"node '{self.name}' is not started; use `async with node`")
        return self._clock

    @property
    def root(self) -> Pid:
        """The root supervisor's pid."""
        if self._root is None:
            raise NodeError(f"node '{self.name}' is not started; use `async with node`")
        return self._root

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Start the root supervisor and its children (in order). Raises ``StartError`` if
        a child fails to start; the node is then stopped again."""
        if self._loop is not None:
            raise NodeError(f"node '{self.name}' is already started; a node starts once")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._clock = Clock(loop)
        self._deadlines = CallDeadlines(loop)
        self._stopped = loop.create_future()
        self._node_token = current_node.set(self)
        if self.handle_signals:
            self._install_signal_handlers()
        try:
            self._root = await spawn_process(self, self._root_actor)
        except BaseException:
            await self.stop()
            raise
        if self._root._exit_future is None:
            self._root._exit_future = loop.create_future()
        self._root._exit_future.add_done_callback(self._root_exited)

    async def stop(self) -> ExitReason:
        """Stop gracefully (see the module doc) and return the node's exit reason:
        ``shutdown``, or the root supervisor's reason if it gave up. Safe to call from
        inside a process of this node and more than once."""
        if self._loop is None:
            raise NodeError(f"node '{self.name}' is not started")
        self._begin_stop(SHUTDOWN)
        assert self._stop_task is not None and self._stopped is not None
        return await asyncio.shield(self._stopped)

    def stop_soon(self) -> None:
        """Begin a graceful stop without waiting (signal handlers, callbacks)."""
        if self._loop is not None:
            self._begin_stop(SHUTDOWN)

    async def wait_stopped(self) -> ExitReason:
        """Wait until the node has stopped, for whatever cause; return its exit reason."""
        if self._stopped is None:
            raise NodeError(f"node '{self.name}' is not started")
        return await asyncio.shield(self._stopped)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run(
        self,
        main: Callable[[Node], Awaitable[_T]] | None = None,
        *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
    ) -> _T | None:
        """From synchronous code: run the node on a new event loop until it stops.

        With ``main``, runs ``await main(node)`` and stops the node when it returns, giving
        back its result; without, runs until SIGINT/SIGTERM or ``stop()``. A signal stops
        the node gracefully and cancels ``main``; ``run`` then returns None. Raises the
        root supervisor's reason if it gave up.

        Unless the application configured logging already, logs go to stderr at INFO
        (``corral.logs.configure_default()``), so crash reports are seen.
        """
        logs.configure_default()
        self.handle_signals = True
        factory = loop_factory or default_loop_factory()
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self._run_main(main))

    async def _run_main(self, main: Callable[[Node], Awaitable[_T]] | None) -> _T | None:
        async with self:
            assert self._stopped is not None
            if main is None:
                await asyncio.shield(self._stopped)
                result = None
            else:
                main_task = asyncio.ensure_future(main(self))
                self._stopped.add_done_callback(lambda _: main_task.cancel())
                try:
                    result = await main_task
                except asyncio.CancelledError:
                    if not (main_task.cancelled() and self._stopped.done()):
                        raise  # run() itself was cancelled
                    result = None
        if isinstance(self.exit_reason, BaseException):
            raise self.exit_reason
        return result

    def _begin_stop(self, reason: ExitReason) -> None:
        if self._stop_task is None:
            loop = self.loop
            context = contextvars.Context()
            context.run(current_node.set, self)
            self._stop_task = loop.create_task(
                self._shutdown(reason), name=f"corral node '{self.name}' stop", context=context
            )

    async def _shutdown(self, reason: ExitReason) -> None:
        root = self._root
        if root is not None and root.alive:
            root._signal_exit(None, SHUTDOWN, linked=False)
            await root.wait_exit()
        if root is not None and isinstance(root.exit_reason, BaseException):
            reason = root.exit_reason
        await self._stop_strays()
        if self._cleanups:
            _, pending = await asyncio.wait(set(self._cleanups), timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self._deadlines.close()
        self._remove_signal_handlers()
        if self._node_token is not None:
            try:
                current_node.reset(self._node_token)
            except ValueError:
                pass  # stopped from another context than the one that started it
            self._node_token = None
        self.exit_reason = reason
        assert self._stopped is not None
        if not self._stopped.done():
            self._stopped.set_result(reason)

    async def _stop_strays(self) -> None:
        """Stop processes started outside the root tree, within ``shutdown_timeout``.

        Only the top of each stray tree is signalled (newest first): a stray supervisor then
        stops its own children in its own order. What still runs after the timeout is killed.
        """
        loop = self.loop
        deadline = loop.time() + self.shutdown_timeout
        while self._processes:
            tops = [
                p for p in self._processes.values() if p._parent is None or not p._parent.alive
            ] or list(self._processes.values())
            tops.sort(key=lambda p: p.id, reverse=True)
            for pid in tops:
                pid._signal_exit(None, SHUTDOWN, linked=False)
            waits = [asyncio.ensure_future(p.wait_exit()) for p in tops]
            remaining = deadline - loop.time()
            _, pending = await asyncio.wait(waits, timeout=max(remaining, 0.0))
            if pending:
                break
        for pid in sorted(self._processes.values(), key=lambda p: p.id, reverse=True):
            logger.warning(
                "node '%s': process %s did not stop within %g s; killing it",
                self.name,
                pid,
                self.shutdown_timeout,
            )
            pid._signal_exit(None, KILL, linked=False)
        left = [asyncio.ensure_future(p.wait_exit()) for p in self._processes.values()]
        if left:
            await asyncio.wait(left)

    def _root_exited(self, fut: asyncio.Future[ExitReason]) -> None:
        if self._stop_task is None:
            logger.error(
                "node '%s': root supervisor exited with %r; stopping the node",
                self.name,
                fut.result(),
            )
            self._begin_stop(fut.result())

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise NodeError(
                f"node '{self.name}': handle_signals=True needs the main thread; "
                "signals can only be handled there"
            )
        loop = self.loop
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._signals.append(sig)

    def _remove_signal_handlers(self) -> None:
        loop = self._loop
        if loop is None:
            return
        for sig in self._signals:
            loop.remove_signal_handler(sig)
        self._signals.clear()

    def _on_signal(self, sig: signal.Signals) -> None:
        logger.info("node '%s': %s received; stopping", self.name, sig.name)
        self.stop_soon()

    def add_cleanup(self, cleanup: Coroutine[object, None, None]) -> None:
        """Run ``cleanup`` as a task the node owns: stopping the node waits for it (within
        ``shutdown_timeout``, then cancels it). For releasing what a process held outside
        Python when it ended, e.g. reaping a worker OS process after a kill."""
        task = self.loop.create_task(cleanup, name=f"corral node '{self.name}' cleanup")
        self._cleanups.add(task)
        task.add_done_callback(self._cleanup_done)

    def _cleanup_done(self, task: asyncio.Task[None]) -> None:
        self._cleanups.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("node '%s': cleanup task failed", self.name, exc_info=task.exception())

    # -- processes -------------------------------------------------------------------------

    async def spawn(
        self,
        actor: Actor,
        *,
        name: str | None = None,
        link: bool = False,
        mailbox_size: int | None = None,
        label: str | None = None,
    ) -> Pid:
        """Start ``actor`` in a new process and wait for its ``init``.

        ``name`` registers it; ``link=True`` (only from inside a process) links it to the
        caller. ``label`` names an unregistered process in logs and crash reports (a
        supervisor's children take their labels from it: ``rank/partitions-v1/partition-0``).
        Raises ``StartError`` if init fails, ``AlreadyRegistered`` if the name is
        taken, ``NodeError`` if the node is not running.
        """
        if not self.running:
            raise NodeError(f"spawn on node '{self.name}': the node is not running")
        return await spawn_process(
            self, actor, name=name, link=link, mailbox_size=mailbox_size, label=label
        )

    async def start_system_child(self, spec: ChildSpec) -> Pid:
        """Start ``spec`` under the node's system supervisor, or return the running child
        that has its id already.

        The system supervisor, registered as ``corral.system`` (``one_for_one``, 3 restarts
        in 5 s), holds the services that a layer above the runtime shares among its
        processes, such as the port spare pool. It starts with its first child, outside
        the root tree, and stops after the tree (with the other processes outside it).
        If it gave up (its children crashed too often), the next call starts a new one.
        Raises ``StartError`` if the child's init fails, ``NodeError`` if the node is not
        running.
        """
        async with self._system_lock:
            system = self._names.get(SYSTEM_SUPERVISOR)
            if system is None:
                system = await self.spawn(Supervisor(), name=SYSTEM_SUPERVISOR)
        try:
            return await Supervisor.start_child(system, spec)
        except ChildAlreadyStarted as running:
            return running.pid

    async def start_child(self, spec: ChildSpec) -> Pid:
        """Add a child to the root supervisor and start it."""
        return await Supervisor.start_child(self.root, spec)

    def whereis(self, name: str) -> Pid | None:
        """The live process registered under ``name``, or None."""
        return self._names.get(name)

    def lookup(self, name: str) -> Pid:
        """The live process registered under ``name``; ``NoProcess`` if there is none."""
        pid = self._names.get(name)
        if pid is None:
            raise NoProcess(None, name=name, action="lookup")
        return pid

    def registered(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._names)

    def processes(self) -> list[Pid]:
        """Live processes, oldest first."""
        return sorted(self._processes.values(), key=lambda p: p.id)

    def send_after(self, delay: float, pid: Pid, msg: object) -> Timer:
        """Deliver ``msg`` to ``pid``'s ``handle_info`` after ``delay`` seconds."""
        return pid.send_after(delay, msg)

    # -- used by processes -----------------------------------------------------------------

    def _next_id(self) -> int:
        return next(self._ids)

    def _register(self, pid: Pid) -> None:
        self._processes[pid.id] = pid
        if pid.name is not None:
            self._names[pid.name] = pid

    def _forget(self, pid: Pid) -> None:
        self._processes.pop(pid.id, None)
        if pid.name is not None and self._names.get(pid.name) is pid:
            del self._names[pid.name]
