"""A query rendered into chat messages by its kind, with the template its policy names.

Templates and the rendering rules belong to the query kinds (:mod:`gcdbench.api.prompts`,
:mod:`gcdbench.api.query_kind`); this is the one place the feedback layer calls them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gcdbench.api.feedback import Query
from gcdbench.api.prompts import CONFIDENCE, LAYOUTS, NUMBER, PLAIN, YES_NO, PromptTemplate
from gcdbench.api.query_kind import ChoiceKind
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.kinds import get_kind
from gcdbench.llm.api import ChatMessage

__all__ = ["CONFIDENCE", "LAYOUTS", "NUMBER", "PLAIN", "YES_NO", "RenderedPrompt", "render"]


@dataclass(frozen=True)
class RenderedPrompt:
    template: PromptTemplate
    messages: tuple[ChatMessage, ...]


def render(
    query: Query,
    *,
    answer_mode: str = PLAIN,
    order: Sequence[int] | None = None,
    option: int | None = None,
) -> RenderedPrompt:
    """Chat messages for ``query``; ``order`` lists option indices in the order shown. In
    answer mode ``yes-no`` the question is about option ``option`` of a choice alone."""
    kind = get_kind(query.kind)
    template = kind.template(query.policy.template)
    if answer_mode == YES_NO:
        if not isinstance(kind, ChoiceKind) or option is None:
            raise GcdbenchError(
                f"a yes/no question is about one option of a choice; {query.kind} "
                f"{'is not a choice kind' if option is not None else 'was given no option'}."
            )
        return RenderedPrompt(template, kind.render_yes_no(query, template, option))
    messages = kind.render(
        query, template, layout=query.policy.layout, answer_mode=answer_mode, order=order
    )
    return RenderedPrompt(template, messages)
