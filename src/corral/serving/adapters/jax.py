"""``jax.jit`` functions. jax is imported when a ``JaxModel`` is made, not before."""

from __future__ import annotations

from collections.abc import Callable

from corral._extras import require
from corral.serving.adapters.base import Batch, Model, as_output

__all__ = ["JaxModel"]


class JaxModel(Model):
    """Runs a (jitted) jax function on the batch and waits for the result on the host (a
    dict batch is passed as one dict, a tuple batch as positional arguments).
    Pad to fixed sizes (``pad_to``) so jit compiles once per size."""

    def __init__(self, fn: Callable[[object], object]) -> None:
        self._jnp = require("jax.numpy", extra="jax", by="corral's JaxModel")
        self.fn = fn

    def run(self, batch: Batch) -> object:
        jnp = self._jnp
        if isinstance(batch, dict):
            return as_output(self.fn({k: jnp.asarray(v) for k, v in batch.items()}))
        if isinstance(batch, tuple):
            return as_output(self.fn(*(jnp.asarray(v) for v in batch)))
        return as_output(self.fn(jnp.asarray(batch)))
