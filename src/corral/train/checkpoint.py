"""Checkpoints: parameters, optimizer state and the round number in one ``.npz`` file.

``save`` writes to a temporary file beside the target and renames it over the target
(``os.replace``), so a crash mid-write leaves the previous checkpoint intact. Arrays are
stored as ``param/<name>`` and ``state/<name>``, the round as ``round``; ``load`` reads
them back without pickle (``allow_pickle=False``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["Checkpoint", "load", "save"]


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: ``round`` is the last completed round (0-based)."""

    round: int
    parameters: dict[str, npt.NDArray[np.generic]]
    optimizer_state: dict[str, npt.NDArray[np.generic]]


def save(
    path: str | os.PathLike[str],
    round: int,
    parameters: Mapping[str, npt.NDArray[np.generic]],
    optimizer_state: Mapping[str, npt.NDArray[np.generic]] | None = None,
) -> None:
    """Write the checkpoint atomically (see the module doc); blocks on the file system."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, npt.NDArray[np.generic]] = {"round": np.array(round, dtype=np.int64)}
    arrays.update({f"param/{k}": np.asarray(v) for k, v in parameters.items()})
    arrays.update({f"state/{k}": np.asarray(v) for k, v in (optimizer_state or {}).items()})
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as file:
        np.savez(file, **arrays)  # type: ignore[arg-type]
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, target)


def load(path: str | os.PathLike[str]) -> Checkpoint | None:
    """The checkpoint at ``path``, or None when there is no file."""
    if not Path(path).exists():
        return None
    with np.load(path, allow_pickle=False) as archive:
        params = {k[6:]: archive[k] for k in archive.files if k.startswith("param/")}
        state = {k[6:]: archive[k] for k in archive.files if k.startswith("state/")}
        return Checkpoint(int(archive["round"]), params, state)
