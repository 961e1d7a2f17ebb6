"""Weighted parameter averaging (FedAvg / local SGD): pure functions, no event loop.

``weighted_average([(params_1, n_1), ...])`` returns ``sum_k params_k * (n_k / N)`` per
name, with ``N = sum_k n_k``, in float64 and cast back to each array's dtype. A single
contribution is returned unchanged bit for bit (its weight is exactly 1.0), which is what
makes one worker equal to plain single-process training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["weighted_average"]

Arrays = Mapping[str, npt.NDArray[np.generic]]


def weighted_average(
    contributions: Sequence[tuple[Arrays, int]],
) -> dict[str, npt.NDArray[np.generic]]:
    """Average named arrays weighted by sample counts (see the module doc).

    ``ValueError`` when there are no contributions, a count is not an int >= 1, or the
    contributions disagree on names or shapes.
    """
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
    total = sum(count for _, count in contributions)
    out: dict[str, npt.NDArray[np.generic]] = {}
    for name in names:
        acc = np.zeros(first[name].shape, dtype=np.float64)
        for arrays, count in contributions:
            acc += np.asarray(arrays[name], dtype=np.float64) * (count / total)
        out[name] = acc.astype(first[name].dtype, copy=False)
    return out
