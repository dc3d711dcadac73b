"""The question ``active-gcd`` asks (docs/methods/active-gcd.md §4): which group of the model's
label space a text belongs to.

=================  ===============================================  ==========================
kind               payload                                          value
=================  ===============================================  ==========================
assign-to-group    text, known[str], groups[[str]], task            option index (0-based)
=================  ===============================================  ==========================

The options are, in this order: one per known class (its name), one per novel head of the
classifier ("a new group like: <the texts nearest that head's prototype>"), and a last "none
of these groups". ``meta``: ``{id: pool id of the text, option_ids: [[pool ids]]}``, one list
per option: labeled texts of the known class, the exemplars shown for a novel head, and ``[]``
for the last option.

The oracle reveals the text's gold class *in the model's label space* (§4.2): an option's
class is the majority gold class of its ``option_ids`` (a tie goes to the first listed, the
exemplar nearest the prototype). A text of a known class has exactly one right option, its
class's name, even when some novel head's exemplars are of that class too: a known class's
label is its name. A text of a novel class may pick any novel head showing its class (several
heads can show one class). When no option shows the text's class, the last option is right.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from gcdbench.api import GcdbenchError
from gcdbench.api.feedback import Query
from gcdbench.api.prompts import PromptTemplate

# ChatMessage through the query-kind API module, the surface plugins may import from
from gcdbench.api.query_kind import TASK, ChatMessage, ChoiceKind, Field, GoldView

TEMPLATES = Path(__file__).parent / "templates"
ASSIGN = "assign-to-group"


class AssignToGroup(ChoiceKind):
    name = ASSIGN
    description = (
        "which group of the model's label space a text belongs to: a known class, a new "
        "group shown by example texts, or none (active-gcd)"
    )
    payload = (
        Field("text", "str"),
        Field("known", "list[str]"),
        Field("groups", "list[list[str]]"),
        TASK,
    )
    meta = (Field("id", "int", False), Field("option_ids", "list[list[int]]", False))
    options_field = None
    option_meta = "option_ids"
    template_dir = TEMPLATES
    default_template = "active-gcd-v1"
    #: what the options say without a template (counting, the quality report); the prompt
    #: words them with the template's ``known_option`` / ``group_option`` / ``none_option``
    _PLAIN: ClassVar[tuple[str, str, str]] = ("{}", "a new group like: {}", "none of these groups")

    def options(self, query: Query) -> list[str]:
        known, group, none = self._PLAIN
        p = query.payload
        return [
            *(known.format(name) for name in p["known"]),
            *(group.format(" / ".join(texts)) for texts in p["groups"]),
            none,
        ]

    def check(self, query: Query) -> None:
        super().check(query)
        if any(not texts for texts in query.payload["groups"]):
            raise GcdbenchError(f"{self.name} query shows a group without example texts.")

    def none_index(self, query: Query) -> int:
        """The position of the last option, "none of these groups"."""
        return len(query.payload["known"]) + len(query.payload["groups"])

    # -- prompt -----------------------------------------------------------------------------

    def option_texts(self, query: Query, template: PromptTemplate) -> list[str]:
        p = query.payload
        task = p.get("task", "intent")
        known = [template.fill("known_option", name=name, task=task) for name in p["known"]]
        groups = [
            template.fill(
                "group_option",
                examples=template.sections.get("example_separator", " / ").join(
                    template.fill("example", text=t) for t in texts
                ),
                task=task,
            )
            for texts in p["groups"]
        ]
        return [*known, *groups, template.fill("none_option", task=task)]

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[ChatMessage, ...]:
        """ChoiceKind's layout, with the options worded by the template: the options are the
        same for every question of a round, so the cache-friendly layout (text last) lets
        llama.cpp evaluate the long option list once per round."""
        options = self.option_texts(query, template)
        order = list(order) if order is not None else list(range(len(options)))
        lines = [
            template.fill("option_line", n=i + 1, text=options[j]) for i, j in enumerate(order)
        ]
        header = template.sections.get("options_header", "")
        options_block = "\n".join([header, *lines] if header else lines)
        subject = template.fill("subject", **self.subject(query.payload))
        head = self.head(query, template, answer_mode)
        if layout == "official":
            return self.messages(template, [head, subject, options_block])
        return self.messages(template, [head, options_block, subject])

    def body(self, payload: Mapping[str, Any], template: PromptTemplate) -> list[str]:
        return []

    # -- gold -------------------------------------------------------------------------------

    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        y = int(gold.labels(query, [gold.meta(query, "id")])[0])
        classes = [
            _majority(gold.labels(query, ids).tolist()) if len(ids) else None
            for ids in gold.meta(query, "option_ids")
        ]
        n_known = len(query.payload["known"])
        none = self.none_index(query)
        known_hits = [i for i in range(n_known) if classes[i] == y]
        if known_hits:
            return known_hits  # a known class's label is its name (module docstring)
        hits = [i for i in range(n_known, none) if classes[i] == y]
        return hits or [none]


def _majority(labels: Sequence[int]) -> int:
    """The most frequent label; a tie goes to the first listed (Counter keeps insertion order)."""
    return int(Counter(labels).most_common(1)[0][0])


KINDS = (AssignToGroup(),)
