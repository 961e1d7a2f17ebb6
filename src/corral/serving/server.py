"""The serving process: queue, batch cutting, dispatch to partitions, isolation, retries.

``ServingServer`` is an actor. Callers never message it for a request: ``submit`` is a plain
method called on the node's loop thread, which checks the input contract, queues the request
in the ``BatchPolicy`` and returns a future; a full key is cut at once, otherwise one loop
timer wakes the server at ``policy.wakeup()`` (cancelled when the queue empties). Each cut
batch is stacked into a ``Job`` and given to a free partition's runner (``runners.py``: one
dispatch path for every partition kind); the runner answers with one loop callback
(``_done``) carrying the output, the model's error or the partition's crash.

**Every accepted request ends exactly once**, with its own result or a named error, no later
than its deadline: the server settles a future only if it is not done yet and counts it
where it settles it, so ``statistics()`` always adds up (``requests == completed + failed +
expired + cancelled + overloaded + invalid + in_flight``). Whatever raises while a batch is
cut, stacked, dispatched or delivered fails that batch's requests alone with the error; a
request's deadline timer runs from the cut until it is answered, so a batch that runs too
long cannot hold its callers past their deadlines.

**Isolation.** A model error on a batch of several requests splits it in halves, run again
(first in line) until the offenders are alone: only they fail (``isolate_errors``). A batch
whose partition crashes is split into one job per request, retried first in line; a request
that has been through ``retry_on_crash + 1`` crashes fails with ``PartitionCrashed``. So one
request that kills its worker on its own costs at most ``retry_on_crash + 1`` restarts, and
its neighbours succeed.

The server traps exits and spawns, linked, one partitions ``Supervisor`` per model version
(``Generation``; ``Versions`` holds them); a partition that dies is restarted by that
supervisor. If a partitions supervisor gives up, the server crashes and its own supervisor
restarts the whole serving.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Final

import numpy as np

from corral import telemetry
from corral.errors import (
    CallTimeout,
    DeadlineExceeded,
    InvalidInput,
    PartitionCrashed,
    ServingError,
    ServingNotRunning,
    ServingOverloaded,
    SwapFailed,
)
from corral.runtime.messages import KILL, Exit, ExitReason
from corral.runtime.process import Actor, Caller, Pid
from corral.serving.contract import NUMERIC_KINDS, Buckets, InputSpec, Spec, Value, conform
from corral.serving.counters import Counters
from corral.serving.door import Door
from corral.serving.factory import ModelFactory
from corral.serving.fields import Sequences, first_array, stack
from corral.serving.generation import Generation, Slot
from corral.serving.job import Job, arrived, new_result, payload_of, split_output
from corral.serving.options import ServingOptions
from corral.serving.policy import Batch, BatchPolicy, Bucket, PromotingPolicy, Request
from corral.serving.records import PartitionStatistics, Result, ServingStatistics
from corral.serving.runners import Crashed, ModelFailed
from corral.serving.swap import run_swap
from corral.serving.versions import Versions

__all__ = ["ServingServer"]

logger = logging.getLogger("corral.serving")

BATCH_EVENT: Final = ("corral", "serving", "batch")
EXPIRED_EVENT: Final = ("corral", "serving", "expired")
CRASH_EVENT: Final = ("corral", "serving", "partition_crashed")
SPLIT_EVENT: Final = ("corral", "serving", "split")
REQUESTS_EVENT: Final = ("corral", "serving", "requests")


class ServingServer(Actor):
    """The process behind a ``Serving``. Start it through ``Serving.child_spec()``: it runs
    ``factory`` under ``options`` and opens ``door`` to callers once its partitions are up."""

    def __init__(
        self, name: str, options: ServingOptions, factory: ModelFactory, door: Door
    ) -> None:
        self.name = name
        self.factory = factory
        self.door = door
        self.options = options
        self.policy = make_policy(options)
        self.versions = Versions()
        self.counters = Counters()
        self._retry: deque[Job] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._running = False
        self._generations = 0
        self._swap_lock = asyncio.Lock()
        self._keys = options.batch_keys
        self._spec = options.input_spec
        # A spec of fixed shapes keys nothing by itself; one with a None axis (or none)
        # keys requests by shape, so that different shapes never meet in one stack.
        self._fixed = options.input_spec is not None and _fixed_shapes(options.input_spec)
        self._buckets = Buckets()
        self._raw = (
            None
            if options.preprocess is None or options.preprocess_in != "partition"
            else (options.preprocess, functools.partial(_conform, self.name, options.input_spec))
        )
        self.sequences = (
            None
            if not options.sequence_buckets
            else Sequences(
                options.sequence_buckets, options.sequence_pad, unpad=options.sequence_unpad
            )
        )
        self._drop_late_on = options.drop_late
        self._late_margin = 0.0  # seconds: 0 until a batch has run (or with drop_late off)
        self._timeout = options.batch_timeout
        self._batch_size = options.batch_size

    @property
    def current(self) -> Generation | None:
        """The version new batches run on (its partitions)."""
        return self.versions.current

    @property
    def version(self) -> str:
        """The label of the version new batches run on."""
        current = self.versions.current
        return self.options.version if current is None else current.version

    # -- lifecycle (the server's own task) ---------------------------------------------------

    async def init(self) -> None:
        self.trap_exit = True
        self._loop = asyncio.get_running_loop()
        gen = await self.start_generation(self.factory, self.options.version)
        self.versions.flip(gen)
        self._running = True
        # However the server ends (a kill skips terminate), no caller is left waiting.
        self.pid.add_exit_callback(self._ended)
        self.door.open(self, self._loop)

    def handle_call(self, msg: object) -> object:
        if type(msg) is tuple and msg[0] == "swap":
            caller = self.defer_reply()
            self.start_task(self._swap(caller, *msg[1:]))
            return None
        raise ValueError(f"serving '{self.name}': unknown call {msg!r}")

    def handle_info(self, msg: object) -> None:
        if isinstance(msg, Exit):
            gen = None if msg.pid is None else self.versions.owning(msg.pid)
            if gen is not None:
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
        # Its tasks (swaps, recoveries, port calls) were cancelled before this ran.
        self._ended(reason)
        await self.versions.stop()

    def _ended(self, reason: ExitReason) -> None:
        """The server stops (``terminate``) or has ended (its exit callback, which a kill
        runs too): close the door and fail every request it holds. Runs once in effect."""
        self._running = False
        self.door.close(self, reason)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._fail_all(ServingNotRunning(self.name, "it stopped with queued requests"))
        running = ServingNotRunning(self.name, "it stopped while the batch ran")
        for gen in self.versions:
            for slot in gen.slots:
                if (job := self._take_job(slot)) is not None:
                    self._fail(job, running)

    async def start_generation(
        self, factory: ModelFactory, version: str, indices: Sequence[int] | None = None
    ) -> Generation:
        """Start partitions for ``factory``: ``indices`` (default all; blocks until each
        has loaded)."""
        self._generations += 1
        gen = Generation(
            self.name,
            self.options,
            factory,
            version,
            self._generations,
            spawn_task=self.start_task,
            ready=self.pump,
        )
        # The partitions' supervisor is named in crash reports as 'rank/partitions-v1'.
        label = f"{self.name}/partitions-v{version}"
        await gen.start(functools.partial(self.spawn, link=True, label=label), indices)
        return gen

    async def _swap(
        self, caller: Caller, factory: ModelFactory, version: str, warmup: object
    ) -> None:
        async with self._swap_lock:
            try:
                await run_swap(self, factory, version, warmup)
            except SwapFailed as exc:
                caller.fail(exc)
            except Exception as exc:
                # A rolling swap could not put the old version back: let it crash (the
                # serving's supervisor restarts it whole), as when a partition cannot restart.
                caller.fail(exc)
                raise
            else:
                self.counters.swaps += 1
                caller.reply(None)

    def warmup_batches(self, warmup: object) -> list[object]:
        """The batches a swap warms a new version with: ``warmup`` (one sample, through
        ``preprocess`` and the input contract) as a batch of one padded to ``pad_to``;
        with sequence buckets one such batch per bucket, the sample's sequence cut or
        padded to each bucket's length. Raises ``InvalidInput`` for a bad sample."""
        options = self.options
        if options.preprocess is not None:
            warmup = options.preprocess(warmup)
        value = conform(self.name, warmup, self._spec, single=True)
        padded = self.policy.padded_size(1)
        seq = self.sequences
        if seq is None:
            return [stack([value], [1], [True], padded, None, 0)]
        return [
            stack([seq.cut(value, length)], [1], [True], padded, seq, length)
            for length in seq.lengths
        ]

    # -- requests (any task on the node's loop) --------------------------------------------

    def submit(
        self, x: object, single: bool, deadline: float | None
    ) -> tuple[Request, asyncio.Future[Result]]:
        """Check ``x`` against the input contract and queue it; return the request and the
        future its result comes on. Raises ``InvalidInput`` (the request never queues),
        ``ServingOverloaded`` at once when ``max_queue`` requests wait, ``ServingNotRunning``
        if the server is stopping. Does not block."""
        if not self._running:
            raise ServingNotRunning(self.name, "it is stopping")
        counters = self.counters
        counters.requests += 1
        spec = self._spec
        try:
            arr: object
            if self._raw is not None:  # preprocess_in="partition": queued as sent
                arr, size, key = self._raw_request(x, single)
            else:
                # The usual request, inline: an array of numbers, no spec (conform's first
                # case).
                if spec is None and type(x) is np.ndarray and x.dtype.kind in NUMERIC_KINDS:
                    arr = x
                else:
                    arr = conform(self.name, x, spec, single=single)
                size = 1 if single else self._batch_length(arr)
                keys = self._keys
                seq = self.sequences
                if seq is not None:
                    index, length = seq.bucket(self.name, seq.length(self.name, arr, single))
                    group = seq.group(arr, single)
                    key = Bucket(index, length, group if keys is None else (keys(arr), group))
                elif self._fixed:
                    key = None if keys is None else keys(arr)
                else:
                    bucket = self._buckets.key(arr, single)
                    key = bucket if keys is None else (keys(arr), bucket)
        except InvalidInput:
            counters.invalid += 1
            self._ended_requests("invalid", 1)
            raise
        loop = self._loop
        now = loop.time()
        fut: asyncio.Future[Result] = loop.create_future()
        if deadline is None:
            request = Request(size, now, None, key, (arr, fut, single, None))
            when = now + self._timeout
        else:
            expires = now + deadline
            request = Request(size, now, expires, key, (arr, fut, single, deadline))
            when = min(now + self._timeout, expires)
        queued = self.policy.offer(request)
        if queued >= self._batch_size:
            self.pump()
        elif not queued:
            counters.overloaded += 1
            self._ended_requests("overloaded", 1)
            raise ServingOverloaded(self.name, len(self.policy), self.policy.max_queue)
        # _arm's own check, inlined: most requests find the timer armed early enough.
        elif self._timer is None or when < self._timer_at:
            self._arm(when)
        return request, fut

    def _raw_request(self, x: object, single: bool) -> tuple[object, int, Hashable]:
        """``(x, size, key)`` with ``preprocess_in="partition"``: ``x`` is queued as sent
        (one queue per ``batch_keys`` key); ``run_batch`` takes a list or tuple of samples.
        ``InvalidInput`` for a ``run_batch`` input that is not one."""
        if single:
            size = 1
        elif isinstance(x, list | tuple) and 1 <= len(x) <= self._batch_size:
            size = len(x)
        else:
            raise InvalidInput(
                self.name,
                f"a list or tuple of 1 to batch_size={self._batch_size} samples",
                type(x).__name__,
                field="run_batch input",
            )
        return x, size, None if self._keys is None else self._keys(x)

    def _user_key(self, key: Hashable) -> Hashable:
        """The ``batch_keys`` key inside a queue key (without the implicit shape bucket)."""
        if type(key) is Bucket:
            return None if self._keys is None else key.group[0]  # type: ignore[index]
        if self._fixed:
            return key
        return None if self._keys is None else key[0]  # type: ignore[index]

    def _batch_length(self, arr: object) -> int:
        shape = getattr(arr if type(arr) is np.ndarray else first_array(arr), "shape", ())  # type: ignore[arg-type]
        if not shape or not 1 <= shape[0] <= self._batch_size:
            raise InvalidInput(
                self.name,
                f"an array with a first axis of 1 to batch_size={self._batch_size} samples",
                f"shape {shape}",
                field="run_batch input",
            )
        return int(shape[0])

    def withdraw(self, request: Request) -> None:
        """The caller gave up (its future is cancelled): take its request out of the queue
        if it is still there, and count it once."""
        fut = payload_of(request)[1]
        if self.policy.remove(request) or fut.cancelled():
            self.counters.cancelled += 1
            self._ended_requests("cancelled", 1)

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
        """Drop expired requests, then cut batches while a partition is free. Never raises:
        a failure of the policy itself fails what is queued, with the error."""
        try:
            self._pump()
        except Exception as exc:
            logger.exception("serving '%s': cutting batches failed", self.name)
            self._fail_all(ServingError(f"serving '{self.name}': cutting batches failed: {exc!r}"))

    def _pump(self) -> None:
        policy = self.policy
        now = self._loop.time()
        for request in policy.expire(now):
            self._expire(request, now, ran=False)
        serving = self.versions.serving  # one version; two during a rolling swap
        if self._running:
            for gen in serving:
                idle = gen.idle
                while idle and (job := self._next_job(now)) is not None:
                    self._dispatch(gen, idle.pop(), job)
                if idle:
                    break  # nothing more to cut
        if len(policy):
            # With every partition busy, a finished batch pumps again: only deadlines need
            # a timer then.
            free = False
            for gen in serving:
                if gen.idle:
                    free = True
                    break
            wakeup = policy.wakeup() if free else policy.next_deadline()
            if wakeup is not None:
                self._arm(wakeup)
        elif self._timer is not None:
            # Nothing queued: a timer left armed would only wake the loop for nothing (and
            # take the GIL from a partition thread mid-batch); the next request arms one.
            self._timer.cancel()
            self._timer = None

    def _next_job(self, now: float) -> Job | None:
        """The next job to run: retries (and split batches) first, then a new cut."""
        retry = self._retry
        while True:
            while retry:
                retried = retry.popleft()
                if retried.live():
                    return retried
                retried.close()  # every caller has its answer (expired, cancelled) already
            batch = self.policy.cut(now)
            if batch is None:
                return None
            if (job := self._make_job(batch)) is not None:
                return job
            # Not stackable: its requests went first in line, one job each.

    def _make_job(self, batch: Batch, *, crashes: int = 0) -> Job | None:
        """Stack ``batch`` into a job. Inputs that cannot be stacked (a ``batch_keys`` that
        mixes shapes) are run one request at a time, queued first in line."""
        if self._late_margin > 0.0 and (late := self._drop_late(batch)) is not batch:
            if late is None:
                return None
            batch = late
        try:
            job = Job(batch, crashes=crashes, sequences=self.sequences, raw=self._raw)
        except Exception as exc:
            if len(batch.requests) == 1:
                self._fail_requests(batch.requests, exc)
                return None
            self._requeue(self._split(batch, len(batch.requests), crashes=crashes))
            return None
        self._watch_deadlines(job)
        return job

    def _drop_late(self, batch: Batch) -> Batch | None:
        """``batch`` without the requests whose deadline comes before it could end (now
        plus the recent compute time, ``drop_late``): they expire now. None if none is left."""
        now = self._loop.time()
        ends = now + self._late_margin
        keep = [r for r in batch.requests if r.deadline is None or r.deadline >= ends]
        if len(keep) == len(batch.requests):
            return batch
        for request in batch.requests:
            if request.deadline is not None and request.deadline < ends:
                self._expire(request, now, ran=False, early=True)
        if not keep:
            return None
        size = sum(r.size for r in keep)
        padded = self.policy.padded_size(size)
        return Batch(batch.key, tuple(keep), size, padded, batch.reason, batch.promoted)

    def _split(self, batch: Batch, parts: int, *, crashes: int) -> list[Job]:
        """``batch``'s live requests in ``parts`` jobs (1 to ``parts`` requests each)."""
        live = [r for r in batch.requests if not payload_of(r)[1].done()]
        if not live:
            return []
        step = -(-len(live) // min(parts, len(live)))
        jobs = []
        for i in range(0, len(live), step):
            chunk = tuple(live[i : i + step])
            size = sum(r.size for r in chunk)
            part = Batch(batch.key, chunk, size, self.policy.padded_size(size), "split")
            if (job := self._make_job(part, crashes=crashes)) is not None:
                jobs.append(job)
        return jobs

    def _requeue(self, jobs: list[Job]) -> None:
        """Put ``jobs`` first in line, in order."""
        self._retry.extendleft(reversed(jobs))

    # -- deadlines ---------------------------------------------------------------------------

    def _expire(self, request: Request, now: float, *, ran: bool, early: bool = False) -> None:
        _, fut, _, budget = payload_of(request)
        if fut.done():
            return
        waited = now - request.arrived
        fut.set_exception(DeadlineExceeded(self.name, budget or 0.0, waited, ran=ran, early=early))
        self.counters.expired += 1
        self._ended_requests("expired", 1)
        telemetry.emit(
            EXPIRED_EVENT, {"waited": waited}, {"serving": self.name, "ran": ran, "early": early}
        )

    def _watch_deadlines(self, job: Job) -> None:
        """Arm ``job``'s timer for the earliest deadline among its waiting requests."""
        earliest = None
        for request, fut in zip(job.batch.requests, job.futs, strict=True):
            deadline = request.deadline
            if (
                deadline is not None
                and not fut.done()
                and (earliest is None or deadline < earliest)
            ):
                earliest = deadline
        if earliest is not None:
            job.timer = self._loop.call_at(earliest, self._job_deadline, job)

    def _job_deadline(self, job: Job) -> None:
        """A deadline of a cut request passed: fail those due, watch the next."""
        job.timer = None
        now = self._loop.time()
        for request in job.batch.requests:
            if request.deadline is not None and request.deadline <= now:
                self._expire(request, now, ran=job.attempts > 0)
        self._watch_deadlines(job)

    # -- running batches (one path for every partition kind) ---------------------------------

    def _dispatch(self, gen: Generation, slot: Slot, job: Job) -> None:
        loop = self._loop
        job.attempts += 1
        start = job.start = loop.time()
        if job.attempts == 1:
            job.started = start
        slot.job = job
        runner = slot.runner
        try:
            runner.run(job.inputs, functools.partial(self._done, gen, slot, job))  # type: ignore[arg-type]
        except Exception as exc:
            # A runner that cannot take a batch is broken: its partition is killed (the
            # supervisor restarts it) and the batch counts as crashed there.
            loop.call_soon(self._done, gen, slot, job, Crashed(exc))
            slot.pid.exit(KILL)
            return
        timeout = self.options.call_timeout
        if timeout is not None:
            slot.timer = loop.call_at(start + timeout, self._overran, slot, job, timeout)

    def _overran(self, slot: Slot, job: Job, timeout: float) -> None:
        if slot.job is job:
            slot.timer = None
            slot.runner.abort(CallTimeout(slot.pid, timeout))

    def _done(self, gen: Generation, slot: Slot, job: Job, outcome: object) -> None:
        """On the loop: the partition finished ``job`` with ``outcome``."""
        if slot.job is not job:
            return  # the server stopped meanwhile: already failed
        self._take_job(slot)
        try:
            if isinstance(outcome, Crashed):
                self._crashed(gen, slot, job, outcome.error)
            else:
                slot.batches += 1
                gen.release(slot)
                if isinstance(outcome, ModelFailed):
                    self._model_failed(job, outcome.error)
                else:
                    self._deliver(gen, slot, job, outcome, self._loop.time() - job.start)
        except Exception as exc:  # anything raised while answering fails this job alone
            logger.exception("serving '%s': answering a batch failed", self.name)
            self._fail(job, exc)
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

    def _model_failed(self, job: Job, error: Exception) -> None:
        live = job.live()
        if not self.options.isolate_errors or len(live) < 2:
            self._fail(job, error)
            return
        job.close()
        self.counters.split += 1
        telemetry.emit(
            SPLIT_EVENT, {"requests": len(live)}, {"serving": self.name, "reason": "error"}
        )
        self._requeue(self._split(job.batch, 2, crashes=job.crashes))

    def _crashed(self, gen: Generation, slot: Slot, job: Job, error: Exception) -> None:
        slot.crashes += 1
        slot.down = True  # until recover sees it restarted (and so the exit watch stays out)
        gen.release_check()
        crashes = job.crashes + 1
        telemetry.emit(
            CRASH_EVENT,
            {"attempts": job.attempts, "crashes": crashes},
            {"serving": self.name, "version": gen.version, "partition": slot.index,
             "reason": error},
        )  # fmt: skip
        logger.warning(
            "serving '%s': partition %d (version %s) died running a batch of %d: %r",
            self.name, slot.index, gen.version, job.batch.size, error,
        )  # fmt: skip
        self.start_task(gen.recover(slot))
        live = job.live()
        if crashes > self.options.retry_on_crash:
            self._fail(job, PartitionCrashed(self.name, str(slot.index), crashes, error))
        elif len(live) > 1:
            # One of them may be what kills the worker: each runs alone from now on.
            job.close()
            self.counters.retried += 1
            self._requeue(self._split(job.batch, len(live), crashes=crashes))
        elif live:
            job.crashes = crashes
            self.counters.retried += 1
            self._requeue([job])
        else:
            job.close()

    def _deliver(
        self, gen: Generation, slot: Slot, job: Job, output: object, compute: float
    ) -> None:
        job.close()
        rows = split_output(self.name, job, output)
        batch = job.batch
        version = gen.version
        counters = self.counters
        n = 0
        try:
            for fut, row in zip(job.futs, rows, strict=False):
                if not fut.done():
                    fut.set_result(new_result(Result, (row, version)))
                    n += 1
        finally:
            counters.completed += n  # those answered, even if the next one raised
            self._ended_requests("completed", n, version)
        requests = batch.requests
        started = job.started
        counters.batches += 1
        counters.samples += batch.size
        counters.sizes[batch.size] = counters.sizes.get(batch.size, 0) + 1
        counters.waited += len(requests)
        # Latency: arrival to answer (now: this attempt's start plus its compute).
        now = job.start + compute
        if len(requests) == 1:  # no arrays for one request: a third of its cost otherwise
            first = requests[0].arrived
            counters.wait_total += started - first
            if n:
                counters.record_latency(now - first)
        else:
            arrivals = np.fromiter(map(arrived, requests), np.float64, len(requests))
            counters.wait_total += len(requests) * started - float(arrivals.sum())
            if n != len(requests):  # rare: some had expired or were cancelled meanwhile
                futs = job.futs
                arrivals = arrivals[[not f.cancelled() and f.exception() is None for f in futs]]
            counters.record_latencies(now - arrivals)
        key = batch.key
        counters.record_bucket(
            now,
            key.length if type(key) is Bucket else None,
            len(requests),
            batch.size,
            job.elements,
            job.padded_elements,
            batch.promoted,
        )
        oldest = started - requests[0].arrived
        counters.wait_max = max(counters.wait_max, oldest)
        counters.compute_total += compute
        counters.compute_max = max(counters.compute_max, compute)
        if self._drop_late_on:
            # The recent compute time, by which drop_late judges a request too late to run.
            margin = self._late_margin
            self._late_margin = compute if margin == 0.0 else 0.8 * margin + 0.2 * compute
        if telemetry.has_handlers(BATCH_EVENT):
            telemetry.emit(
                BATCH_EVENT,
                {
                    "size": batch.size,
                    "padded_size": batch.padded_size,
                    "requests": len(requests),
                    "wait": oldest,
                    "compute": compute,
                    "attempts": job.attempts,
                },
                {
                    "serving": self.name,
                    "version": version,
                    "partition": slot.index,
                    "key": self._user_key(batch.key),
                    "reason": batch.reason,
                },
            )

    def _fail(self, job: Job, exc: BaseException) -> None:
        job.close()
        self._fail_requests(job.batch.requests, exc)

    def _fail_requests(self, requests: tuple[Request, ...], exc: BaseException) -> None:
        failed = 0
        for request in requests:
            fut = payload_of(request)[1]
            if not fut.done():
                fut.set_exception(exc)
                failed += 1
        self.counters.failed += failed
        self._ended_requests("failed", failed)

    def _ended_requests(self, outcome: str, count: int, version: str | None = None) -> None:
        """``count`` requests ended with ``outcome``: tell ``REQUESTS_EVENT``'s handlers
        (one dictionary lookup when there are none; one event per batch, not per request)."""
        if count and telemetry.has_handlers(REQUESTS_EVENT):
            telemetry.emit(
                REQUESTS_EVENT,
                {"count": count},
                {
                    "serving": self.name,
                    "version": self.version if version is None else version,
                    "outcome": outcome,
                },
            )

    def _fail_all(self, exc: BaseException) -> None:
        while self._retry:
            self._fail(self._retry.popleft(), exc)
        while (batch := self.policy.cut(0.0, force=True)) is not None:
            self._fail_requests(batch.requests, exc)

    # -- statistics --------------------------------------------------------------------------

    def in_flight(self) -> int:
        """Requests accepted and not answered yet: queued, waiting for a retry, or running."""
        jobs = [*self._retry, *(s.job for g in self.versions for s in g.slots if s.job)]
        return len(self.policy) + sum(not f.done() for job in jobs for f in job.futs)

    def partition_pids(self) -> tuple[Pid, ...]:
        """The current version's partition processes, in index order."""
        current = self.versions.current
        return () if current is None else tuple(slot.pid for slot in current.slots)

    def statistics(self, window: float = 10.0) -> ServingStatistics:
        """A snapshot of this server's queue, counters and partitions; per-bucket figures
        also over the last ``window`` seconds."""
        parts: list[PartitionStatistics] = []
        current = self.versions.current
        serving = self.versions.serving
        for gen in self.versions:
            parts.extend(gen.statistics(draining=gen not in serving))
        version = "" if current is None else current.version
        return self.counters.snapshot(
            self.name,
            version,
            self.policy,
            tuple(parts),
            self.in_flight(),
            now=self._loop.time(),
            window=window,
        )


def make_policy(options: ServingOptions) -> BatchPolicy:
    """The batching policy ``options`` ask for (``batch_policy``, ``promote_buckets``)."""
    kwargs: dict[str, object] = {
        "batch_size": options.batch_size,
        "batch_timeout": options.batch_timeout,
        "max_queue": options.max_queue,
        "pad_to": options.pad_to,
    }
    if options.batch_policy is not None:
        policy = options.batch_policy(**kwargs)
        if not isinstance(policy, BatchPolicy):
            raise TypeError(
                f"serving: batch_policy must return a BatchPolicy; got {type(policy).__name__}"
            )
        return policy
    if options.promote_buckets:
        return PromotingPolicy(**kwargs, promote=options.promote_buckets)  # type: ignore[arg-type]
    return BatchPolicy(**kwargs)  # type: ignore[arg-type]


def _fixed_shapes(spec: Spec) -> bool:
    """Whether every shape in ``spec`` is fixed (no ``None`` axis)."""
    specs = (
        [spec]
        if isinstance(spec, InputSpec)
        else list(spec.values() if isinstance(spec, dict) else spec)
    )
    return all(d is not None for one in specs for d in one.shape)


def _conform(name: str, spec: Spec | None, value: object, single: bool) -> Value:
    """``conform`` with its arguments in the order ``RawBatch`` calls it."""
    return conform(name, value, spec, single=single)
