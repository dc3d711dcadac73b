"""The question ALUP asks (docs/methods/alup.md §3): which of the representatives of the
clusters nearest an uncertain text shares its intent, or none of them.

=============  ===================================================  =========================
kind           payload                                              value
=============  ===================================================  =========================
alup-match     query, options[str], task?, examples[str]?           option index (0-based)
=============  ===================================================  =========================

The options are the candidate representatives' texts, in the order given, then one last
option "none of these". ``meta``: ``{anchor: pool id of the query, candidates: [pool ids of
the representatives]}``. ``examples`` are worked examples (the paper preset), each one
pre-formatted block of text.

Gold: a candidate is right when its gold class is the query's; when no candidate has it,
the last option ("none") is right, and only then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gcdbench.api import GcdbenchError
from gcdbench.api.feedback import Query
from gcdbench.api.prompts import PromptTemplate
from gcdbench.api.query_kind import TASK, ChatMessage, ChoiceKind, Field, GoldView

TEMPLATES = Path(__file__).parent / "templates"
MATCH = "alup-match"
#: how the last option reads where no template words it (counting, the quality report)
NONE_TEXT = "none of these"


class AlupMatch(ChoiceKind):
    name = MATCH
    description = (
        "which candidate text (one representative per nearby cluster) has the same category "
        "as the query, or none of them (ALUP)"
    )
    payload = (
        Field("query", "str"),
        Field("options", "list[str]"),
        TASK,
        Field("examples", "list[str]", False),
    )
    meta = (Field("anchor", "int", False), Field("candidates", "list[int]", False))
    template_dir = TEMPLATES
    default_template = "alup-v1"

    def options(self, query: Query) -> list[str]:
        return [*(str(o) for o in query.payload["options"]), NONE_TEXT]

    def none_index(self, query: Query) -> int:
        """The position of the last option, "none of these"."""
        return len(query.payload["options"])

    def check(self, query: Query) -> None:
        if not query.payload["options"]:
            raise GcdbenchError(f"{self.name} query has no candidate; give at least one.")
        candidates = query.meta.get("candidates")
        if candidates is not None and len(candidates) != len(query.payload["options"]):
            raise GcdbenchError(
                f"{self.name} query has {len(query.payload['options'])} candidates but "
                f"{len(candidates)} pool ids in meta.candidates; give one per candidate."
            )

    # -- prompt -----------------------------------------------------------------------------

    def render(
        self,
        query: Query,
        template: PromptTemplate,
        *,
        layout: str,
        answer_mode: str,
        order: Sequence[int] | None,
    ) -> tuple[ChatMessage, ...]:
        """ChoiceKind's layout with the last option worded by the template, and the worked
        examples (if any) between the instructions and the candidates."""
        task = query.payload.get("task", "intent")
        options = [*query.payload["options"], template.fill("none_option", task=task)]
        order = list(order) if order is not None else list(range(len(options)))
        lines = [
            template.fill("option_line", n=i + 1, text=options[j]) for i, j in enumerate(order)
        ]
        header = template.sections.get("options_header", "")
        options_block = "\n".join([header, *lines] if header else lines)
        subject = template.fill("subject", **self.subject(query.payload))
        head = self.head(query, template, answer_mode)
        context = self.body(query.payload, template)
        if layout == "official":
            return self.messages(template, [head, *context, subject, options_block])
        return self.messages(template, [head, *context, options_block, subject])

    def body(self, payload: Mapping[str, Any], template: PromptTemplate) -> list[str]:
        examples = list(payload.get("examples", ()))
        if not examples:
            return []
        header = template.sections.get("examples_header", "")
        joined = "\n\n".join(examples)
        return [f"{header}\n{joined}" if header else joined]

    # -- gold -------------------------------------------------------------------------------

    def correct_options(self, query: Query, gold: GoldView) -> list[int]:
        anchor = int(gold.labels(query, [gold.meta(query, "anchor")])[0])
        classes = gold.labels(query, gold.meta(query, "candidates")).tolist()
        hits = [i for i, y in enumerate(classes) if int(y) == anchor]
        return hits or [self.none_index(query)]


KINDS = (AlupMatch(),)
