"""The recommender the demo trains and serves: implicit matrix factorization with fold-in.

Training (``implicit_ratings``) turns each rating into a positive (target 1) and samples
``negatives`` unrated items per positive (target 0); ``corral.train``'s biased
``MatrixFactorization`` learns item factors ``Q``, item biases ``bi`` (popularity, in effect)
and user factors ``P``.

Serving (``load`` -> ``Recommender``, run in port partitions): a request is one user and
everything they have seen so far, packed into bytes by ``encode_request``. The model folds
the seen items in: it solves the ridge problem ``(Qs'Qs + l2 I) p = Qs'(1 - mu - bs) + l2 p0``
for the user's vector ``p``, where ``p0`` is their trained ``P`` row (zero for a user who
first appeared after training). So a brand-new user gets personal recommendations from their
first events on, and everyone's recommendations move with what they just did. It returns the
``TOP`` best unseen items per request, best first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from corral.serving.adapters import Model

__all__ = [
    "TOP",
    "Recommender",
    "decode_request",
    "encode_request",
    "implicit_ratings",
    "load",
    "save",
]

TOP = 10
_F64 = npt.NDArray[np.float64]


def implicit_ratings(
    user: npt.NDArray[np.int64],
    item: npt.NDArray[np.int64],
    *,
    items: int,
    negatives: int,
    seed: int,
) -> dict[str, npt.NDArray[np.generic]]:
    """Training columns for ``MatrixFactorization``: every (user, item) pair seen with
    target 1, plus ``negatives`` uniformly sampled items per pair with target 0, shuffled."""
    rng = np.random.default_rng(seed)
    neg_user = np.repeat(user, negatives)
    neg_item = rng.integers(0, items, len(neg_user))
    users = np.concatenate([user, neg_user])
    order = rng.permutation(len(users))
    return {
        "user": users[order],
        "item": np.concatenate([item, neg_item])[order],
        "rating": np.concatenate([np.ones(len(user)), np.zeros(len(neg_user))])[order],
    }


def encode_request(user: int, seen: npt.NDArray[np.bool_]) -> npt.NDArray[np.uint8]:
    """One request: the user index (2 bytes, little endian) and the packed seen-items mask."""
    if not 0 <= user < 65536:
        raise ValueError(f"user index must be in [0, 65536); got {user}")
    out = np.empty(2 + (len(seen) + 7) // 8, np.uint8)
    out[0], out[1] = user & 0xFF, user >> 8
    out[2:] = np.packbits(seen)
    return out


def decode_request(
    batch: npt.NDArray[np.uint8], items: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """(users, seen masks) of a batch of requests."""
    users = batch[:, 0].astype(np.int64) | (batch[:, 1].astype(np.int64) << 8)
    seen = np.unpackbits(batch[:, 2:], axis=1, count=items).astype(bool)
    return users, seen


class Recommender(Model):
    """Top-``TOP`` unseen items per request (see the module doc)."""

    def __init__(self, parameters: Mapping[str, npt.NDArray[np.generic]], l2: float) -> None:
        self.Q: _F64 = np.asarray(parameters["Q"], np.float64)
        self.bi: _F64 = np.asarray(parameters["bi"], np.float64)
        self.mu = float(np.asarray(parameters["mu"]).reshape(-1)[0])
        known = np.asarray(parameters["known"], bool)
        trained = np.asarray(parameters["P"], np.float64)
        self.P: _F64 = np.asarray(trained * known[:, None], dtype=np.float64)
        self.l2 = l2
        self._eye = l2 * np.eye(self.Q.shape[1])
        # Each item's factors times its target (1 - mu - bi): the right-hand side's terms.
        self._Qt: _F64 = self.Q * (1.0 - self.mu - self.bi)[:, None]

    def user_vectors(self, users: npt.NDArray[np.int64], seen: npt.NDArray[np.bool_]) -> _F64:
        """The folded-in vector of each user (rows of ``seen`` are their seen masks): one
        Gram matrix per user from their seen items' factors, then one batched solve."""
        k = self.Q.shape[1]
        gram = np.empty((len(users), k, k))
        rhs = np.empty((len(users), k))
        for row, mask in enumerate(seen):
            index = np.flatnonzero(mask)
            qs = self.Q[index]
            np.matmul(qs.T, qs, out=gram[row])
            rhs[row] = self._Qt[index].sum(axis=0)
        gram += self._eye
        rhs += self.l2 * self.P[users]
        return np.asarray(np.linalg.solve(gram, rhs[:, :, None])[:, :, 0], dtype=np.float64)

    def user_vector(self, user: int, seen: npt.NDArray[np.bool_]) -> _F64:
        """``user_vectors`` for one user."""
        vectors = self.user_vectors(np.array([user]), seen[None, :])
        return np.asarray(vectors[0], dtype=np.float64)

    def run(self, batch: np.ndarray) -> np.ndarray:
        users, seen = decode_request(batch, len(self.bi))
        vectors = self.user_vectors(users, seen)
        scores = vectors @ self.Q.T + self.bi
        scores[seen] = -np.inf
        top = np.argpartition(-scores, TOP, axis=1)[:, :TOP]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1).astype(np.int32)


def save(path: Path, parameters: Mapping[str, npt.NDArray[np.generic]], known: np.ndarray) -> None:
    """Write the trained parameters and which users training saw, for ``load``."""
    arrays: dict[str, npt.NDArray[np.generic]] = {k: np.asarray(v) for k, v in parameters.items()}
    arrays["known"] = np.asarray(known, bool)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load(path: str, l2: float = 1.0) -> Recommender:
    """The serving factory (run in each port partition): ``partial(load, path)``."""
    with np.load(path) as data:
        return Recommender({name: data[name] for name in data.files}, l2)
