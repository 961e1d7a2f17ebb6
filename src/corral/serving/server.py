"""The serving process: queue, batch cutting, dispatch to partitions, retries and swaps.

``ServingServer`` is an actor. Callers never message it for a request: ``submit`` is a plain
method called on the node's loop thread, which queues the request in the ``BatchPolicy`` and
returns a future; a full key is cut at once, otherwise one loop timer wakes the server at
``policy.wakeup()`` (cancelled when the queue empties). Each cut batch is stacked into one
array and given to a free partition. A thread partition takes it on its own thread
(``ThreadPartition.run_batch``) and answers with one loop callback (``_ran``) that splits
the output per request: no task and no message per batch; the partition's exit callback
tells the server if it dies mid-batch. Port partitions and async models are called by a
*batch task* (owned by the server, cancelled when it ends) through ``pid.call``.

The server traps exits and spawns, linked, one partitions ``Supervisor`` per model version
("generation"); a partition that dies is restarted by that supervisor, and the batch it was
running is retried (``retry_on_crash`` times) on a free partition. If a partitions
supervisor gives up, the server crashes and its own supervisor restarts the whole serving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Final

import numpy as np

from corral import telemetry
from corral.errors import (
    CallTimeout,
    DeadlineExceeded,
    NoProcess,
    PortExited,
    ProcessExited,
    ServingNotRunning,
    ServingOverloaded,
)
from corral.runtime.messages import KILL, Exit, ExitReason
from corral.runtime.process import Actor, Caller, Pid
from corral.serving.counters import Counters
from corral.serving.factory import ModelFactory
from corral.serving.generation import Generation, Slot
from corral.serving.job import Job, arrived, new_result, payload_of
from corral.serving.partitions import ModelFailed, ThreadPartition
from corral.serving.policy import BatchPolicy, Request
from corral.serving.records import PartitionStatistics, Result, ServingStatistics
from corral.serving.swap import run_swap

if TYPE_CHECKING:
    from corral.serving.serving import Serving

__all__ = ["ServingServer"]

logger = logging.getLogger("corral.serving")

BATCH_EVENT: Final = ("corral", "serving", "batch")
EXPIRED_EVENT: Final = ("corral", "serving", "expired")
CRASH_EVENT: Final = ("corral", "serving", "partition_crashed")

_CRASHES = (ProcessExited, NoProcess, PortExited)


class _TaskFailed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ServingServer(Actor):
    """The process behind a ``Serving``. Start it through ``Serving.child_spec()``."""

    def __init__(self, serving: Serving) -> None:
        options = serving.options
        self.serving = serving
        self.name = serving.name
        self.options = options
        self.policy = BatchPolicy(
            batch_size=options.batch_size,
            batch_timeout=options.batch_timeout,
            max_queue=options.max_queue,
            pad_to=options.pad_to,
        )
        self.current: Generation | None = None
        self.retired: list[Generation] = []
        self.counters = Counters()
        self._retry: deque[Job] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._running = False
        self._generations = 0
        self._swap_lock = asyncio.Lock()
        self._keys = options.batch_keys
        self._timeout = options.batch_timeout
        self._batch_size = options.batch_size

    # -- lifecycle (the server's own task) ---------------------------------------------------

    async def init(self) -> None:
        self.trap_exit = True
        self._loop = asyncio.get_running_loop()
        self.current = await self.start_generation(self.serving.factory, self.options.version)
        self._running = True
        self.serving._attach(self)

    def handle_call(self, msg: object) -> object:
        if type(msg) is tuple and msg[0] == "swap":
            caller = self.defer_reply()
            self.spawn_task(self._swap(caller, *msg[1:]))
            return None
        raise ValueError(f"serving '{self.name}': unknown call {msg!r}")

    def handle_info(self, msg: object) -> None:
        if isinstance(msg, _TaskFailed):
            raise msg.error
        if isinstance(msg, Exit):
            for gen in (self.current, *self.retired):
                if gen is not None and gen.supervisor is msg.pid and not gen.stopping:
                    raise (
                        msg.reason
                        if isinstance(msg.reason, BaseException)
                        else RuntimeError(
                            f"serving '{self.name}': partitions of version '{gen.version}' exited "
                            f"with {msg.reason!r}"
                        )
                    )
            return
        super().handle_info(msg)

    async def terminate(self, reason: ExitReason) -> None:
        self._running = False
        self.serving._detach(self)
        if self._timer is not None:
            self._timer.cancel()
        error = ServingNotRunning(self.name, "it stopped with queued requests")
        self._fail_all(error)
        running = ServingNotRunning(self.name, "it stopped while the batch ran")
        for gen in (self.current, *self.retired):
            for slot in () if gen is None else gen.slots:
                if (job := self._take_job(slot)) is not None:
                    self._fail(job, running)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for gen in (self.current, *self.retired):
            if gen is not None:
                await gen.stop()

    def spawn_task(self, coro: Coroutine[object, None, None]) -> None:
        """Run ``coro`` as a task owned by this server (cancelled when it ends). Must be
        called from the server's task or a task it spawned: they carry its process context,
        so processes spawned there are linked to the server."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        # A bug in the server's own tasks crashes the server; its supervisor restarts it.
        if not task.cancelled() and (exc := task.exception()) is not None and self.pid.alive:
            self.pid.send(_TaskFailed(exc))

    async def start_generation(self, factory: ModelFactory, version: str) -> Generation:
        """Start partitions for ``factory`` (blocks until every partition has loaded)."""
        self._generations += 1
        gen = Generation(self, factory, version, self._generations)
        await gen.start()
        return gen

    async def _swap(
        self, caller: Caller, factory: ModelFactory, version: str, warmup: object
    ) -> None:
        async with self._swap_lock:
            try:
                await run_swap(self, factory, version, warmup)
            except Exception as exc:
                caller.fail(exc)
            else:
                self.counters.swaps += 1
                caller.reply(None)

    # -- requests (any task on the node's loop) --------------------------------------------

    def submit(
        self, x: np.ndarray, size: int, single: bool, deadline: float | None
    ) -> tuple[Request, asyncio.Future[Result]]:
        """Queue a request; return it and the future its result comes on. Raises
        ``ServingOverloaded`` at once when ``max_queue`` requests wait, ``ServingNotRunning``
        if the server is stopping. Does not block."""
        if not self._running:
            raise ServingNotRunning(self.name, "it is stopping")
        self.counters.requests += 1
        keys = self._keys
        key = None if keys is None else keys(x)
        loop = self._loop
        now = loop.time()
        fut: asyncio.Future[Result] = loop.create_future()
        if deadline is None:
            request = Request(size, now, None, key, (x, fut, single, None))
            when = now + self._timeout
        else:
            expires = now + deadline
            request = Request(size, now, expires, key, (x, fut, single, deadline))
            when = min(now + self._timeout, expires)
        queued = self.policy.offer(request)
        if queued >= self._batch_size:
            self.pump()
        elif not queued:
            self.counters.overloaded += 1
            raise ServingOverloaded(self.name, len(self.policy), self.policy.max_queue)
        # _arm's own check, inlined: most requests find the timer armed early enough.
        elif self._timer is None or when < self._timer_at:
            self._arm(when)
        return request, fut

    def withdraw(self, request: Request) -> None:
        """The caller gave up: take its request out of the queue if it is still there."""
        if self.policy.remove(request):
            self.counters.cancelled += 1

    # -- batching ---------------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._timer_at <= when:
                return
            timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.pump()

    def pump(self) -> None:
        """Drop expired requests, then cut batches while a partition is free."""
        policy = self.policy
        now = self._loop.time()
        if policy._deadlines:
            for request in policy.expire(now):
                self._expire(request, now)
        gen = self.current
        if gen is not None and self._running:
            idle = gen.idle
            while idle:
                if self._retry:
                    job = self._retry.popleft()
                else:
                    batch = policy.cut(now)
                    if batch is None:
                        break
                    job = Job(batch)
                slot = idle.pop()
                slot.busy = True
                if slot.direct is not None:
                    self._run_on_thread(gen, slot, job)
                else:
                    self.spawn_task(self._execute(gen, slot, job))
        if len(policy):
            # With every partition busy, a finished batch pumps again: only deadlines need
            # a timer then.
            free = gen is not None and gen.idle
            wakeup = policy.wakeup() if free else policy.next_deadline()
            if wakeup is not None:
                self._arm(wakeup)
        elif self._timer is not None:
            # Nothing queued: a timer left armed would only wake the loop for nothing (and
            # take the GIL from a partition thread mid-batch); the next request arms one.
            self._timer.cancel()
            self._timer = None

    def _expire(self, request: Request, now: float) -> None:
        _, fut, _, budget = payload_of(request)
        self.counters.expired += 1
        if not fut.done():
            waited = now - request.arrived
            fut.set_exception(DeadlineExceeded(self.name, budget or 0.0, waited))
        telemetry.emit(EXPIRED_EVENT, {"waited": now - request.arrived}, {"serving": self.name})

    # -- running batches on partition threads (loop callbacks, no task) ---------------------

    def bind(self, gen: Generation, slot: Slot) -> None:
        """``slot.pid`` is a new partition: hand it batches directly if it runs them on a
        thread (and hear of its exit, to retry the batch it was running)."""
        actor = slot.pid._actor
        if isinstance(actor, ThreadPartition) and actor.threaded:
            slot.direct = actor
            exited = functools.partial(self._partition_exited, gen, slot, slot.pid)
            slot.pid.add_exit_callback(exited)
        else:
            slot.direct = None

    def _run_on_thread(self, gen: Generation, slot: Slot, job: Job) -> None:
        loop = self._loop
        job.attempts += 1
        start = job.start = loop.time()
        if job.attempts == 1:
            job.started = start
        pid = slot.pid
        direct = slot.direct
        if pid.exit_reason is not None or direct is None:
            self._crashed(gen, slot, job, NoProcess(pid))
            return
        slot.job = job
        direct.run_batch(job.inputs, functools.partial(self._ran, gen, slot, job))
        timeout = self.options.call_timeout
        if timeout is not None:
            slot.timer = loop.call_at(start + timeout, self._ran_too_long, gen, slot, job)

    def _ran(self, gen: Generation, slot: Slot, job: Job, output: object) -> None:
        """On the loop: the partition's thread finished ``job`` with ``output``."""
        if slot.job is not job:
            return  # the partition died, timed out or the server stopped: dropped
        self._take_job(slot)
        try:
            self._finish(gen, slot)
            if isinstance(output, ModelFailed):
                self._fail(job, output.error)
            else:
                self._deliver(gen, slot, job, output, self._loop.time() - job.start)
            self.pump()
        except Exception as exc:  # a bug here crashes the server, as in a batch task
            if self.pid.alive:
                self.pid.send(_TaskFailed(exc))

    def _ran_too_long(self, gen: Generation, slot: Slot, job: Job) -> None:
        if slot.job is not job:
            return
        slot.timer = None
        self._take_job(slot)
        pid = slot.pid
        pid.exit(KILL)
        self._crashed(gen, slot, job, CallTimeout(pid, self.options.call_timeout or 0.0))
        self.pump()

    def _partition_exited(self, gen: Generation, slot: Slot, pid: Pid, reason: ExitReason) -> None:
        """``pid`` (a threaded partition) ended: retry the batch it was running, if any."""
        if slot.pid is not pid or (job := self._take_job(slot)) is None:
            return
        self._crashed(gen, slot, job, ProcessExited(pid, reason))
        self.pump()

    @staticmethod
    def _take_job(slot: Slot) -> Job | None:
        job = slot.job
        if job is not None:
            slot.job = None
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
        return job

    # -- running batches (batch tasks) -------------------------------------------------------

    async def _execute(self, gen: Generation, slot: Slot, job: Job) -> None:
        loop = self._loop
        job.attempts += 1
        start = loop.time()
        if job.attempts == 1:
            job.started = start
        try:
            output = await slot.pid.call(job.inputs, timeout=self.options.call_timeout)
        except asyncio.CancelledError:
            self._fail(job, ServingNotRunning(self.name, "it stopped while the batch ran"))
            raise
        except CallTimeout as exc:
            slot.pid.exit(KILL)
            self._crashed(gen, slot, job, exc)
        except _CRASHES as exc:
            self._crashed(gen, slot, job, exc)
        except Exception as exc:
            self._finish(gen, slot)
            self._fail(job, exc)
        else:
            self._finish(gen, slot)
            if isinstance(output, ModelFailed):
                self._fail(job, output.error)
            else:
                self._deliver(gen, slot, job, output, loop.time() - start)
        self.pump()

    def _finish(self, gen: Generation, slot: Slot) -> None:
        slot.busy = False
        slot.batches += 1
        gen.release(slot)

    def _crashed(self, gen: Generation, slot: Slot, job: Job, exc: Exception) -> None:
        slot.busy = False
        slot.crashes += 1
        gen.release_check()
        telemetry.emit(
            CRASH_EVENT,
            {"attempts": job.attempts},
            {"serving": self.name, "version": gen.version, "partition": slot.index, "reason": exc},
        )
        logger.warning(
            "serving '%s': partition %d (version %s) died running a batch of %d: %r",
            self.name, slot.index, gen.version, job.batch.size, exc,
        )  # fmt: skip
        self.spawn_task(gen.recover(slot))
        if job.attempts <= self.options.retry_on_crash:
            self.counters.retried += 1
            self._retry.append(job)
        else:
            from corral.errors import PartitionCrashed

            self._fail(job, PartitionCrashed(self.name, str(slot.index), job.attempts, exc))

    def _deliver(
        self, gen: Generation, slot: Slot, job: Job, output: object, compute: float
    ) -> None:
        batch = job.batch
        version = gen.version
        counters = self.counters
        if not isinstance(output, np.ndarray) or output.shape[:1] != (batch.padded_size,):
            got = getattr(output, "shape", type(output).__name__)
            self._fail(
                job,
                ValueError(
                    f"serving '{self.name}': the model returned {got} for a batch of "
                    f"{batch.padded_size}; it must return an array with that first axis"
                ),
            )
            return
        requests = batch.requests
        started = job.started
        n = len(requests)
        wait_total = n * started - sum(map(arrived, requests))
        if job.single:
            # One sample per request (the usual case): row i is request i's (then padding).
            for fut, rows in zip(job.futs, output, strict=False):
                if not fut.done():
                    fut.set_result(new_result(Result, (rows, version)))
        else:
            offset = 0
            for request, fut in zip(requests, job.futs, strict=True):
                size = request.size
                if not fut.done():
                    single = payload_of(request)[2]
                    rows = output[offset] if single else output[offset : offset + size]
                    fut.set_result(new_result(Result, (rows, version)))
                offset += size
        counters.completed += n
        counters.batches += 1
        counters.samples += batch.size
        counters.sizes[batch.size] = counters.sizes.get(batch.size, 0) + 1
        counters.waited += n
        counters.wait_total += wait_total
        oldest = started - batch.requests[0].arrived
        counters.wait_max = max(counters.wait_max, oldest)
        counters.compute_total += compute
        counters.compute_max = max(counters.compute_max, compute)
        if telemetry.has_handlers(BATCH_EVENT):
            telemetry.emit(
                BATCH_EVENT,
                {
                    "size": batch.size,
                    "padded_size": batch.padded_size,
                    "requests": n,
                    "wait": oldest,
                    "compute": compute,
                    "attempts": job.attempts,
                },
                {
                    "serving": self.name,
                    "version": version,
                    "partition": slot.index,
                    "key": batch.key,
                    "reason": batch.reason,
                },
            )

    def _fail(self, job: Job, exc: BaseException) -> None:
        for fut in job.futs:
            if not fut.done():
                fut.set_exception(exc)
        self.counters.failed += len(job.batch.requests)

    def _fail_all(self, exc: BaseException) -> None:
        while self._retry:
            self._fail(self._retry.popleft(), exc)
        while (batch := self.policy.cut(0.0, force=True)) is not None:
            for request in batch.requests:
                fut = payload_of(request)[1]
                if not fut.done():
                    fut.set_exception(exc)
            self.counters.failed += len(batch.requests)

    # -- statistics --------------------------------------------------------------------------

    def statistics(self) -> ServingStatistics:
        """A snapshot of this server's queue, counters and partitions."""
        parts: list[PartitionStatistics] = []
        for gen in (self.current, *self.retired):
            if gen is not None:
                parts.extend(gen.statistics(draining=gen is not self.current))
        version = "" if self.current is None else self.current.version
        return self.counters.snapshot(self.name, version, self.policy, tuple(parts))
