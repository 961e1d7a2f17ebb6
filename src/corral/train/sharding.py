"""Splitting a data set into worker shards: contiguous, as even as possible, pure."""

from __future__ import annotations

import numpy as np

from corral.train.model import Data, rows

__all__ = ["shard_bounds", "split"]


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges for ``shards`` contiguous shards of ``n`` rows; the
    first ``n % shards`` shards get one row more. ``ValueError`` if a shard would be empty."""
    if type(shards) is not int or shards < 1:
        raise ValueError(f"shard_bounds: shards must be an int >= 1; got {shards!r}")
    if n < shards:
        raise ValueError(
            f"training data: {n} rows cannot fill {shards} worker shards; "
            "use fewer workers or more data"
        )
    size, extra = divmod(n, shards)
    bounds, start = [], 0
    for k in range(shards):
        stop = start + size + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def split(data: Data, shards: int) -> list[dict[str, np.ndarray]]:
    """``data`` cut into ``shards`` contiguous shards (views, no copies)."""
    return [
        {name: column[start:stop] for name, column in data.items()}
        for start, stop in shard_bounds(rows(data), shards)
    ]
