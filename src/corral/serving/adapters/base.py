"""The model interface a partition runs, and the plain-callable adapter."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

__all__ = ["AsyncFunctionModel", "Batch", "FunctionModel", "Model", "as_output"]

Batch = np.ndarray | dict[str, np.ndarray] | tuple[np.ndarray, ...]
"""What ``Model.run`` is given: one array whose first axis is the batch, or a dict (or
tuple) of such arrays when the serving's requests are dicts (tuples) of arrays."""


class Model:
    """What a partition runs: ``run(batch)`` maps a batch (an array whose first axis is the
    batch, or a dict or tuple of them: ``Batch``) to an output with the same first axis: one
    array, or a dict or tuple of arrays (several outputs), which the serving splits per
    request field by field.

    ``run`` is called on the partition's own thread (``"thread"`` partitions) or in its
    worker process (``"port"``), one batch at a time; it blocks that thread for the compute.
    An exception fails the batch's requests with it. ``close()`` is called once when the
    partition stops.
    """

    # ``batch`` is a ``Batch``; typed Any so that a subclass may narrow it to what it takes
    # (``np.ndarray``, a dict) without breaking the override rule.
    def run(self, batch: Any) -> object:
        raise NotImplementedError

    def set_threads(self, threads: int) -> None:
        """Use ``threads`` native threads for the compute (the serving's ``threads``
        budget); called once on the partition's thread after loading. A no-op here."""

    def close(self) -> None:
        """Release what the model holds; called once when its partition stops."""


class FunctionModel(Model):
    """A plain function on numpy arrays: ``fn(batch) -> array`` (or a dict or tuple of
    arrays); a dict or tuple batch is passed as is."""

    def __init__(self, fn: Callable[[Batch], object]) -> None:
        self.fn = fn

    def run(self, batch: Batch) -> object:
        return as_output(self.fn(batch))


def as_output(output: object) -> object:
    """``output`` as one array, or, for a dict (a mapping) or tuple of outputs, a dict or
    tuple of arrays: never stacked into one array (``np.asarray`` would make one of the
    wrong shape)."""
    if isinstance(output, dict):
        return {k: np.asarray(v) for k, v in output.items()}
    if isinstance(output, tuple):
        return tuple(np.asarray(v) for v in output)
    return np.asarray(output)


class AsyncFunctionModel(Model):
    """An ``async def fn(batch)``: a ``"thread"`` partition awaits it on the node's event
    loop instead of running it on its thread, so it must not block. For models that await
    something (a remote service), and for tests that hold execution with a ``Gate``."""

    def __init__(self, fn: Callable[[Batch], Awaitable[object]]) -> None:
        self.fn = fn

    async def run_async(self, batch: Batch) -> object:
        return as_output(await self.fn(batch))

    def run(self, batch: Batch) -> object:
        raise TypeError("AsyncFunctionModel runs on the event loop: await run_async(batch)")


def is_async_callable(fn: object) -> bool:
    """Whether ``fn`` is an ``async def`` function or an object with an ``async def
    __call__``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callability
    )
