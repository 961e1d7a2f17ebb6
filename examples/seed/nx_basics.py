"""Seed sketch 5, "Nx basics": tensors, a transpose, a matrix product and a compiled
``linear_regression(x, weights, bias) = x @ weights + bias``.

Nx is Elixir's numerical library; its Python counterparts are numpy (eager, CPU) and JAX
(``jax.jit`` compiles for CPU, GPU or TPU, as Nx's EXLA backend does for ``defn``). The
numpy path always runs; the ``jax.jit`` path runs only when jax is importable. In a corral
service this is the code a ``Serving`` runs on thread or port partitions
(``corral.serving.adapters.jax.JaxModel`` wraps a jitted function); see docs/serving.md.

Run it::

    .venv/bin/python examples/seed/nx_basics.py
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def linear_regression(x: Array, weights: Array, bias: float) -> Array:
    """The seed's ``defn linear_regression``: ``dot(x, weights) + bias``."""
    return x @ weights + bias


def jitted_linear_regression() -> Callable[[Array, Array, float], Array] | None:
    """The same function compiled with ``jax.jit``, or None when jax is not installed."""
    try:
        import jax  # an optional engine: imported only here, only when asked for
    except ImportError:
        return None

    @jax.jit
    def compiled(x: Array, weights: Array, bias: float) -> Array:
        return x @ weights + bias

    def run(x: Array, weights: Array, bias: float) -> Array:
        return np.asarray(compiled(x, weights, bias))

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="accepted for symmetry; fast anyway")
    parser.add_argument("--no-jax", action="store_true", help="skip the jax.jit path")
    args = parser.parse_args(argv)

    # Nx.tensor([[1, 2], [3, 4]]): a 2x2 tensor of 64-bit integers (Nx's default is s64).
    t = np.array([[1, 2], [3, 4]], dtype=np.int64)
    print(f"tensor ({t.dtype}):\n{t}")
    print(f"transpose:\n{t.T}")
    print(f"tensor @ transpose:\n{t @ t.T}")

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3))
    weights = np.array([0.5, -1.0, 2.0])
    bias = 0.25
    y = linear_regression(x, weights, bias)
    print(f"linear_regression backend=numpy: {np.round(y, 6).tolist()}")

    jitted = None if args.no_jax else jitted_linear_regression()
    if jitted is None:
        print("linear_regression backend=jax: skipped (jax is not installed)")
    else:
        y_jax = jitted(x, weights, bias)
        # jax computes in float32 unless x64 is enabled: equal to numpy within float32.
        same = bool(np.allclose(y_jax, y, atol=1e-5))
        print(f"linear_regression backend=jax: {np.round(y_jax, 6).tolist()} (matches: {same})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
