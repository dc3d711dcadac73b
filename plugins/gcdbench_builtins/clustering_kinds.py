"""The questions of LLM-only clustering (label generation → merging → classification,
Huang & He, arXiv 2410.00927), for the LLM methods that ask them.

=========================  ==========================================  =======================
kind                       payload                                     value
=========================  ==========================================  =======================
label-generation           texts[str], task, known_labels?             [label, ...]
label-merging              labels[str], task, target_count?            [label, ...]
classify-into-labels       text, labels[str], task                     label index (0-based)
=========================  ==========================================  =======================

``meta``: label-generation ``{ids: [id]}``; classify-into-labels ``{id: id}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from gcdbench.api import hookimpl
from gcdbench.api.feedback import Answer, Query
from gcdbench.api.parsing import Parsed, label_key, parse_labels
from gcdbench.api.prompts import PromptTemplate
from gcdbench.api.query_kind import TASK, ChoiceKind, Field, GoldView, QueryKind, exact

TEMPLATES = Path(__file__).parent / "templates"
_LABELS_SCHEMA = {
    "type": "object",
    "properties": {"labels": {"type": "array", "items": {"type": "string"}}},
    "required": ["labels"],
}


#: The longest label a bounded reply schema admits (a label is a few words).
MAX_LABEL_CHARS = 80


class _LabelList(QueryKind):
    """A reply that is a list of labels."""

    max_tokens = 300
    template_dir = TEMPLATES
    default_template = "llm-cluster-v1"

    def json_schema(self, query: Query) -> dict[str, Any]:
        return _LABELS_SCHEMA

    def decode(self, query: Query, text: str, order: Any = None) -> Parsed:
        return parse_labels(text)


class LabelGeneration(_LabelList):
    name = "label-generation"
    description = "propose category labels for a batch of texts (LLM-only clustering)"
    payload = (Field("texts", "list[str]"), Field("known_labels", "list[str]", False), TASK)
    meta = (Field("ids", "list[int]", False),)

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """The gold class names of the texts, each once, in order of appearance."""
        names = [gold.name(y) for y in gold.labels(query, gold.meta(query, "ids"))]
        return exact(list(dict.fromkeys(names)))


class LabelMerging(_LabelList):
    name = "label-merging"
    description = "merge near-duplicate labels into one list (LLM-only clustering)"
    # The reply is the whole merged list, often over a hundred labels at ~5 tokens each: the
    # shared 300 would cut it off mid-JSON (a parse failure, and the merge is lost).
    # llama.cpp lowers it to what the context window leaves.
    max_tokens = 2048
    payload = (Field("labels", "list[str]"), Field("target_count", "int", False), TASK)

    def items(self, payload: Mapping[str, Any]) -> Sequence[str]:
        return list(payload["labels"])

    def json_schema(self, query: Query) -> dict[str, Any]:
        """At most as many labels as were given, each of label length: a model that
        repeats itself (SmolLM2 did) stops there instead of at ``max_tokens``."""
        items = {"type": "string", "maxLength": MAX_LABEL_CHARS}
        bounded = {"type": "array", "items": items, "maxItems": len(query.payload["labels"])}
        return {**_LABELS_SCHEMA, "properties": {"labels": bounded}}

    def extra_instructions(self, query: Query, template: PromptTemplate) -> list[str]:
        if "target_count" not in query.payload:
            return []
        return [template.fill("target", count=query.payload["target_count"])]

    def oracle_answer(self, query: Query, gold: GoldView) -> Answer:
        """Each label that names a gold class becomes that class's name; the rest stay."""
        lookup = {label_key(n): n for n in gold.names()}
        merged = [lookup.get(label_key(label), label) for label in query.payload["labels"]]
        return exact(list(dict.fromkeys(merged)))


class ClassifyIntoLabels(ChoiceKind):
    name = "classify-into-labels"
    description = "which label fits the text (LLM-only clustering)"
    payload: ClassVar[tuple[Field, ...]] = (
        Field("text", "str"),
        Field("labels", "list[str]"),
        TASK,
    )
    meta = (Field("id", "int", False),)
    options_field = "labels"
    template_dir = TEMPLATES
    default_template = "llm-cluster-v1"

    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        """Labels equal to the text's gold class key or name (case, spaces, _ and - aside)."""
        y = int(gold.labels(query, [gold.meta(query, "id")])[0])
        accepted = {label_key(gold.class_key(y)), label_key(gold.name(y))}
        return [
            i for i, label in enumerate(query.payload["labels"]) if label_key(label) in accepted
        ]

    def reply_choices(self, query: Query, order: Sequence[int]) -> tuple[str, ...] | None:
        """The labels themselves, when they are distinct (a grammar needs distinct replies)."""
        shown = self.shown(query, order)
        return tuple(dict.fromkeys(shown)) if len(set(shown)) == len(shown) else None

    def shown_labels(self, query: Query, order: Sequence[int]) -> list[str] | None:
        return self.shown(query, order)


@hookimpl
def register_query_kinds(register):
    register(LabelGeneration())
    register(LabelMerging())
    register(ClassifyIntoLabels())
