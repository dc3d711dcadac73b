"""``loop``: Loop (An et al., arXiv 2312.10897), GLEAN's parent, as
docs/methods/loop.md describes it.

MTP pre-training, then rounds: K-means; Local Inconsistent Sampling (the samples in both the
top-v by local inconsistency and the top-v by entropy); the scalable query — which of |q|
neighbours, one from each of the anchor's candidate clusters, shares its category; refined
neighbourhood contrastive learning with the chosen neighbour as positive, plus 0.5·CE.
After training the discovered clusters are named: clusters matched (Hungarian) to a known
class's mean feature take its name, the others are named by the LLM from the 3 texts
nearest their centre.

``--variant paper`` (default): candidate clusters are those holding most of the anchor's
neighbours, and any |q| >= 2 works. ``--variant official``: the released code's own cluster +
first differing neighbour's cluster, |q| = 2, the anchor itself among the drawable neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gcdbench.api import (
    LAYOUTS,
    AskingPolicy,
    ClusterInfo,
    ClusterState,
    Component,
    GcdbenchError,
    GCDTask,
    Method,
    MethodOutput,
    RunContext,
    hookimpl,
    param,
    registered,
    training,
)
from gcdbench.api.feedback import AVERAGE, COMBINES, SCORINGS
from gcdbench.api.feedback_log import INSTANCE
from gcdbench.api.toolkit import hungarian_mapping, l2_normalise
from gcdbench_builtins import glean_kinds
from gcdbench_builtins.glean import check_templates


@dataclass(frozen=True)
class LoopParams(training.RoundParams):
    # Loop's code weighs CE by 0.5 (§6.2)
    ce_weight: float = param(0.5, ge=0, help="weight of the CE term on labeled texts")
    # LIS keeps the intersection of the top-m by each criterion
    query_samples: int = param(
        500, ge=0, help="m: top-m by local inconsistency and by entropy (0 = ask nothing)"
    )
    sampling: str = param(
        "local-inconsistency", registered="miner", help="the miner picking the anchors"
    )
    options: int = param(2, ge=2, help="|q|: candidate neighbours per question (official: 2)")
    naming_texts: int = param(3, ge=1, help="texts per novel cluster in the naming question")
    prompt_layout: str = param(
        "cache-friendly",
        choices=LAYOUTS,
        help="the neighbour prompt: options before the query (cache-friendly) or after",
    )
    answer_scoring: str = param(
        "generate",
        choices=SCORINGS,
        help="choices from the reply, the option labels' log-probabilities, or yes/no per option",
    )
    order_combine: str = param(
        "agree",
        choices=COMBINES,
        help="agree: ask once; average: ask in all |q| cyclic orders, average the probabilities",
    )
    prompt_template: str = param(
        "", help="template of the neighbour question ('' = loop-v1; yes-no: glean-v2)"
    )


_LOOP_PAPER = {"feat_dim": 128, "epochs": 50, "batch_size": 128, "ce_weight": 0.5}
_LOOP_SMOKE = {"query_samples": 400}


class Loop(Method):
    name = "loop"
    description = (
        "Loop: rounds of local inconsistent sampling, an LLM choosing the true neighbour among "
        "|q| candidates from neighbouring clusters, refined neighbourhood contrastive "
        "learning + 0.5·CE; K-means on test features; novel clusters named by the LLM. "
        "Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    # 2: the rounds draw from their own stage, cache hit or miss. 3: the asking policy is a
    # parameter (prompt_layout added); noisy-oracle draws and the second option order are
    # keyed by the question alone (no longer by how it is asked), so simulated answers move.
    version = "3"
    uses = ("encoder", "loss", "miner", "feedback")
    trains_encoder = True
    asks = ("select-similar-instance", "characterize-cluster")
    components = (
        Component("llm", "the LLM's neighbour choice (ablated: random kNN positives)"),
        Component("ce", "the cross-entropy term on labeled texts"),
        Component("naming", "LLM names for the discovered (novel) clusters"),
    )
    Params = LoopParams
    presets = training.presets_for(LoopParams, paper=_LOOP_PAPER, smoke=_LOOP_SMOKE)

    @classmethod
    def cross_check(cls, params: LoopParams, num_classes: int | None = None) -> None:
        template = params.prompt_template or LOOP_TEMPLATE
        check_templates(LOOP_CHOICES, template, params.answer_scoring)
        if params.variant == "official" and params.options != 2:
            raise GcdbenchError(
                f"loop: options = {params.options}; the official Loop code asks between 2 "
                "only; pass -p options=2 or --variant paper."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: LoopParams = self.params
        # The schema again (a caller may build LoopParams by hand), then the joint rule.
        training.check_params(params, self.name)
        self.cross_check(params, task.num_classes)
        rounds = LoopRounds(task, ctx, params)
        trained = training.train_and_cluster(
            task,
            ctx,
            params,
            self.name,
            hook=rounds if self.enabled("llm") else None,
            ce=self.enabled("ce"),
        )
        clusters = {}
        if self.enabled("naming"):
            known_means = _known_class_means(trained.setup, task, trained.rounds.head)
            clusters = rounds.name_clusters(trained.features, trained.assignments, known_means)
        return MethodOutput(
            test_assignments=trained.assignments,
            clusters=clusters,
            diagnostics={
                "training": trained.training,
                "rounds": trained.rounds.rounds,
                "loop": {"variant": params.variant, "options": params.options},
                "asking": rounds.describe(),
            },
            feedback_log=rounds.asker.log if self.enabled("llm") else None,
        )


def _known_class_means(setup: training.TrainingSetup, task: GCDTask, head: Any) -> np.ndarray:
    """Mean feature of every known class over its labeled pool texts, in the test space."""
    labeled = task.train.texts[: task.num_labeled]
    features = training.test_features(setup, labeled, head)
    y = np.asarray(task.labeled_y)
    return np.stack(
        [
            features[y == c].mean(axis=0) if (y == c).any() else np.zeros(features.shape[1])
            for c in range(task.num_known)
        ]
    )


#: Loop's own wording of its neighbour question and of its naming question.
LOOP_TEMPLATE = "loop-v1"
#: The choice question Loop asks (the one its asking parameters shape).
LOOP_CHOICES = (glean_kinds.SelectSimilarInstance(),)


class LoopRounds:
    """The round hook: LIS, then one batch of neighbour questions."""

    def __init__(self, task: GCDTask, ctx: RunContext, params: LoopParams) -> None:
        self.task, self.ctx, self.params = task, ctx, params
        self.miner = registered("miner", params.sampling)
        self.asker = training.Asker(task, ctx)
        # Naming keeps Loop's own template and plain asking; the neighbour question is
        # asked as the parameters say. Loop has no option-order parameter: averaging asks
        # every cyclic order of the |q| candidates (|q| = 2: both orders).
        self.policy = AskingPolicy(template=LOOP_TEMPLATE, layout=params.prompt_layout)
        combine = params.order_combine
        self.choice_policy = AskingPolicy(
            orderings=params.options if combine == AVERAGE else 1,
            layout=params.prompt_layout,
            template=params.prompt_template or LOOP_TEMPLATE,
            scoring=params.answer_scoring,
            combine=combine,
        )
        self.style = training.AskingStyle(policy=self.choice_policy)

    def checkpoint_state(self) -> Any:
        """What later rounds need from earlier ones, for round checkpoints (docs/resume.md):
        the feedback log. Each round's generators are keyed by its index."""
        return self.asker.log

    def restore_checkpoint_state(self, state: Any) -> None:
        self.asker.log = state

    def __call__(self, state: ClusterState, index: int, texts: Any) -> training.RoundPlan:
        rng = self.ctx.rng(f"loop-round-{index}")
        budget = min(self.params.query_samples, state.size)
        selected = np.asarray(self.miner.select(state, budget, rng), dtype=np.int64)
        candidates = training.loop_candidates(
            state, selected, self.params.options, rng, variant=self.params.variant
        )
        keep = candidates[:, 0] != training.NO_QUERY
        anchors, candidates = selected[keep], candidates[keep]
        pool = self.task.train.texts
        asked = self.asker.choose(
            INSTANCE,
            index,
            anchors,
            candidates,
            [[pool[c] for c in row] for row in candidates],
            self.style,
            meta=[
                {"anchor": int(a), "options": [int(c) for c in row]}
                for a, row in zip(anchors, candidates, strict=True)
            ],
            encoder_choice=training.encoder_choice(state.features, anchors, candidates),
        )
        info = {
            "selected": len(selected),
            "no_query": int((~keep).sum()),
            INSTANCE: asked.summary(),
        }
        return training.RoundPlan(positives=asked.chosen(), info=info)

    def describe(self) -> dict[str, Any]:
        """How the neighbour question is asked (the run's ``diagnostics.asking``)."""
        return {
            "answer_scoring": self.choice_policy.scoring,
            "order_combine": self.choice_policy.combine,
            "orderings": self.choice_policy.orderings,
            "prompt_template": self.choice_policy.template,
        }

    def name_clusters(
        self, features: np.ndarray, assignments: np.ndarray, known_means: np.ndarray
    ) -> dict[int, ClusterInfo]:
        if self.params.normalize:
            features, known_means = l2_normalise(features), l2_normalise(known_means)
        ids, centers = training.cluster_centers(features, assignments)
        matching = hungarian_mapping(training.squared_distances(known_means, centers))
        out = {
            ids[col]: ClusterInfo(self.task.known_class_names[row], "matched to a known class")
            for row, col in matching.items()
        }
        novel = [i for i, cluster in enumerate(ids) if cluster not in out]
        if not novel:
            return out
        count = min(self.params.naming_texts, len(features))
        reps = training.nearest_to_centers(features, centers[novel], count)
        answers = self.asker.characterize(
            [row.tolist() for row in reps],
            self.task.test.texts,
            known_names=self.task.known_class_names,
            policy=self.policy,
            part="test",
        )
        for i, answer in zip(novel, answers, strict=True):
            value = answer.value
            name = str(value.get("name", "")) if value else ""
            out[ids[i]] = ClusterInfo(name, "novel" if value else f"no name ({answer.status})")
        return out


@hookimpl
def register_methods(register):
    register(Loop)
