"""The questions ClusterLLM asks (docs/methods/clusterllm.md §4), registered with the
``clusterllm`` method.

=================  ==============================================  ==========================
kind               payload                                         value
=================  ==============================================  ==========================
triplet-choice     query, options[2 texts], task                   option index (0 or 1)
same-cluster-pair  first, second, task, demonstrations?            True (same) / False
=================  ==============================================  ==========================

``meta``: triplet-choice ``{anchor: id, options: [id, id]}``; same-cluster-pair ``{first: id,
second: id}``; ids are positions in the test split (``part: "test"``) or the training pool.
A demonstration of same-cluster-pair is ``[first text, second text, label of the first,
label of the second]``: a "Yes" example when the two labels are equal, a "No" one otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gcdbench.api import GcdbenchError
from gcdbench.api.feedback import Query
from gcdbench.api.prompts import PromptTemplate
from gcdbench.api.query_kind import TASK, ChoiceKind, Field, GoldView

TEMPLATES = Path(__file__).parent / "templates"
TRIPLET = "triplet-choice"
PAIR = "same-cluster-pair"


class TripletChoice(ChoiceKind):
    """Which of two texts better matches the query by ``task`` (ClusterLLM's triplet)."""

    name = TRIPLET
    description = "which of two texts better matches the query in terms of the task (ClusterLLM)"
    payload = (Field("query", "str"), Field("options", "list[str]"), TASK)
    meta = (Field("anchor", "int", False), Field("options", "list[int]", False))
    option_meta = "options"
    template_dir = TEMPLATES
    default_template = "clusterllm-v1"
    # "Choice 1" / "Choice 2": the released code asks for at most 10 tokens.
    max_tokens = 10

    def check(self, query: Query) -> None:
        super().check(query)
        if len(self.options(query)) != 2:
            raise GcdbenchError(
                f"{self.name} query has {len(self.options(query))} options; a triplet offers "
                "exactly two."
            )

    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        anchor = gold.labels(query, [gold.meta(query, "anchor")])[0]
        options = gold.labels(query, gold.meta(query, "options"))
        return [i for i, y in enumerate(options) if y == anchor]


class SameClusterPair(ChoiceKind):
    """Do two texts belong to the same category? Yes/No, after labelled demonstrations."""

    name = PAIR
    description = "do two texts share a category? (value: True or False; ClusterLLM granularity)"
    payload = (
        Field("first", "str"),
        Field("second", "str"),
        TASK,
        Field("demonstrations", "list[list[str]]", required=False),
    )
    meta = (Field("first", "int", False), Field("second", "int", False))
    options_field = None
    template_dir = TEMPLATES
    default_template = "clusterllm-v1"
    max_tokens = 10

    def options(self, query: Query) -> list[str]:
        return ["Yes", "No"]

    def check(self, query: Query) -> None:
        super().check(query)
        for demo in query.payload.get("demonstrations", ()):
            if len(demo) != 4:
                raise GcdbenchError(
                    f"{self.name} demonstration {demo!r} must be [first text, second text, "
                    "label of the first, label of the second]."
                )

    def subject(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return {"first": payload["first"], "second": payload["second"]}

    def body(self, payload: Mapping[str, Any], template: PromptTemplate) -> list[str]:
        """The demonstrations, "Yes" or "No" each with a one-line reason naming the labels
        (ClusterLLM's in-context examples)."""
        demos = payload.get("demonstrations") or []
        if not demos:
            return []
        task = payload.get("task", "intent")
        lines = []
        for n, (first, second, label1, label2) in enumerate(demos, start=1):
            section = "demo_same" if label1 == label2 else "demo_different"
            lines.append(
                template.fill(
                    section,
                    n=n,
                    first=first,
                    second=second,
                    label=label1,
                    label1=label1,
                    label2=label2,
                    task=task,
                )
            )
        header = template.sections.get("demo_header", "")
        return ["\n\n".join([header, *lines] if header else lines)]

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


KINDS = (TripletChoice(), SameClusterPair())
