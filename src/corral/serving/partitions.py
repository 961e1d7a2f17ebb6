"""Partitions: the processes that run batches. One batch at a time each.

- ``ThreadPartition`` is an actor that owns one dedicated thread: ``init`` loads the model on
  it; batches run there while the event loop stays free (numpy/torch/onnxruntime compute with
  the GIL released). The server hands batches to the thread directly (``run_batch``: a queue
  put, and one ``loop.call_soon_threadsafe`` back with the output), with no message and no
  task per batch; ``await pid.call(batch)`` does the same for other callers (swap warm-ups).
  An ``AsyncFunctionModel`` is awaited on the loop instead, in ``handle_call``. A model error
  is returned as ``ModelFailed`` (the partition goes on); only a kill ends it. Killing it
  mid-batch leaves the thread to finish that batch; its result is dropped. However the
  partition ends, its thread closes the model and exits after the batch it is running.
- ``"port"`` partitions are plain ``corral.port.Port`` processes running
  ``corral.serving.port_handler:ServingHandler``: a crash of the worker (SIGKILL, segfault,
  OOM) ends the port with ``PortExited`` and its supervisor restarts it.

``partition_spec`` builds the ``ChildSpec`` of either kind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from queue import SimpleQueue

import numpy as np

from corral.runtime.messages import ExitReason
from corral.runtime.process import Actor
from corral.runtime.supervisor import ChildSpec
from corral.serving.adapters import AsyncFunctionModel, Model
from corral.serving.factory import ModelFactory, factory_spec, load_model
from corral.serving.options import ServingOptions

__all__ = ["ModelFailed", "ThreadPartition", "partition_spec"]

logger = logging.getLogger("corral.serving")


@dataclass(frozen=True, slots=True)
class ModelFailed:
    """A thread partition's reply when the model raised: ``error`` is the exception."""

    error: Exception


Done = Callable[[object], None]
"""Called on the loop thread with a job's output (or ``ModelFailed``)."""

_Work = tuple[Callable[[object], object], object, Done]
_STOP = None


def _resolve(fut: asyncio.Future[object], value: object) -> None:
    if not fut.done():
        fut.set_result(value)


class ThreadPartition(Actor):
    """Runs a model on a thread of its own; ``await pid.call(batch)`` returns its output or
    ``ModelFailed``. The call blocks the caller (not the loop) for the compute."""

    def __init__(self, factory: ModelFactory, *, device: str | None, label: str) -> None:
        self._factory = factory
        self._device = device
        self._label = label
        self._jobs: SimpleQueue[_Work | None] = SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._model: Model | None = None

    @property
    def threaded(self) -> bool:
        """Whether batches run on the partition's thread (``run_batch``); False for an
        async model, which runs on the loop through ``pid.call``."""
        return self._model is not None and not isinstance(self._model, AsyncFunctionModel)

    async def init(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        fut: asyncio.Future[object] = loop.create_future()
        # Queued before the thread starts, the load runs while start() waits for the thread
        # to come up (as in a ThreadPoolExecutor): a fast load is done before the loop next
        # idles, which keeps virtual-time tests from jumping the clock past it.
        self._jobs.put((self._load, None, functools.partial(_resolve, fut)))
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
        if not isinstance(msg, np.ndarray):
            raise TypeError(f"ThreadPartition {self._label}: expected an array; got {msg!r}")
        if isinstance(model, AsyncFunctionModel):
            try:
                return await model.run_async(msg)
            except Exception as exc:
                return ModelFailed(exc)
        fut: asyncio.Future[object] = self._loop.create_future()
        self.run_batch(msg, functools.partial(_resolve, fut))
        return await fut

    def run_batch(self, batch: np.ndarray, done: Done) -> None:
        """Queue ``batch`` for the thread (loop thread only; does not block); ``done`` is
        called on the loop with the output or ``ModelFailed``, unless the loop has closed."""
        model = self._model
        assert model is not None
        self._jobs.put((model.run, batch, done))  # type: ignore[arg-type]

    def _load(self, _: object) -> None:
        # Set on the thread, so that the thread closes a model loaded after a kill, too.
        self._model = load_model(self._factory, device=self._device)

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


def partition_spec(
    factory: ModelFactory, options: ServingOptions, *, index: int, label: str
) -> ChildSpec:
    """The child spec of partition ``index`` for ``factory`` under ``options``."""
    if options.kind == "thread":
        return ChildSpec(
            id=f"partition-{index}",
            start=lambda: ThreadPartition(factory, device=options.device, label=label),
        )
    from corral.port import Port

    path, factory_args, factory_kwargs = factory_spec(factory)
    port_options = dict(options.port_options)
    args: dict[str, object] = {"factory": path}
    if factory_args or factory_kwargs:
        args["factory_args"] = factory_args
        args["factory_kwargs"] = factory_kwargs
    if options.device is not None:
        args["device"] = options.device
    return ChildSpec(
        id=f"partition-{index}",
        start=lambda: Port("corral.serving.port_handler:ServingHandler", args=args, **port_options),
    )
