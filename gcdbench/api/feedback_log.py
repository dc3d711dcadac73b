"""What a feedback method reports about the questions it asked, for diagnostics.

A method never sees gold labels, so it cannot score its own feedback. It fills a
:class:`FeedbackLog` (who was asked about, which options, what came back, what the encoder
alone would have chosen, what was used) and returns it in ``MethodOutput.feedback_log``;
the runner, which holds the gold labels, scores it
(:func:`gcdbench.report.feedback_quality.score_feedback_log`) into the run record.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gcdbench.api.feedback import Answer, Query
from gcdbench.errors import GcdbenchError, check_lengths

INSTANCE = "select-similar-instance"
CATEGORY = "select-category"


@dataclass
class ChoiceLog:
    """One round's questions of one choice kind.

    ``options`` holds pool ids for :data:`INSTANCE` questions and cluster ids for
    :data:`CATEGORY` questions (whose gold reading needs the round's ``assignments``).
    ``chosen`` and ``encoder_choice`` are option positions (0-based, −1 for none).
    """

    kind: str
    round: int
    anchors: list[int]
    options: list[list[int]]
    chosen: list[int]
    statuses: list[str]
    confidences: list[float | None]
    encoder_choice: list[int]
    used: list[bool]
    assignments: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.anchors)
        lengths = {
            "options": len(self.options),
            "chosen": len(self.chosen),
            "statuses": len(self.statuses),
            "confidences": len(self.confidences),
            "encoder_choice": len(self.encoder_choice),
            "used": len(self.used),
        }
        check_lengths(f"ChoiceLog for {self.kind}", n, lengths, "log one entry per anchor.")
        if self.kind == CATEGORY and self.assignments is None:
            raise GcdbenchError("a select-category ChoiceLog needs the round's assignments.")


@dataclass
class DescriptionLog:
    """One round's cluster descriptions (one text per cluster) and how many fell back."""

    round: int
    texts: list[str]
    fallbacks: int = 0


@dataclass
class AskedLog:
    """One batch of questions of any registered kind, as asked and answered. The quality
    report judges each answer, and ``encoder_values`` (what the encoder alone would have
    answered, None where it has no opinion), with the kind's own rule
    (:meth:`gcdbench.api.query_kind.QueryKind.judge`); ``used`` says which answers the
    method acted on (all, when not given)."""

    kind: str
    round: int
    queries: list[Query]
    answers: list[Answer]
    encoder_values: list[Any] | None = None
    used: list[bool] | None = None

    def __post_init__(self) -> None:
        lengths = {"answers": len(self.answers)}
        if self.encoder_values is not None:
            lengths["encoder_values"] = len(self.encoder_values)
        if self.used is not None:
            lengths["used"] = len(self.used)
        check_lengths(f"AskedLog for {self.kind}", len(self.queries), lengths, "log one per query.")
        if any(q.kind != self.kind for q in self.queries):
            raise GcdbenchError(f"an AskedLog for {self.kind} holds queries of another kind.")


@dataclass
class FeedbackLog:
    """Everything a method asked: GLEAN's choice and description logs, and a log per batch
    for any other kind (:class:`AskedLog`)."""

    choices: list[ChoiceLog] = field(default_factory=list)
    descriptions: list[DescriptionLog] = field(default_factory=list)
    asked: list[AskedLog] = field(default_factory=list)
