"""The built-in K estimators (``gcdbench run --k estimate:NAME``, docs/unknown-k.md):

* ``cluster-size``: DeepAligned's (Zhang et al., AAAI 2021): K-means with K' = 2 × K clusters,
  the clusters smaller than the mean size dropped, K = the clusters kept;
* ``silhouette``: the K of the best silhouette score over a range of K;
* ``elbow``: the knee of the K-means inertia curve over the same range (the point farthest
  from the chord between the curve's ends).

Each reads the frozen encoder's features of the training pool. The true K enters only as the
top of the search (K' = ``max_factor`` × K, DeepAligned's assumption of a known upper bound);
the bottom is the number of known classes (at least 2). Randomness comes from the ``rng`` the
runner hands over (its own ``k-estimate`` stage). scikit-learn loads inside the functions.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gcdbench.api import GCDTask, hookimpl
from gcdbench.api.k_estimator import KEstimate, KEstimator, count_large_clusters
from gcdbench.api.toolkit import fit_kmeans

#: DeepAligned's K' = 2 × K: the search never goes above twice the true K.
MAX_FACTOR = 2.0


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(2**31))


def search_range(task: GCDTask, rows: int, max_factor: float) -> tuple[int, int]:
    """The K a search may return: from the known classes (at least 2) to ``max_factor`` ×
    the true K, and below ``rows`` (a K-means partition and a silhouette score need that)."""
    low = max(2, task.num_known)
    high = min(int(max_factor * task.num_classes), rows - 1)
    return low, max(low, high)


def _subsample(features: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` rows drawn without replacement, kept in pool order (all rows when ``size``
    is 0 or covers them): a search scores K on a seeded sample, not on the whole pool."""
    if size <= 0 or size >= len(features):
        return np.asarray(features)
    return np.asarray(features)[np.sort(rng.choice(len(features), size, replace=False))]


@dataclass(frozen=True)
class Curve:
    """A score at every K a coarse-to-fine search evaluated, in K order."""

    ks: tuple[int, ...]
    values: tuple[float, ...]

    def pairs(self) -> list[list[float]]:
        """``[[K, score], ...]`` in K order, as the record keeps them (JSON object keys would
        sort as text: "10" before "4")."""
        return [[k, round(v, 6)] for k, v in zip(self.ks, self.values, strict=True)]


def coarse_to_fine(
    low: int,
    high: int,
    grid: int,
    score: Callable[[int], float],
    pick: Callable[[Curve], int],
) -> tuple[int, Curve]:
    """``pick``'s K over [low, high], scoring few K: a grid of ``grid`` (at least 3) evenly
    spaced K, then a grid between the scored neighbours of the pick, and so on until every K
    between those neighbours is scored. ``pick`` sees every K scored so far; ``score`` runs
    once per K. Returns the final pick and the curve of every K scored."""
    points = max(3, grid)
    scores: dict[int, float] = {}
    lo, hi = low, high
    while True:
        todo = {int(k) for k in np.rint(np.linspace(lo, hi, points))} - set(scores)
        # A grid that rounds onto scored K only (a narrow gap) scores the gap itself.
        for k in sorted(todo or set(range(lo, hi + 1)) - set(scores)):
            scores[k] = score(k)
        ordered = sorted(scores)
        curve = Curve(tuple(ordered), tuple(scores[k] for k in ordered))
        chosen = pick(curve)
        at = ordered.index(chosen)
        lo, hi = ordered[max(0, at - 1)], ordered[min(len(ordered) - 1, at + 1)]
        if all(k in scores for k in range(lo, hi + 1)):
            return chosen, curve


def best_score(curve: Curve) -> int:
    """The K of the highest score; the smallest such K on a tie."""
    return curve.ks[int(np.argmax(curve.values))]


def knee(curve: Curve) -> int:
    """The knee of a decreasing curve: the point farthest from the chord joining its first
    and last points, with K and the values both scaled to [0, 1] (so the units do not
    matter). The smallest such K on a tie; the first K when the curve is a straight line."""
    ks = np.asarray(curve.ks, dtype=np.float64)
    values = np.asarray(curve.values, dtype=np.float64)
    if len(ks) < 3:
        return curve.ks[0]
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    spread = values.max() - values.min()
    y = (values - values.min()) / spread if spread > 0 else np.zeros_like(values)
    # The chord runs from (0, y0) to (1, y_last); a point's distance is |cross product|.
    y0, y1 = y[0], y[-1]
    distance = np.abs((y1 - y0) * x - (y - y0)) / np.hypot(1.0, y1 - y0)
    # Rounded, so that rounding noise on a straight line is no knee and ties go to the
    # smallest K whatever the last bits say.
    return curve.ks[int(np.argmax(np.round(distance, 9)))]


