"""``mtp``: MTP pre-training (CE on labeled texts + MLM on the pool, docs/methods/glean.md
§2.1), then K-means on the trained backbone's features of the test split.

The setup every training method shares lives in :mod:`gcdbench.training.pipeline`.
"""

from __future__ import annotations

from gcdbench import hookimpl
from gcdbench.api import GCDTask, Method, MethodOutput
from gcdbench.errors import GcdbenchError
from gcdbench.runner.context import RunContext
from gcdbench.training.pipeline import cluster_test, prepare_training
from gcdbench.training.presets import PretrainParams, isolated_torch_rng, presets_for


class MTP(Method):
    name = "mtp"
    description = (
        "MTP pre-training of the --encoder (CE on labeled texts + MLM on the pool, dev early "
        "stopping; cached and shared across methods), then K-means on test features. "
        "Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder",)
    Params = PretrainParams
    presets = presets_for(PretrainParams)

    @classmethod
    def cross_check(cls, params: PretrainParams, num_classes: int | None = None) -> None:
        if params.mode == "head":
            raise GcdbenchError(
                "method 'mtp' with mode=head trains nothing (the backbone is frozen and the "
                "classifier is discarded); pass -p mode=top-2 or -p mode=full."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: PretrainParams = self.params
        self.cross_check(params, task.num_classes)  # for callers that skip resolve_params
        with isolated_torch_rng(ctx.rng("torch")):
            setup = prepare_training(task, ctx, params, self.name)
            with ctx.timed("encode_test"):
                features = setup.mode.encode_texts(task.test.texts)
        with ctx.timed("kmeans"):
            assignments = cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        return MethodOutput(
            test_assignments=assignments, diagnostics={"training": setup.diagnostics}
        )


@hookimpl
def register_methods(register):
    register(MTP)
