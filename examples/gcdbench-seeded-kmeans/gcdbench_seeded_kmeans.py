"""Seeded K-means (Basu, Banerjee & Mooney, ICML 2002) as a gcdbench method plugin.

The worked example of docs/writing-a-plugin.md. K-means over frozen encoder features of the
training pool and the test split, with the known classes' centroids started at the means of
their labeled examples and the other centroids drawn by k-means++ from the unlabeled pool.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from gcdbench.api import (
    ClusterInfo,
    Component,
    GCDTask,
    Method,
    MethodOutput,
    Register,
    RunContext,
    hookimpl,
)


@dataclass(frozen=True)
class SeededKMeansParams:
    max_iter: int = 300
    # True clusters the test split together with the pool (transductive, like the other
    # GCD baselines); False fits on the pool only and assigns test texts to the nearest
    # centroid, so a test text never moves a centroid.
    use_test_in_fit: bool = True


class SeededKMeans(Method):
    name = "seeded-kmeans"
    description = (
        "Seeded K-means (Basu et al. 2002): known-class centroids start at labeled means, "
        "the rest by k-means++ over the unlabeled pool"
    )
    version = "1"  # bump whenever a change alters results: it is part of the run hash
    uses = ("encoder",)
    components = (Component("seeding", "initialise known-class centroids from labeled means"),)
    Params = SeededKMeansParams
    # Named parameter sets for `--preset NAME`; --param KEY=VALUE overrides on top.
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {"inductive": {"use_test_in_fit": False}}

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        # The pool is the labeled texts first, then the unlabeled ones (see GCDTask).
        pool = ctx.embed(task.train)
        test = ctx.embed(task.test)
        labeled, unlabeled = pool[: task.num_labeled], pool[task.num_labeled :]
        fit_features = np.vstack([pool, test]) if self.params.use_test_in_fit else pool

        k = task.num_classes
        seeded = self._labeled_means(task, labeled) if self.enabled("seeding") else {}
        centroids = np.empty((k, pool.shape[1]), dtype=pool.dtype)
        for cluster, mean in seeded.items():
            centroids[cluster] = mean
        free = [c for c in range(k) if c not in seeded]
        if free:
            # A pool too small to draw from (every text labeled) falls back to all features.
            candidates = unlabeled if len(unlabeled) >= len(free) else fit_features
            centroids[free], _ = kmeans_plusplus(
                candidates, n_clusters=len(free), random_state=_seed_from(ctx.rng("init"))
            )

        with ctx.timed("kmeans"):
            model = KMeans(
                n_clusters=k,
                init=centroids,
                n_init=1,
                max_iter=self.params.max_iter,
                # Explicit, so scikit-learn never falls back to the global NumPy RNG.
                random_state=_seed_from(ctx.rng("kmeans")),
            ).fit(fit_features)
        if self.params.use_test_in_fit:
            assignments = model.labels_[len(pool) :]
        else:
            assignments = model.predict(test)

        # Seeded cluster c started at known class c, so it can carry that class's name.
        clusters = {
            c: ClusterInfo(task.known_class_names[c], "seeded from this known class's labeled mean")
            for c in seeded
        }
        return MethodOutput(
            test_assignments=assignments.astype(np.int64),
            clusters=clusters,
            diagnostics={
                "inertia": float(model.inertia_),
                "n_iter": int(model.n_iter_),
                "seeded_centroids": len(seeded),
                "fit_samples": len(fit_features),
            },
        )

    @staticmethod
    def _labeled_means(task: GCDTask, labeled: np.ndarray) -> dict[int, np.ndarray]:
        """Known-class id -> mean feature of its labeled texts (classes without any are left
        to k-means++)."""
        return {
            c: labeled[task.labeled_y == c].mean(axis=0)
            for c in range(task.num_known)
            if (task.labeled_y == c).any()
        }


def _seed_from(rng: np.random.Generator) -> int:
    # scikit-learn takes an int seed, not a Generator.
    return int(rng.integers(2**31 - 1))


@hookimpl
def register_methods(register: Register) -> None:
    register(SeededKMeans)
