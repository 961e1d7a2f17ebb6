"""Splitting a data set into worker shards: pure functions, no event loop.

By default shards are contiguous and as even as possible (``shard_bounds``). With a key
column (``split(data, shards, by="user")``, the trainer's ``shard_by``) every row with the
same key goes to the same shard: keys are dealt, largest first, to the shard with the fewest
rows so far (ties: the smaller key, then the lower shard), and each shard keeps its rows in
their original order, so one shard is the data set unchanged.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from corral.train.model import Data, rows

__all__ = ["key_shards", "shard_bounds", "split"]


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


def key_shards(key: npt.NDArray[np.generic], shards: int) -> list[npt.NDArray[np.int64]]:
    """Row indices (ascending) of each of ``shards`` shards such that equal values of
    ``key`` share a shard, balanced by rows (see the module doc). ``ValueError`` if there
    are fewer distinct keys than shards."""
    if type(shards) is not int or shards < 1:
        raise ValueError(f"key_shards: shards must be an int >= 1; got {shards!r}")
    values, inverse, counts = np.unique(np.asarray(key), return_inverse=True, return_counts=True)
    if len(values) < shards:
        raise ValueError(
            f"training data: {len(values)} distinct shard_by keys cannot fill {shards} worker "
            "shards; use fewer workers or another key"
        )
    load = np.zeros(shards, dtype=np.int64)
    owner = np.empty(len(values), dtype=np.int64)
    for j in np.lexsort((np.arange(len(values)), -counts)):  # largest first, then smaller key
        k = int(np.argmin(load))
        owner[j] = k
        load[k] += counts[j]
    assignment = owner[inverse.reshape(-1)]
    return [np.flatnonzero(assignment == k) for k in range(shards)]


def split(data: Data, shards: int, *, by: str | None = None) -> list[dict[str, np.ndarray]]:
    """``data`` cut into ``shards`` shards: contiguous (views, no copies), or by the key
    column ``by`` (copies; ``key_shards``)."""
    if by is None:
        return [
            {name: column[start:stop] for name, column in data.items()}
            for start, stop in shard_bounds(rows(data), shards)
        ]
    if by not in data:
        raise ValueError(f"split: by must be a column of the data ({', '.join(data)}); got {by!r}")
    rows(data)
    return [
        {name: column[index] for name, column in data.items()}
        for index in key_shards(data[by], shards)
    ]
