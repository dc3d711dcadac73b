"""K-means on frozen sentence embeddings of the test split: the no-training baseline.

K is the true number of classes (as in GLEAN/Loop); labeled data is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans as SkKMeans

from gcdbench import hookimpl
from gcdbench.api import GCDTask, Method, MethodOutput
from gcdbench.api.method import param
from gcdbench.runner.context import RunContext


@dataclass(frozen=True)
class KMeansParams:
    # pinned: scikit-learn >= 1.4 changed the default
    n_init: int = param(10, ge=1, help="K-means restarts; the best inertia wins")
    max_iter: int = param(300, ge=1, help="iterations per restart")
    # the default encoder already normalises
    normalize: bool = param(False, help="L2-normalise features before K-means")


class KMeans(Method):
    name = "kmeans"
    description = "K-means (K = number of classes) on frozen encoder features of the test split"
    uses = ("encoder",)
    Params = KMeansParams

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        features = ctx.embed(task.test)
        if self.params.normalize:
            features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        with ctx.timed("kmeans"):
            model = SkKMeans(
                n_clusters=task.num_classes,
                n_init=self.params.n_init,
                max_iter=self.params.max_iter,
                # The run seed itself, as GLEAN/Loop's evaluation does (docs/methods/glean.md §7).
                random_state=ctx.seed,
            ).fit(features)
        return MethodOutput(
            test_assignments=model.labels_.astype(np.int64),
            diagnostics={"inertia": float(model.inertia_), "n_iter": int(model.n_iter_)},
        )


@hookimpl
def register_methods(register):
    register(KMeans)
