"""A third-party-style plugin in one module: a pairwise query kind ("same category or
not?") and a method that asks it. It imports only ``gcdbench.api``; its one template file
lies in ``templates/`` beside it. Tests register it with ``registry.register_plugin``.

The method clusters the test texts with K-means on the run's encoder, then asks, for the
texts nearest to another cluster, whether they belong with their nearest neighbour there;
a "yes" moves the text into that cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench.api import GCDTask, Method, MethodOutput, RunContext, hookimpl, param, toolkit
from gcdbench.api.feedback import AskingPolicy, Query
from gcdbench.api.feedback_log import AskedLog, FeedbackLog
from gcdbench.api.query_kind import TASK, ChoiceKind, Field, GoldView


class SameCategory(ChoiceKind):
    name = "same-category"
    description = "do two texts belong to the same category? (value: True or False)"
    payload = (Field("first", "str"), Field("second", "str"), TASK)
    meta = (Field("first", "int", False), Field("second", "int", False))
    options_field = None
    template_dir = Path(__file__).parent / "templates"
    default_template = "pairwise-v1"

    def options(self, query: Query) -> list[str]:
        return ["Yes", "No"]

    def subject(self, payload: Any) -> dict[str, Any]:
        return {"first": payload["first"], "second": payload["second"]}

    def value(self, index: int) -> bool:
        return index == 0

    def index(self, value: Any) -> int:
        return 0 if value else 1

    def reply_choices(self, query: Query, order: Sequence[int]) -> tuple[str, ...]:
        return tuple(self.shown(query, order))

    def shown_labels(self, query: Query, order: Sequence[int]) -> list[str]:
        return self.shown(query, order)

    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        first, second = gold.labels(query, [gold.meta(query, "first"), gold.meta(query, "second")])
        return [0] if first == second else [1]


@dataclass(frozen=True)
class PairParams:
    questions: int = param(12, ge=1, help="texts asked about")
    orderings: int = param(1, ge=1, help="ask each question in this many option orders")


class SameCategoryDemo(Method):
    name = "same-category-demo"
    description = "K-means on the encoder, corrected by pairwise same-category questions"
    uses = ("encoder", "feedback")
    asks = ("same-category",)
    Params = PairParams

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        features = toolkit.l2_normalise(ctx.embed(task.test))
        assignments = toolkit.kmeans(features, task.num_classes, ctx.seed)
        neighbours = toolkit.knn(features, min(10, len(features) - 1))
        pairs = []
        for i, row in enumerate(neighbours):
            other = next((int(j) for j in row if assignments[j] != assignments[i]), None)
            if other is not None:
                pairs.append((i, other, float(features[i] @ features[other])))
        pairs.sort(key=lambda p: -p[2])
        pairs = pairs[: self.params.questions]
        policy = AskingPolicy(orderings=self.params.orderings)
        queries = [
            Query(
                SameCategory.name,
                {"first": task.test.texts[i], "second": task.test.texts[j], "task": "intent"},
                {"first": i, "second": j, "part": "test"},
                policy,
            )
            for i, j, _ in pairs
        ]
        answers = ctx.feedback.answer(queries)
        used = [a.ok and a.value is True for a in answers]
        for (i, j, _), move in zip(pairs, used, strict=True):
            if move:
                assignments[i] = assignments[j]
        # The encoder's own answer: the pair is as similar as a typical same-cluster pair.
        nearest = [features[i] @ features[row[0]] for i, row in enumerate(neighbours)]
        typical = float(np.median(nearest))
        encoder_values = [bool(sim >= typical) for _, _, sim in pairs]
        asked = AskedLog(SameCategory.name, 0, queries, answers, encoder_values, used)
        return MethodOutput(assignments, feedback_log=FeedbackLog(asked=[asked]))


@hookimpl
def register_query_kinds(register):
    register(SameCategory())


@hookimpl
def register_methods(register):
    register(SameCategoryDemo)
