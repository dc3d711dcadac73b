"""Small numerical tools method authors share, so each method does not grow its own copy.

Cheap to import (numpy only); scikit-learn and scipy load when a function that needs them
is called.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")

#: The smallest norm divided by: a zero vector stays zero instead of becoming NaN.
EPS = 1e-12


def l2_normalise(vectors: np.ndarray, axis: int = -1) -> np.ndarray:
    """Each vector along ``axis`` scaled to unit length (zero vectors stay zero)."""
    vectors = np.asarray(vectors)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=axis, keepdims=True), EPS)


@dataclass(frozen=True)
class KMeansFit:
    """What one K-means fit found: a cluster id per row, the centres, and for diagnostics the
    inertia (sum of squared distances to the nearest centre) and the iterations run."""

    labels: np.ndarray  # int64, one per row
    centers: np.ndarray  # k x d
    inertia: float
    n_iter: int


def fit_kmeans(
    features: np.ndarray,
    k: int,
    seed: int,
    *,
    n_init: int = 10,
    max_iter: int = 300,
    normalize: bool = False,
) -> KMeansFit:
    """scikit-learn K-means with ``n_init`` restarts (the best inertia wins), at most
    ``max_iter`` iterations each and ``random_state=seed``; ``normalize`` L2-normalises the
    rows first (spherical-style K-means)."""
    from sklearn.cluster import KMeans

    if normalize:
        features = l2_normalise(features)
    model = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed)
    model.fit(features)
    return KMeansFit(
        labels=model.labels_.astype(np.int64),
        centers=model.cluster_centers_,
        inertia=float(model.inertia_),
        n_iter=int(model.n_iter_),
    )


def kmeans(
    features: np.ndarray,
    k: int,
    seed: int,
    *,
    n_init: int = 10,
    max_iter: int = 300,
    normalize: bool = False,
) -> np.ndarray:
    """The labels (int64) of :func:`fit_kmeans`."""
    return fit_kmeans(
        features, k, seed, n_init=n_init, max_iter=max_iter, normalize=normalize
    ).labels


def hungarian_mapping(cost: np.ndarray, *, maximize: bool = False) -> dict[int, int]:
    """The one-to-one assignment of rows to columns of ``cost`` with the least (``maximize``:
    the greatest) total, as {row: column}; a rectangular matrix leaves the surplus unmatched.
    The metrics use the same matching on the cluster x class contingency table."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.asarray(cost), maximize=maximize)
    return {int(r): int(c) for r, c in zip(rows, cols, strict=True)}


def knn(features: np.ndarray, k: int, *, exclude_self: bool = True) -> np.ndarray:
    """Indices of each row's ``k`` nearest rows by cosine similarity, nearest first, shape
    (n, k). Ties break by the lower index (a stable sort), so the result is deterministic."""
    unit = l2_normalise(np.asarray(features, dtype=np.float32))
    n = len(unit)
    if not 0 < k <= n - int(exclude_self):
        raise ValueError(f"k = {k} neighbours need at least {k + int(exclude_self)} rows, got {n}")
    similarity = unit @ unit.T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch on ``n`` threads inside the block (0: leave torch's setting), the previous
    count restored after. Methods that train small heads on frozen features use 1: on a
    busy 2-core machine the thread pool's synchronisation made their tiny steps 10-30x
    slower (silr.md §5, active-gcd.md)."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
