"""A small approximate nearest-neighbour index (an inverted file, as FAISS's IVF) and the
exact brute-force search it is measured against. numpy only.

Vectors are L2-normalised embeddings, so the inner product is the cosine similarity.
"""

from __future__ import annotations

import numpy as np

__all__ = ["IvfIndex", "exact_top"]


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """The ids of the ``k`` most similar vectors to each query, best first (brute force)."""
    scores = queries @ vectors.T
    top = np.argpartition(-scores, min(k, len(vectors) - 1), axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


class IvfIndex:
    """``nlist`` k-means cells; each vector is listed in its nearest cell's list, and a query
    scans only the ``nprobe`` cells nearest to it: fewer dot products, some neighbours
    missed (what recall@k measures)."""

    def __init__(self, nlist: int, nprobe: int, *, seed: int = 0) -> None:
        self.nlist = nlist
        self.nprobe = nprobe
        self._rng = np.random.default_rng(seed)
        self.centroids = np.zeros((0, 0), np.float32)
        self.vectors = np.zeros((0, 0), np.float32)
        self.lists: list[np.ndarray] = []

    def build(self, vectors: np.ndarray, iterations: int = 10) -> None:
        """k-means (spherical: centroids renormalised) on ``vectors``, then the lists."""
        self.vectors = vectors
        k = min(self.nlist, len(vectors))
        centroids = vectors[self._rng.choice(len(vectors), k, replace=False)]
        for _ in range(iterations):
            cells = np.argmax(vectors @ centroids.T, axis=1)
            for c in range(k):
                members = vectors[cells == c]
                if len(members):
                    mean = members.sum(axis=0)
                    centroids[c] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        self.centroids = centroids
        cells = np.argmax(vectors @ centroids.T, axis=1)
        self.lists = [np.flatnonzero(cells == c) for c in range(k)]

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        """The ids of the ``k`` most similar listed vectors in the ``nprobe`` nearest cells."""
        near = np.argsort(-(self.centroids @ query))[: self.nprobe]
        ids = np.concatenate([self.lists[c] for c in near])
        scores = self.vectors[ids] @ query
        return ids[np.argsort(-scores, kind="stable")[:k]]
