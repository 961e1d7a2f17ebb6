"""Partitions: the processes that run batches. One batch at a time each.

- ``ThreadPartition`` is an actor that owns one dedicated thread: ``init`` loads the model on
  it, ``handle_call(batch)`` runs ``model.run(batch)`` there (``loop.run_in_executor``), so
  the event loop stays free while numpy/torch/onnxruntime compute with the GIL released. An
  ``AsyncFunctionModel`` is awaited on the loop instead. A model error is returned as
  ``ModelFailed`` (the partition goes on); only a kill ends it. Killing it mid-batch leaves
  the thread to finish that batch; its result is dropped.
- ``"port"`` partitions are plain ``corral.port.Port`` processes running
  ``corral.serving.port_handler:ServingHandler``: a crash of the worker (SIGKILL, segfault,
  OOM) ends the port with ``PortExited`` and its supervisor restarts it.

``partition_spec`` builds the ``ChildSpec`` of either kind.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from corral.runtime.messages import ExitReason
from corral.runtime.process import Actor
from corral.runtime.supervisor import ChildSpec
from corral.serving.adapters import AsyncFunctionModel, Model
from corral.serving.factory import ModelFactory, factory_spec, load_model
from corral.serving.options import ServingOptions

__all__ = ["ModelFailed", "ThreadPartition", "partition_spec"]


@dataclass(frozen=True, slots=True)
class ModelFailed:
    """A thread partition's reply when the model raised: ``error`` is the exception."""

    error: Exception


class ThreadPartition(Actor):
    """Runs a model on a thread of its own; ``await pid.call(batch)`` returns its output or
    ``ModelFailed``. The call blocks the caller (not the loop) for the compute."""

    def __init__(self, factory: ModelFactory, *, device: str | None, label: str) -> None:
        self._factory = factory
        self._device = device
        self._label = label
        self._executor: ThreadPoolExecutor | None = None
        self._model: Model | None = None

    async def init(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"corral-{self._label}")
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(
            self._executor, lambda: load_model(self._factory, device=self._device)
        )

    async def handle_call(self, msg: object) -> object:
        model = self._model
        assert model is not None and self._executor is not None
        if not isinstance(msg, np.ndarray):
            raise TypeError(f"ThreadPartition {self._label}: expected an array; got {msg!r}")
        try:
            if isinstance(model, AsyncFunctionModel):
                return await model.run_async(msg)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, model.run, msg)
        except Exception as exc:
            return ModelFailed(exc)

    def terminate(self, reason: ExitReason) -> None:
        if self._executor is not None:
            if self._model is not None:
                self._executor.submit(self._model.close)
            self._executor.shutdown(wait=False)


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
