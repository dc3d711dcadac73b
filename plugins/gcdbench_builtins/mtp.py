"""``mtp``: MTP pre-training (CE on labeled texts + MLM on the pool, docs/methods/glean.md
§2.1), then K-means on the trained backbone's features of the test split.

The setup every training method shares is reached through :mod:`gcdbench.api.training`.
"""

from __future__ import annotations

from gcdbench.api import (
    GcdbenchError,
    GCDTask,
    Method,
    MethodOutput,
    RunContext,
    hookimpl,
    training,
)


class MTP(Method):
    name = "mtp"
    description = (
        "MTP pre-training of the --encoder (CE on labeled texts + MLM on the pool, dev early "
        "stopping; cached and shared across methods), then K-means on test features. "
        "Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder",)
    trains_encoder = True
    Params = training.PretrainParams
    presets = training.presets_for(training.PretrainParams)

    @classmethod
    def cross_check(cls, params: training.PretrainParams, num_classes: int | None = None) -> None:
        if params.mode == "head":
            raise GcdbenchError(
                "method 'mtp' with mode=head trains nothing (the backbone is frozen and the "
                "classifier is discarded); pass -p mode=top-2 or -p mode=full."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: training.PretrainParams = self.params
        self.cross_check(params, task.num_classes)  # for callers that skip resolve_params
        with training.isolated_torch_rng(ctx.rng("torch")):
            setup = training.prepare_training(task, ctx, params, self.name)
            with ctx.timed("encode_test"):
                features = setup.mode.encode_texts(task.test.texts)
        with ctx.timed("kmeans"):
            assignments = training.cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        return MethodOutput(
            test_assignments=assignments, diagnostics={"training": setup.diagnostics}
        )


@hookimpl
def register_methods(register):
    register(MTP)
