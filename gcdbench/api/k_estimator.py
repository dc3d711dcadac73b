"""K estimators: the number of categories, estimated for runs that are not told K.

``gcdbench run METHOD --k estimate:NAME`` asks the registered estimator ``NAME`` (hook
``register_k_estimators``) for K on the frozen encoder's features of the training pool, before
the method runs, and hands the method a task whose ``num_classes`` is that estimate; metrics
still match clusters to the gold classes. ``--k N`` gives a fixed K, ``--k true`` (the
default) the dataset's. docs/unknown-k.md describes each built-in estimator.

This module holds the interface, the ``--k`` value and DeepAligned's cluster-size count
(:func:`count_large_clusters`), which the ``cluster-size`` estimator and the ``deep-aligned``
method share.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gcdbench.api.toolkit import fit_kmeans
from gcdbench.errors import GcdbenchError

if TYPE_CHECKING:
    from gcdbench.api.task import GCDTask

#: ``--k`` for the dataset's own number of classes (the default).
TRUE_K = "true"
#: ``--k estimate:NAME`` names a registered estimator.
ESTIMATE_PREFIX = "estimate:"


@dataclass(frozen=True)
class KEstimate:
    """An estimator's answer: ``k`` and what it looked at (JSON-able, kept in the record)."""

    k: int
    details: Mapping[str, Any] = field(default_factory=dict)


class KEstimator(ABC):
    """Base class of K-estimator plugins (hook ``register_k_estimators``; registered as
    instances, like miners). Bump ``version`` whenever a change can alter an estimate: it
    joins the run id of every run that uses the estimator."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"

    @abstractmethod
    def estimate(self, features: np.ndarray, task: GCDTask, rng: np.random.Generator) -> KEstimate:
        """K for ``task`` from ``features`` (one row per training-pool text, pool order: the
        labeled texts first). ``task.num_classes`` is the true K: an estimator may read it
        only to bound its search, and must say so in its description. Randomness comes only
        from ``rng``."""


@dataclass(frozen=True)
class KChoice:
    """What ``--k`` asked for: the true K, a fixed K or an estimator."""

    fixed: int | None = None
    estimator: str | None = None

    @property
    def is_true(self) -> bool:
        return self.fixed is None and self.estimator is None

    @property
    def spec_value(self) -> str | None:
        """The spec's ``k``: None for the true K (so existing run ids stay as they were)."""
        if self.estimator is not None:
            return ESTIMATE_PREFIX + self.estimator
        return None if self.fixed is None else str(self.fixed)

    @property
    def label(self) -> str:
        """As leaderboards mark a row: ``K=est:silhouette``, ``K=50``."""
        if self.estimator is not None:
            return f"K=est:{self.estimator}"
        return f"K={self.fixed}" if self.fixed is not None else "K=true"


def parse_k(value: str | None, flag: str = "--k") -> KChoice:
    """``true`` (or None), a whole number >= 2, or ``estimate:NAME``; only the syntax is
    checked here (the estimator's name and the lower bound need the registry and the data)."""
    if value is None:
        return KChoice()
    text = value.strip()
    if text.lower() == TRUE_K:
        return KChoice()
    if text.startswith(ESTIMATE_PREFIX):
        name = text[len(ESTIMATE_PREFIX) :].strip()
        if not name:
            raise GcdbenchError(
                f"{flag} {value!r} names no estimator; pass e.g. {flag} estimate:silhouette "
                "(gcdbench list k-estimators)."
            )
        return KChoice(estimator=name)
    try:
        fixed = int(text)
    except ValueError:
        fixed = None
    if fixed is None or fixed < 2:
        raise GcdbenchError(
            f"{flag} must be 'true', a number of clusters >= 2 or estimate:NAME, got "
            f"{value!r}; e.g. {flag} 50 or {flag} estimate:silhouette "
            "(gcdbench list k-estimators)."
        )
    return KChoice(fixed=fixed)


@dataclass(frozen=True)
class ClusterSizeCount:
    """DeepAligned's count: ``k`` clusters of K-means with ``k_max`` are at least
    ``threshold`` rows large; ``sizes`` are every cluster's, largest first."""

    k: int
    k_max: int
    threshold: float
    sizes: tuple[int, ...]


def count_large_clusters(
    features: np.ndarray, k_max: int, seed: int, *, n_init: int = 10, share: float = 1.0
) -> ClusterSizeCount:
    """DeepAligned's estimate of the number of clusters (Zhang et al., AAAI 2021): K-means
    with ``k_max`` clusters (deliberately too many), then drop every cluster smaller than
    ``share`` × the mean size N / ``k_max``; the estimate is the clusters that remain. A real
    category fills about one cluster of average size or more, while surplus clusters are
    split-off fragments. The largest cluster is never below the mean size, so with
    ``share`` <= 1 at least one cluster survives."""
    n = len(features)
    if not 1 <= k_max <= n:
        raise ValueError(f"k_max = {k_max} clusters need 1 to {n} rows")
    labels = fit_kmeans(np.asarray(features), k_max, seed, n_init=n_init).labels
    sizes = np.bincount(labels, minlength=k_max)
    threshold = n / k_max * share
    kept = int((sizes[sizes > 0] >= threshold).sum())
    return ClusterSizeCount(kept, k_max, threshold, tuple(sorted(map(int, sizes), reverse=True)))


__all__ = [
    "ESTIMATE_PREFIX",
    "TRUE_K",
    "ClusterSizeCount",
    "KChoice",
    "KEstimate",
    "KEstimator",
    "count_large_clusters",
    "parse_k",
]
