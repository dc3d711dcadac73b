"""Asking a batch of questions of any registered kind, as a method plugin does it.

:func:`ask` is the one way a method that is not built on the round loop (the LLM clustering
methods, refiners) puts questions to the run's feedback provider: one call per batch, so a
provider can batch, cache and count them; progress (questions answered, ledger hits) on the
run's reporter; the time under ``timings["feedback:KIND"]``; and the batch logged in a
:class:`~gcdbench.api.feedback_log.FeedbackLog`, from which the runner scores the answers
against gold (``diagnostics.feedback_quality``). Budget, retries and the ledger are the
provider's business: an answer the budget did not cover comes back with status
``budget-exhausted`` and ``value=None``, and the method carries on without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gcdbench.api.feedback import Answer, Query
from gcdbench.api.feedback_log import AskedLog, FeedbackLog
from gcdbench.api.progress import tally_questions
from gcdbench.errors import GcdbenchError

if TYPE_CHECKING:
    from gcdbench.api.context import RunContext


def ask(
    ctx: RunContext,
    queries: Sequence[Query],
    *,
    log: FeedbackLog | None = None,
    round_index: int = 0,
    encoder_values: Sequence[Any] | None = None,
    label: str | None = None,
) -> AskedLog:
    """Ask ``queries`` (all of one kind) in one batch and return them with their answers.

    ``encoder_values`` are what the method's encoder alone would have answered (None where it
    has no opinion): the quality report sets the LLM's accuracy beside them. The returned
    :class:`AskedLog` is appended to ``log`` when given; set its ``used`` to say which answers
    the method acted on. ``label`` names the batch in the progress display (default: the kind).
    """
    kinds = {q.kind for q in queries}
    if len(kinds) > 1:
        raise GcdbenchError(
            f"ask() takes one kind per batch, got {', '.join(sorted(kinds))}; ask each kind "
            "in its own call."
        )
    kind = next(iter(kinds)) if kinds else "none"
    answers: list[Answer] = []
    if queries:
        with (
            ctx.timed(f"feedback:{kind}"),
            tally_questions(ctx.reporter, label or kind, len(queries)),
        ):
            answers = list(ctx.feedback.answer(list(queries)))
    asked = AskedLog(
        kind=kind,
        round=round_index,
        queries=list(queries),
        answers=answers,
        encoder_values=list(encoder_values) if encoder_values is not None else None,
    )
    if log is not None and queries:
        log.asked.append(asked)
    return asked


def usable(answer: Answer) -> bool:
    """An answer a method may act on: ``ok``, with a value."""
    return answer.ok and answer.value is not None


__all__ = ["ask", "usable"]
