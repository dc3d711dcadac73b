"""``no-llm``: MTP pre-training, then the round loop with positives from kNN only (no
feedback of any kind), then K-means on the test features — the no-LLM baseline every
LLM-in-the-loop method is compared with, on the round loop's own defaults. A method's
*matched* control keeps that method's training settings and switches its questions off
instead (GLEAN's is ``glean --ablate llm``: a K-way classifier and a round every 3 epochs,
docs/methods/glean.md §5.5; Loop's ``loop --ablate llm`` keeps its 0.5 CE weight).
"""

from __future__ import annotations

from gcdbench.api import Component, GCDTask, Method, MethodOutput, RunContext, hookimpl, training


class NoLLM(Method):
    name = "no-llm"
    description = (
        "MTP pre-training, then rounds of K-means + kNN-positive contrastive learning (NCL) + "
        "CE, no LLM; K-means on test features. Defaults = the cpu preset (MiniLM, top-2 "
        "layers, bf16); presets: cpu, paper (GPU, bert-base-uncased), smoke"
    )
    version = "2"  # 2: the rounds draw from their own stage, cache hit or miss
    uses = ("encoder", "loss")
    trains_encoder = True
    components = (
        Component("mtp", "MTP pre-training (the rounds start from the untrained backbone)"),
        Component("ce", "the cross-entropy term on labeled texts during the rounds"),
    )
    Params = training.RoundParams
    presets = training.presets_for(training.RoundParams)

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        trained = training.train_and_cluster(
            task, ctx, self.params, self.name, ce=self.enabled("ce"), with_mtp=self.enabled("mtp")
        )
        return MethodOutput(
            test_assignments=trained.assignments,
            diagnostics={"training": trained.training, "rounds": trained.rounds.rounds},
        )


@hookimpl
def register_methods(register):
    register(NoLLM)
