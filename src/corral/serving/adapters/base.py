"""The model interface a partition runs, and the plain-callable adapter."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import numpy as np

__all__ = ["AsyncFunctionModel", "FunctionModel", "Model", "one_array"]


class Model:
    """What a partition runs: ``run(batch)`` maps an array whose first axis is the batch to
    one array with the same first axis. Structured outputs (a tuple or dict of arrays) are
    not supported yet and are refused with a ``TypeError``, never split row-wise.

    ``run`` is called on the partition's own thread (``"thread"`` partitions) or in its
    worker process (``"port"``), one batch at a time; it blocks that thread for the compute.
    An exception fails the batch's requests with it. ``close()`` is called once when the
    partition stops.
    """

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the model holds; called once when its partition stops."""


class FunctionModel(Model):
    """A plain function on numpy arrays: ``fn(batch) -> array``."""

    def __init__(self, fn: Callable[[np.ndarray], object]) -> None:
        self.fn = fn

    def run(self, batch: np.ndarray) -> np.ndarray:
        return one_array(self.fn(batch))


def one_array(output: object) -> np.ndarray:
    """``output`` as one array; ``TypeError`` for a tuple or dict of arrays, which
    ``np.asarray`` would otherwise stack into an array of the wrong shape."""
    if isinstance(output, tuple | dict):
        raise TypeError(
            f"the model returned a {type(output).__name__} of {len(output)} items; structured "
            "outputs are not supported yet: return one array whose first axis is the batch"
        )
    return np.asarray(output)


class AsyncFunctionModel(Model):
    """An ``async def fn(batch)``: a ``"thread"`` partition awaits it on the node's event
    loop instead of running it on its thread, so it must not block. For models that await
    something (a remote service), and for tests that hold execution with a ``Gate``."""

    def __init__(self, fn: Callable[[np.ndarray], Awaitable[object]]) -> None:
        self.fn = fn

    async def run_async(self, batch: np.ndarray) -> np.ndarray:
        return one_array(await self.fn(batch))

    def run(self, batch: np.ndarray) -> np.ndarray:
        raise TypeError("AsyncFunctionModel runs on the event loop: await run_async(batch)")


def is_async_callable(fn: object) -> bool:
    """Whether ``fn`` is an ``async def`` function or an object with an ``async def
    __call__``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the method, not callability
    )
