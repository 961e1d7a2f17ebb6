"""Weighted parameter averaging (FedAvg / local SGD): pure functions, no event loop.

``weighted_average([(params_1, n_1), ...])`` returns ``sum_k params_k * (n_k / N)`` per
name, with ``N = sum_k n_k``, in float64 and cast back to each array's dtype. A single
contribution is returned unchanged bit for bit (its weight is exactly 1.0), which is what
makes one worker equal to plain single-process training.

Per-row averaging (``row_counts``): for a parameter whose rows belong to keys of the data
(an embedding table: row ``u`` of a user matrix is trained only by user ``u``'s samples),
averaging whole arrays by shard size dilutes a row's update by the workers whose shard
never touched it. With ``row_counts[k][name][r]`` the number of worker ``k``'s samples
that touch row ``r`` of ``name``, that row is averaged as
``sum_k params_k[r] * c_kr / sum_k c_kr`` instead: a row only one shard touched takes that
shard's row as it is. Rows that no shard touched get the ordinary sample-weighted average.
Names without row counts are averaged whole, as above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["weighted_average"]

Arrays = Mapping[str, npt.NDArray[np.generic]]


def weighted_average(
    contributions: Sequence[tuple[Arrays, int]],
    *,
    row_counts: Sequence[Arrays] | None = None,
) -> dict[str, npt.NDArray[np.generic]]:
    """Average named arrays weighted by sample counts, and per row by ``row_counts`` (one
    mapping per contribution, of name to a non-negative int vector with one entry per row
    of that array; see the module doc).

    ``ValueError`` when there are no contributions, a count is not an int >= 1, or the
    contributions (or row counts) disagree on names or shapes.
    """
    names = _check(contributions)
    first = contributions[0][0]
    rows = _check_rows(row_counts, first, len(contributions))
    counts = np.array([count for _, count in contributions], dtype=np.float64)
    sample_weights = counts / counts.sum()
    out: dict[str, npt.NDArray[np.generic]] = {}
    for name in names:
        weights = _row_weights(rows[name], sample_weights) if name in rows else sample_weights
        acc = np.zeros(first[name].shape, dtype=np.float64)
        for k, (arrays, _) in enumerate(contributions):
            weight = weights[k].reshape(weights[k].shape + (1,) * (acc.ndim - weights[k].ndim))
            acc += np.asarray(arrays[name], dtype=np.float64) * weight
        out[name] = acc.astype(first[name].dtype, copy=False)
    return out


def _check(contributions: Sequence[tuple[Arrays, int]]) -> list[str]:
    if not contributions:
        raise ValueError("weighted_average: needs at least one contribution; got none")
    for _, count in contributions:
        if type(count) is not int or count < 1:
            raise ValueError(f"weighted_average: sample counts must be ints >= 1; got {count!r}")
    first = contributions[0][0]
    names = sorted(first)
    for arrays, _ in contributions[1:]:
        if sorted(arrays) != names:
            raise ValueError(
                f"weighted_average: every contribution must have the names {names}; "
                f"got {sorted(arrays)}"
            )
        for name in names:
            if arrays[name].shape != first[name].shape:
                raise ValueError(
                    f"weighted_average: '{name}' must have shape {first[name].shape} in every "
                    f"contribution; got {arrays[name].shape}"
                )
    return names


def _check_rows(
    row_counts: Sequence[Arrays] | None, first: Arrays, contributions: int
) -> dict[str, npt.NDArray[np.float64]]:
    """The row counts stacked per name, shape (contributions, rows), checked."""
    if row_counts is None:
        return {}
    if len(row_counts) != contributions:
        raise ValueError(
            f"weighted_average: row_counts needs one mapping per contribution "
            f"({contributions}); got {len(row_counts)}"
        )
    names = sorted(row_counts[0]) if row_counts else []
    out: dict[str, npt.NDArray[np.float64]] = {}
    for name in names:
        if name not in first or first[name].ndim == 0:
            raise ValueError(
                f"weighted_average: row_counts name '{name}' must be an array parameter "
                f"with rows; the parameters are {sorted(first)}"
            )
        shape = (first[name].shape[0],)
        stacked = []
        for counts in row_counts:
            c = counts.get(name)
            if c is None or c.shape != shape or not np.issubdtype(c.dtype, np.integer):
                got = None if c is None else f"{c.dtype} {c.shape}"
                raise ValueError(
                    f"weighted_average: row_counts['{name}'] must be an int array of shape "
                    f"{shape} in every contribution; got {got}"
                )
            if c.size and int(c.min()) < 0:
                raise ValueError(f"weighted_average: row_counts['{name}'] must be >= 0")
            stacked.append(c)
        out[name] = np.stack(stacked).astype(np.float64)
    return out


def _row_weights(
    counts: npt.NDArray[np.float64], sample_weights: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Per-row weights, shape (contributions, rows): ``c_kr / sum_k c_kr``, or the sample
    weights for rows no contribution counted."""
    total = counts.sum(axis=0)
    touched = total > 0
    weights = np.empty_like(counts)
    weights[:, touched] = counts[:, touched] / total[touched]
    weights[:, ~touched] = sample_weights[:, None]
    return weights
