"""``no-llm``: MTP pre-training, then the round loop with positives from kNN only (no
feedback of any kind), then K-means on the test features — the control every
LLM-in-the-loop method is compared with (GLEAN's "w/o LLM", Loop's "w/o LLMs").
"""

from __future__ import annotations

from gcdbench import hookimpl
from gcdbench.api import GCDTask, Method, MethodOutput
from gcdbench.api.method import Component
from gcdbench.runner.context import RunContext
from gcdbench.training.pipeline import (
    HEAD_MODE_DEVIATION,
    cluster_test,
    prepare_training,
    test_features,
)
from gcdbench.training.presets import RoundParams, isolated_torch_rng, presets_for, resolve_topk
from gcdbench.training.rounds import run_rounds


class NoLLM(Method):
    name = "no-llm"
    description = (
        "MTP pre-training, then rounds of K-means + kNN-positive contrastive learning (NCL) + "
        "CE, no LLM; K-means on test features. Defaults = the cpu preset (MiniLM, top-2 "
        "layers, bf16); presets: cpu, paper (GPU, bert-base-uncased), smoke"
    )
    version = "1"
    uses = ("encoder", "loss")
    components = (
        Component("mtp", "MTP pre-training (the rounds start from the untrained backbone)"),
        Component("ce", "the cross-entropy term on labeled texts during the rounds"),
    )
    Params = RoundParams
    presets = presets_for(RoundParams)

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: RoundParams = self.params
        k = resolve_topk(params.k, task.dataset, len(task.train))
        with isolated_torch_rng(ctx.rng("torch")):
            setup = prepare_training(task, ctx, params, self.name, with_mtp=self.enabled("mtp"))
            with ctx.timed("rounds"):
                result = run_rounds(
                    task,
                    setup.mode,
                    params,
                    k=k,
                    seed=ctx.seed,
                    rng=ctx.rng("rounds"),
                    ce=self.enabled("ce"),
                    reporter=ctx.reporter,
                )
            with ctx.timed("encode_test"):
                features = test_features(setup, task.test.texts, result.head)
        with ctx.timed("kmeans"):
            assignments = cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        training = {**setup.diagnostics, "k": k}
        if params.mode == "head":
            training["deviations"] = [*training["deviations"], HEAD_MODE_DEVIATION]
        return MethodOutput(
            test_assignments=assignments,
            diagnostics={"training": training, "rounds": result.rounds},
        )


@hookimpl
def register_methods(register):
    register(NoLLM)
