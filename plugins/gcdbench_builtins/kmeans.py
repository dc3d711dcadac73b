"""K-means on frozen sentence embeddings of the test split: the no-training baseline.

K is the true number of classes (as in GLEAN/Loop); labeled data is not used.
"""

from __future__ import annotations

from dataclasses import dataclass

from gcdbench.api import GCDTask, Method, MethodOutput, RunContext, hookimpl, param
from gcdbench.api.toolkit import fit_kmeans


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
        with ctx.timed("kmeans"):
            fit = fit_kmeans(
                features,
                task.num_classes,
                # The run seed itself, as GLEAN/Loop's evaluation does (docs/methods/glean.md §7).
                ctx.seed,
                n_init=self.params.n_init,
                max_iter=self.params.max_iter,
                normalize=self.params.normalize,
            )
        return MethodOutput(
            test_assignments=fit.labels,
            diagnostics={"inertia": fit.inertia, "n_iter": fit.n_iter},
        )


@hookimpl
def register_methods(register):
    register(KMeans)
