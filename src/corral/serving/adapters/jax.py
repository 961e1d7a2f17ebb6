"""``jax.jit`` functions. jax is imported when a ``JaxModel`` is made, not before."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from corral._extras import require
from corral.serving.adapters.base import Model, one_array

__all__ = ["JaxModel"]


class JaxModel(Model):
    """Runs a (jitted) jax function on the batch and waits for the result on the host.
    Pad to fixed sizes (``pad_to``) so jit compiles once per size."""

    def __init__(self, fn: Callable[[object], object]) -> None:
        self._jnp = require("jax.numpy", extra="jax", by="corral's JaxModel")
        self.fn = fn

    def run(self, batch: np.ndarray) -> np.ndarray:
        return one_array(self.fn(self._jnp.asarray(batch)))
