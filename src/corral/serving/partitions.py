"""Partitions: the processes that run batches. One batch at a time each.

- ``ThreadPartition`` is an actor that owns one dedicated thread: ``init`` loads the model on
  it, and the thread closes the model when the partition ends, however it ends. Its runner
  (``ThreadRunner``) hands each batch to the thread (a queue put, and one
  ``loop.call_soon_threadsafe`` back with the output), with no message and no task per
  batch, while the event loop stays free (numpy/torch/onnxruntime compute with the GIL
  released). Killing the partition mid-batch reports the batch as crashed at once; the thread
  finishes it and the late output is dropped. A ``RawBatch`` (``preprocess_in="partition"``)
  is prepared on the thread first (the preprocess hook, the contract, the stacking).
- With ``inline=True`` (``kind="loop"``) the model still loads and closes on that thread, but
  its runner (``LoopRunner``) runs each batch inline on the event loop: no thread hand-off,
  for models whose batch takes well under a millisecond; the loop is blocked for the compute.
- An ``AsyncFunctionModel`` is awaited on the loop in ``handle_call`` (a ``CallRunner``).
- ``"port"`` partitions are plain ``corral.port.Port`` processes running
  ``corral.serving.port_handler:ServingHandler``; a ``CallRunner`` sends them batches. A
  crash of the worker (SIGKILL, segfault, OOM) ends the port with ``PortExited`` and its
  supervisor restarts it.
- ``"ray"`` partitions are Ray actors owned by stand-in processes, with a ``RayRunner``: one
  Ray call per batch (``corral.cluster.serving``).

``partition_spec`` builds the ``ChildSpec`` of any kind; ``runner_for`` the runner of a
started partition.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable
from queue import SimpleQueue

import numpy as np

from corral.errors import ProcessExited
from corral.runtime.messages import ExitReason
from corral.runtime.process import Actor, Pid
from corral.runtime.supervisor import ChildSpec
from corral.serving.adapters import AsyncFunctionModel, Model
from corral.serving.factory import ModelFactory, factory_spec, load_model
from corral.serving.fields import RawBatch
from corral.serving.options import ServingOptions, thread_budget
from corral.serving.runners import (
    CallRunner,
    Crashed,
    Done,
    ModelFailed,
    Runner,
    Spawn,
    resolve,
)

__all__ = [
    "RUNNER",
    "THREAD_VARIABLES",
    "ThreadPartition",
    "partition_spec",
    "runner_for",
    "worker_path",
]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
"""The environment variables a port worker's native libraries size their pools by."""

logger = logging.getLogger("corral.serving")

RUNNER = ("corral.serving", "runner")
"""The call a ``ThreadPartition`` answers with its runner (None for an async model)."""

_Work = tuple[Callable[[object], object], object, Done]
_STOP = None


