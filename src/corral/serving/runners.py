"""Runners: the one seam through which a serving runs a batch on a partition.

A ``Runner`` belongs to one partition process (``pid``) and runs one batch at a time:
``run(batch, done)`` starts the batch and returns at once; ``done(outcome)`` is called later,
on the node's loop thread and never from inside ``run``, exactly once per batch, with

- the model's output (whatever it returned; the server checks it),
- ``ModelFailed(error)``: the model raised; the partition goes on, or
- ``Crashed(error)``: the partition died (or was killed) with the batch on it.

``abort(error)`` gives up on the running batch (``Crashed(error)``) and kills the partition:
the server does that when a batch overruns ``call_timeout``. Every partition kind is one
runner class: ``CallRunner`` (below) sends each batch to the partition process as a call —
ports, and async models; ``ThreadRunner`` and ``LoopRunner`` (``corral.serving.partitions``)
hand it to the partition's thread or run it inline on the loop; ``RayRunner``
(``corral.cluster.serving``) makes it one Ray call on a Ray-actor partition.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass

import numpy as np

from corral.errors import NoProcess, PortCallError, PortExited, ProcessExited
from corral.runtime.messages import KILL
from corral.runtime.process import Pid

__all__ = ["CallRunner", "Crashed", "Done", "ModelFailed", "Runner", "Spawn", "resolve"]


@dataclass(frozen=True, slots=True)
class ModelFailed:
    """The model raised ``error`` on the batch; the partition goes on."""

    error: Exception


@dataclass(frozen=True, slots=True)
class Crashed:
    """The partition died with the batch on it (``error`` says how); its supervisor
    restarts it."""

    error: Exception


Done = Callable[[object], None]
"""Called on the loop thread with a batch's outcome."""

Spawn = Callable[[Coroutine[object, None, None]], object]
"""Runs a coroutine as a task its owner cancels when it ends: the serving's server's
``Actor.start_task``."""


class Runner:
    """Runs batches on the partition ``pid``, one at a time (see the module docstring)."""

    def __init__(self, pid: Pid) -> None:
        self.pid = pid
        self._pending: Done | None = None
        self._loop = asyncio.get_running_loop()

    @property
    def os_pid(self) -> int | None:
        """The OS process running the model, when it is not this one."""
        return None

    def run(self, batch: np.ndarray, done: Done) -> None:
        """Start ``batch``; ``done(outcome)`` comes later on the loop. Loop thread only;
        does not block. One batch at a time."""
        if self._pending is not None:
            raise RuntimeError(f"runner of {self.pid}: a batch is already running")
        self._pending = done
        if not self.pid.alive:
            self._loop.call_soon(self._finish, Crashed(NoProcess(self.pid)))
            return
        self._start(batch)

    def abort(self, error: Exception) -> None:
        """Give up on the running batch (``Crashed(error)`` now) and kill the partition."""
        self._finish(Crashed(error))
        self.pid.exit(KILL)

    def run_once(self, batch: np.ndarray) -> Awaitable[object]:
        """``run`` as an awaitable of the outcome (swap warm-ups)."""
        fut: asyncio.Future[object] = self._loop.create_future()
        self.run(batch, functools.partial(resolve, fut))
        return fut

    def _start(self, batch: np.ndarray) -> None:
        raise NotImplementedError

    def _finish(self, outcome: object) -> None:
        """Report ``outcome`` for the running batch, unless it was reported already."""
        done = self._pending
        if done is not None:
            self._pending = None
            done(outcome)


def resolve(fut: asyncio.Future[object], value: object) -> None:
    """``fut.set_result(value)`` unless ``fut`` is done (cancelled) already."""
    if not fut.done():
        fut.set_result(value)


_CRASHES = (ProcessExited, NoProcess, PortExited)


class CallRunner(Runner):
    """Sends each batch to the partition as ``await pid.call(batch)``, in a task that
    ``spawn`` owns: ports (the worker answers, or its death ends the call) and async models.
    A ``PortCallError`` is the model's error; ``os_pid`` asks ``os_pid_of`` if given."""

    def __init__(
        self, pid: Pid, spawn: Spawn, os_pid_of: Callable[[Pid], int | None] | None = None
    ) -> None:
        super().__init__(pid)
        self._spawn = spawn
        self._os_pid_of = os_pid_of

    @property
    def os_pid(self) -> int | None:
        return None if self._os_pid_of is None else self._os_pid_of(self.pid)

    def _start(self, batch: np.ndarray) -> None:
        self._spawn(self._call(batch))

    async def _call(self, batch: np.ndarray) -> None:
        try:
            outcome = await self.pid.call(batch, timeout=None)
        except _CRASHES as exc:
            outcome = Crashed(exc)
        except PortCallError as exc:
            outcome = ModelFailed(exc)
        except Exception as exc:  # anything else the call raised fails this batch alone
            outcome = ModelFailed(exc)
        self._finish(outcome)