class ClusterSize(KEstimator):
    name = "cluster-size"
    description = (
        "DeepAligned (Zhang et al., AAAI 2021): K-means with K' = 2 x the true K clusters on "
        "the whole pool, clusters smaller than the mean size N/K' dropped, K = clusters kept"
    )
    version = "1"

    def __init__(self, max_factor: float = MAX_FACTOR, share: float = 1.0, n_init: int = 3):
        self.max_factor, self.share, self.n_init = max_factor, share, n_init

    def estimate(self, features: np.ndarray, task: GCDTask, rng: np.random.Generator) -> KEstimate:
        k_max = max(2, min(int(self.max_factor * task.num_classes), len(features)))
        count = count_large_clusters(
            features, k_max, _seed(rng), n_init=self.n_init, share=self.share
        )
        return KEstimate(
            count.k,
            {
                "k_max": k_max,
                "k_max_rule": f"{self.max_factor:g} x the true K",
                "share": self.share,
                "threshold": round(count.threshold, 3),
                "n_init": self.n_init,
                "rows": len(features),
                "sizes": list(count.sizes),
            },
        )


class _RangeSearch(KEstimator):
    """What ``silhouette`` and ``elbow`` share: a seeded subsample, one K-means per K over
    the search range (the same ``random_state`` for every K), a coarse-to-fine grid."""

    rule: ClassVar[str]

    def __init__(
        self, max_factor: float = MAX_FACTOR, sample: int = 2000, grid: int = 12, n_init: int = 3
    ):
        self.max_factor, self.sample, self.grid, self.n_init = max_factor, sample, grid, n_init

    @abstractmethod
    def score(self, rows: np.ndarray, k: int, seed: int) -> float:
        """The curve's value at ``k``, from one K-means fit seeded with ``seed``."""

    @abstractmethod
    def pick(self, curve: Curve) -> int:
        """The K the curve points to."""

    def estimate(self, features: np.ndarray, task: GCDTask, rng: np.random.Generator) -> KEstimate:
        rows = _subsample(features, self.sample, rng)
        seed = _seed(rng)
        low, high = search_range(task, len(rows), self.max_factor)
        details: dict[str, object] = {
            "range": [low, high],
            "k_max_rule": f"{self.max_factor:g} x the true K",
            "rows": len(rows),
            "grid": self.grid,
            "n_init": self.n_init,
            "rule": self.rule,
        }
        if low == high:
            return KEstimate(low, {**details, "at_range_end": True, "curve": []})
        k, curve = coarse_to_fine(
            low, high, self.grid, lambda k: self.score(rows, k, seed), self.pick
        )
        # A pick at an end of the range means the curve had not turned there: the range
        # (max_factor) bounded the answer, not the data.
        details["at_range_end"] = k in (low, high)
        return KEstimate(k, {**details, "curve": curve.pairs()})


class Silhouette(_RangeSearch):
    name = "silhouette"
    description = (
        "the K whose K-means partition has the best silhouette score, over K = known classes "
        "... 2 x the true K (a coarse-to-fine grid), on 2,000 seeded rows"
    )
    version = "1"
    rule = "highest silhouette score (Euclidean)"

    def score(self, rows: np.ndarray, k: int, seed: int) -> float:
        from sklearn.metrics import silhouette_score

        labels = fit_kmeans(rows, k, seed, n_init=self.n_init).labels
        if len(np.unique(labels)) < 2:  # duplicates can collapse a partition
            return -1.0
        return float(silhouette_score(rows, labels))

    def pick(self, curve: Curve) -> int:
        return best_score(curve)


class Elbow(_RangeSearch):
    name = "elbow"
    description = (
        "the knee of the K-means inertia curve (the point farthest from the chord between "
        "its ends) over K = known classes ... 2 x the true K, on 2,000 seeded rows"
    )
    version = "1"
    rule = "knee: farthest point from the chord of the scaled inertia curve"

    def score(self, rows: np.ndarray, k: int, seed: int) -> float:
        return fit_kmeans(rows, k, seed, n_init=self.n_init).inertia

    def pick(self, curve: Curve) -> int:
        return knee(curve)


@hookimpl
def register_k_estimators(register):
    register(ClusterSize())
    register(Silhouette())
    register(Elbow())
