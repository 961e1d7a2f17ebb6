"""The port worker side of ``"port"`` partitions: loads the model, runs one batch per call.

Runs in the worker OS process (``python -m corral.port corral.serving.port_handler:
ServingHandler``); ``setup`` imports the model factory named by ``factory``, calls it with
``factory_args`` / ``factory_kwargs`` (a ``functools.partial`` factory's) and loads the model
(blocking the worker, before it reports ready); ``handle_call(batch)`` runs it and returns the
output (an array, or a dict or tuple of arrays: msgpack carries maps and lists of arrays).
A model error fails only that call (``PortCallError``). ``threads`` (the serving's thread
budget) is given to the model's ``set_threads``.
"""

from __future__ import annotations

import numpy as np

from corral.serving.adapters import AsyncFunctionModel, Model
from corral.serving.factory import load_spec

__all__ = ["ServingHandler"]


class ServingHandler:
    """A port handler running one model."""

    def __init__(self) -> None:
        self.model: Model | None = None

    def setup(
        self,
        *,
        factory: str,
        factory_args: list[object] | None = None,
        factory_kwargs: dict[str, object] | None = None,
        device: str | None = None,
        threads: int = 0,
    ) -> None:
        model = load_spec(factory, factory_args or (), factory_kwargs, device=device)
        if threads:
            model.set_threads(threads)
        if isinstance(model, AsyncFunctionModel):
            raise TypeError(
                f"serving port worker: {factory} gave an async model; ports run plain models"
            )
        self.model = model

    def handle_call(self, batch: object) -> object:
        assert self.model is not None
        if type(batch) is list:  # a tuple batch (msgpack carries tuples as lists)
            batch = tuple(batch)
        if not isinstance(batch, np.ndarray | dict | tuple):
            raise TypeError(
                "serving port worker: expected a batch (an array, or a dict or tuple of "
                f"arrays); got {batch!r}"
            )
        return self.model.run(batch)

    def terminate(self) -> None:
        if self.model is not None:
            self.model.close()
