"""Asking a round's questions as batches, for the methods that train with feedback.

GLEAN and Loop share this: turn (anchor, candidate) arrays into typed queries, send them to
the run's feedback provider in one batch per kind, decide which answers are used, and log
everything the runner needs to score the feedback against gold
(:mod:`gcdbench.api.feedback_log`). No training code here and no gold labels.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api.feedback import Answer, AskingPolicy, FeedbackProvider, Query
from gcdbench.api.feedback_log import CATEGORY, ChoiceLog, FeedbackLog
from gcdbench.api.progress import tally_questions
from gcdbench.api.task import GCDTask

if TYPE_CHECKING:
    from gcdbench.api.context import RunContext

CHARACTERIZE = "characterize-cluster"


@dataclass(frozen=True)
class AskingStyle:
    """What a method shows with its choice questions (demonstrations: GLEAN's "Task
    Context") and how it asks them (its :class:`AskingPolicy`, from its parameters)."""

    demonstrations: Sequence[tuple[str, str]] = ()
    policy: AskingPolicy = field(default_factory=AskingPolicy)

    @property
    def filtering(self) -> bool:
        return self.policy.filtering

    def payload(self, task: GCDTask, query: str, options: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"query": query, "options": list(options), "task": task.task_word}
        if self.demonstrations:
            out["demonstrations"] = [list(pair) for pair in self.demonstrations]
        return out


def usable(answer: Answer, style: AskingStyle) -> bool:
    """An answer trains the model when it has a value and, if the method filters, passed
    the filters (the provider marks low-confidence and inconsistent answers)."""
    if answer.value is None:
        return False
    return answer.ok if style.filtering else True


def known_class_demonstrations(task: GCDTask, per_class: int) -> list[tuple[str, str]]:
    """The first ``per_class`` dev texts of every known class, in known-class order, with the
    class's name (GLEAN's "Task Context", docs/methods/glean.md §5.4). Never a novel class."""
    taken: Counter[int] = Counter()
    by_class: dict[int, list[str]] = {}
    for text, y in zip(task.dev.texts, np.asarray(task.dev_y).tolist(), strict=True):
        if taken[y] < per_class:
            taken[y] += 1
            by_class.setdefault(y, []).append(text)
    return [(text, task.known_class_names[y]) for y in sorted(by_class) for text in by_class[y]]


@dataclass
class ChoiceRound:
    """What one batch of choice questions gave: the answers, and which are used."""

    anchors: np.ndarray
    options: np.ndarray
    answers: list[Answer]
    used: list[bool]

    def chosen(self) -> dict[int, int]:
        """anchor -> the chosen option's id (pool id or cluster id), for used answers."""
        return {
            int(a): int(row[ans.value])
            for a, row, ans, ok in zip(
                self.anchors, self.options, self.answers, self.used, strict=True
            )
            if ok
        }

    def summary(self) -> dict[str, Any]:
        statuses = Counter(a.status for a in self.answers)
        return {"asked": len(self.answers), "used": int(sum(self.used)), "statuses": dict(statuses)}


@dataclass
class Asker:
    """Asks a run's questions through ``ctx.feedback`` and keeps the log."""

    task: GCDTask
    ctx: RunContext
    log: FeedbackLog = field(default_factory=FeedbackLog)

    @property
    def provider(self) -> FeedbackProvider:
        return self.ctx.feedback

    def choose(
        self,
        kind: str,
        round_index: int,
        anchors: np.ndarray,
        options: np.ndarray,
        option_texts: Sequence[Sequence[str]],
        style: AskingStyle,
        *,
        meta: Sequence[Mapping[str, Any]],
        encoder_choice: np.ndarray,
        assignments: np.ndarray | None = None,
        adjust: Callable[[list[Answer]], list[Answer]] | None = None,
    ) -> ChoiceRound:
        """One batch of ``kind`` questions, anchor i choosing among ``option_texts[i]``.
        ``adjust`` turns the provider's answers into the ones the method uses (fusion with
        the encoder); the log holds what was used."""
        queries = self.queries(kind, anchors, option_texts, style, meta)
        answers = self.ask(kind, queries)
        if adjust is not None:
            answers = adjust(answers)
        used = [usable(a, style) for a in answers]
        self.log.choices.append(
            ChoiceLog(
                kind=kind,
                round=round_index,
                anchors=[int(a) for a in anchors],
                options=[[int(o) for o in row] for row in options],
                chosen=[int(a.value) if a.value is not None else -1 for a in answers],
                statuses=[a.status for a in answers],
                confidences=[a.confidence for a in answers],
                encoder_choice=[int(c) for c in encoder_choice],
                used=used,
                assignments=(
                    assignments.copy() if kind == CATEGORY and assignments is not None else None
                ),
            )
        )
        return ChoiceRound(np.asarray(anchors), np.asarray(options), answers, used)

    def queries(
        self,
        kind: str,
        anchors: Sequence[int] | np.ndarray,
        option_texts: Sequence[Sequence[str]],
        style: AskingStyle,
        meta: Sequence[Mapping[str, Any]],
    ) -> list[Query]:
        """``kind`` questions about training-pool anchors, as ``style`` asks them."""
        texts = self.task.train.texts
        return [
            Query(kind, style.payload(self.task, texts[int(a)], shown), dict(m), style.policy)
            for a, shown, m in zip(anchors, option_texts, meta, strict=True)
        ]

    def ask(self, kind: str, queries: Sequence[Query], *, label: str | None = None) -> list[Answer]:
        """One batch through the provider, timed and counted under ``label`` (the kind)."""
        label = label or kind
        with (
            self.ctx.timed(f"feedback:{label}"),
            tally_questions(self.ctx.reporter, label, len(queries)),
        ):
            return self.provider.answer(queries) if queries else []

    def characterize(
        self,
        groups: Sequence[Sequence[int]],
        texts: Sequence[str],
        *,
        known_names: Sequence[str] = (),
        policy: AskingPolicy | None = None,
        part: str = "train",
    ) -> list[Answer]:
        """A name and description (``Answer.value``, a dict; None where nothing usable came
        back) for each group of ``texts`` ids."""
        queries = []
        for ids in groups:
            payload: dict[str, Any] = {
                "texts": [texts[int(i)] for i in ids],
                "task": self.task.task_word,
            }
            if known_names:
                payload["known_names"] = list(known_names)
            meta: dict[str, Any] = {"ids": [int(i) for i in ids]}
            if part != "train":
                meta["part"] = part
            queries.append(Query(CHARACTERIZE, payload, meta, policy or AskingPolicy()))
        # Characterising the final test clusters is the methods' naming step (GLEAN, Loop).
        naming = self.ctx.reporter.stage("naming") if part == "test" else nullcontext()
        with (
            naming,
            self.ctx.timed(f"feedback:{CHARACTERIZE}"),
            tally_questions(self.ctx.reporter, CHARACTERIZE, len(queries)),
        ):
            answers = self.provider.answer(queries) if queries else []
        return answers


def description_text(value: Mapping[str, str] | None, fallback_texts: Sequence[str]) -> str:
    """A cluster's description as its candidates are shown; a cluster whose characterisation
    failed shows its first three texts instead (the reference's fallback, counted)."""
    if value is None:
        return "Fallback Description: " + " | ".join(fallback_texts[:3])
    name = str(value.get("name", "")).strip()
    description = str(value.get("description", "")).strip()
    return f"{name}: {description}" if name and description else name or description