class ThreadPartition(Actor):
    """Loads a model on a thread of its own and runs its batches there (or, ``inline``, on
    the loop). ``await pid.call(RUNNER)`` returns its runner; ``await pid.call(batch)``
    returns the output or ``ModelFailed`` (blocking the caller, not the loop)."""

    def __init__(
        self,
        factory: ModelFactory,
        *,
        device: str | None,
        label: str,
        inline: bool = False,
        threads: int = 0,
    ) -> None:
        self._factory = factory
        self._device = device
        self._threads = threads
        self._label = label
        self._inline = inline
        self._jobs: SimpleQueue[_Work | None] = SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model: Model | None = None

    async def init(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        # Queued before the thread starts, the load runs while start() waits for the thread
        # to come up (as in a ThreadPoolExecutor): a fast load is done before the loop next
        # idles, which keeps virtual-time tests from jumping the clock past it.
        self._jobs.put((self._load, None, functools.partial(resolve, fut)))
        name = f"corral-{self._label}"
        # A daemon: a node left running at interpreter exit must not hang it on this thread.
        threading.Thread(target=self._work, args=(loop,), name=name, daemon=True).start()
        # However the process ends (a kill included), the thread stops after its batch.
        self.pid.add_exit_callback(self._stop_thread)
        loaded = await fut
        if isinstance(loaded, ModelFailed):
            raise loaded.error

    async def handle_call(self, msg: object) -> object:
        model = self._model
        assert model is not None and self._loop is not None
        if msg is RUNNER:
            if isinstance(model, AsyncFunctionModel):
                return None
            return LoopRunner(self.pid, model) if self._inline else ThreadRunner(self.pid, self)
        if type(msg) is RawBatch:
            msg = msg.prepare()  # an async model: prepared here, on the loop
        if not isinstance(msg, np.ndarray | dict | tuple):
            raise TypeError(
                f"ThreadPartition {self._label}: expected a batch (an array, or a dict or "
                f"tuple of arrays); got {msg!r}"
            )
        if isinstance(model, AsyncFunctionModel):
            try:
                return await model.run_async(msg)
            except Exception as exc:
                return ModelFailed(exc)
        fut: asyncio.Future[object] = self._loop.create_future()
        self.run_batch(msg, functools.partial(resolve, fut))
        return await fut

    def run_batch(self, batch: object, done: Done) -> None:
        """Queue ``batch`` for the thread (loop thread only; does not block); ``done`` is
        called on the loop with the output or ``ModelFailed``, unless the loop has closed."""
        model = self._model
        assert model is not None
        if type(batch) is RawBatch:  # preprocess_in="partition": prepared on the thread
            self._jobs.put((functools.partial(_prepared, model.run), batch, done))
        else:
            self._jobs.put((model.run, batch, done))

    def _load(self, _: object) -> None:
        # Set on the thread, so that the thread closes a model loaded after a kill, too.
        model = self._model = load_model(self._factory, device=self._device)
        if self._threads:
            model.set_threads(self._threads)

    def _stop_thread(self, reason: ExitReason) -> None:
        self._jobs.put(_STOP)

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        """The partition's thread: run jobs until told to stop, then close the model."""
        jobs = self._jobs
        while (item := jobs.get()) is not _STOP:
            fn, arg, done = item
            try:
                out = fn(arg)
            except Exception as exc:
                out = ModelFailed(exc)
            try:
                loop.call_soon_threadsafe(done, out)
            except RuntimeError:  # the loop has closed: nobody waits for anything any more
                break
        model = self._model
        if model is not None:
            try:
                model.close()
            except Exception:
                logger.exception("serving partition %s: closing the model failed", self._label)


class ThreadRunner(Runner):
    """Hands each batch to a ``ThreadPartition``'s thread; the partition's exit (a kill
    mid-batch) reports the batch as crashed at once."""

    def __init__(self, pid: Pid, partition: ThreadPartition) -> None:
        super().__init__(pid)
        self._partition = partition
        pid.add_exit_callback(self._exited)

    def _start(self, batch: object) -> None:
        self._partition.run_batch(batch, self._ran)

    def _ran(self, output: object) -> None:
        if self.pid.alive:  # after a kill the batch was reported crashed: drop the output
            self._finish(output)

    def _exited(self, reason: ExitReason) -> None:
        self._finish(Crashed(ProcessExited(self.pid, reason)))


class LoopRunner(Runner):
    """Runs each batch inline on the event loop, in a callback of its own (``kind="loop"``):
    no thread hand-off; the loop is blocked for the compute."""

    def __init__(self, pid: Pid, model: Model) -> None:
        super().__init__(pid)
        self._model = model
        pid.add_exit_callback(self._exited)

    def _start(self, batch: object) -> None:
        self._loop.call_soon(self._run, batch)

    def _run(self, batch: object) -> None:
        if self._pending is None:
            return  # killed meanwhile
        try:
            if type(batch) is RawBatch:
                batch = batch.prepare()
            out: object = self._model.run(batch)
        except Exception as exc:
            out = ModelFailed(exc)
        self._finish(out)

    def _exited(self, reason: ExitReason) -> None:
        self._finish(Crashed(ProcessExited(self.pid, reason)))


def _prepared(run: Callable[[object], object], batch: RawBatch) -> object:
    return run(batch.prepare())


async def runner_for(pid: Pid, options: ServingOptions, spawn: Spawn) -> Runner:
    """The runner of the started partition ``pid`` (of ``options.kind``); ``spawn`` owns the
    tasks of a ``CallRunner``."""
    if options.kind == "port":
        from corral.port import Port

        return CallRunner(pid, spawn, Port.os_pid_of)
    if options.kind == "ray":
        from corral.cluster.serving import RayRunner

        return RayRunner(pid, spawn)
    runner = await pid.call(RUNNER)
    if isinstance(runner, Runner):
        return runner
    return CallRunner(pid, spawn)


def worker_path() -> str:
    """``sys.path`` entries a port worker would not find by itself: those outside this
    interpreter's installation (the current directory for ``''``, a script's folder, paths
    added at run time), joined for ``PYTHONPATH``."""
    prefixes = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    entries: list[str] = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        inside = any(path == p or path.startswith(p + os.sep) for p in prefixes)
        if not inside and os.path.isdir(path) and path not in entries:
            entries.append(path)
    return os.pathsep.join(entries)


def partition_spec(
    factory: ModelFactory, options: ServingOptions, *, index: int, label: str
) -> ChildSpec:
    """The child spec of partition ``index`` for ``factory`` under ``options``."""
    if options.kind == "ray":
        from corral.cluster.serving import ray_partition_spec

        return ray_partition_spec(
            factory_spec(factory),
            index=index,
            label=label,
            device=options.device,
            num_cpus=options.num_cpus,
            num_gpus=options.num_gpus,
            ray_options=dict(options.ray_options),
            pythonpath=worker_path() if options.inherit_sys_path else "",
        )
    threads = thread_budget(options)
    if options.kind != "port":
        inline = options.kind == "loop"
        return ChildSpec(
            id=f"partition-{index}",
            start=lambda: ThreadPartition(
                factory, device=options.device, label=label, inline=inline, threads=threads
            ),
        )
    from corral.port import Port

    path, factory_args, factory_kwargs = factory_spec(factory)
    port_options = dict(options.port_options)
    env = dict(port_options.get("env") or {})  # type: ignore[call-overload]
    if options.inherit_sys_path and (extra := worker_path()):
        own = env.get("PYTHONPATH")
        env["PYTHONPATH"] = extra if not own else own + os.pathsep + extra
    if threads:
        # Read by OpenMP, MKL and OpenBLAS when the worker loads them; the user's own win.
        for var in THREAD_VARIABLES:
            env.setdefault(var, str(threads))
    if env:
        port_options["env"] = env
    args: dict[str, object] = {"factory": path}
    if factory_args or factory_kwargs:
        args["factory_args"] = factory_args
        args["factory_kwargs"] = factory_kwargs
    if options.device is not None:
        args["device"] = options.device
    if threads:
        args["threads"] = threads
    return ChildSpec(
        id=f"partition-{index}",
        start=lambda: Port("corral.serving.port_handler:ServingHandler", args=args, **port_options),
    )
