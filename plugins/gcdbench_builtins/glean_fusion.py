"""GLEAN's ``fusion`` parameter: the LLM's answers fused with the encoder's similarities.

Each round, before a choice batch, GLEAN asks the same kind of question about labeled
known-class anchors (calibration questions: their right options follow from the labels the
method holds; gcdbench/training/calibration.py), fits the fusion model on those answers
(gcdbench/training/fusion.py) and answers each round question with the option the model
finds most likely right. Where the LLM adds nothing the fit follows the encoder, so fused
feedback is used where it is more likely right than the encoder alone. The fused answer
never abstains: a filtered or failed answer counts as no preference. docs/feedback-bank.md
has the bank numbers (BANKING: +6.0 on similar-instance, +0.0 on category with the
embedded model's yes/no scoring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gcdbench.api import Answer, ClusterState, GCDTask, RunContext, training
from gcdbench.api.feedback import OK
from gcdbench.api.feedback_log import CATEGORY, INSTANCE

Adjust = Callable[[list[Answer]], list[Answer]]


class RoundFusion:
    """Calibration questions asked and the fusion fitted, per round and kind."""

    def __init__(
        self,
        task: GCDTask,
        ctx: RunContext,
        asker: Any,
        samples: int,
        options: int,
        category_ratio: float,
    ) -> None:
        self.task, self.ctx, self.asker = task, ctx, asker
        self.samples, self.options, self.category_ratio = samples, options, category_ratio
        self.info: dict[str, Any] = {}
        self._set: Any = None

    def start_round(self, state: ClusterState, index: int) -> None:
        """Mine this round's calibration questions (asked kind by kind, when needed)."""
        self.info = {}
        self._set = training.calibration_questions(
            state,
            np.asarray(self.task.labeled_y),
            self.samples,
            self.options,
            self.category_ratio,
            self.ctx.rng(f"glean-calibration-{index}"),
        )

    def category_clusters(self) -> set[int]:
        """The clusters this round's calibration category questions offer (they need
        descriptions too)."""
        return {int(c) for q in self._set.category for c in q.options}

    def instance(self, state: ClusterState, style: Any, similarities: np.ndarray) -> Adjust:
        texts = self.task.train.texts
        questions = self._set.instance
        calibration_similarities = [
            training.encoder_similarities(
                state.features, np.asarray([q.anchor]), np.asarray([q.options])
            )[0]
            for q in questions
        ]
        queries = self.asker.queries(
            INSTANCE,
            [q.anchor for q in questions],
            [[texts[o] for o in q.options] for q in questions],
            style,
            [{"anchor": q.anchor, "options": list(q.options)} for q in questions],
        )
        return self._fitted(INSTANCE, queries, questions, calibration_similarities, similarities)

    def category(
        self,
        state: ClusterState,
        style: Any,
        descriptions: Sequence[str],
        members: Sequence[Sequence[int]],
        similarities: np.ndarray,
    ) -> Adjust:
        questions = self._set.category
        rows = np.asarray([q.options for q in questions], dtype=np.int64).reshape(
            len(questions), -1
        )
        anchors = np.asarray([q.anchor for q in questions], dtype=np.int64)
        calibration_similarities = list(training.cluster_similarities(state, anchors, rows))
        queries = self.asker.queries(
            CATEGORY,
            anchors,
            [[descriptions[c] for c in q.options] for q in questions],
            style,
            [
                {"anchor": q.anchor, "option_members": [members[c] for c in q.options]}
                for q in questions
            ],
        )
        return self._fitted(CATEGORY, queries, questions, calibration_similarities, similarities)

    def _fitted(
        self,
        kind: str,
        queries: list[Any],
        questions: Sequence[Any],
        calibration_similarities: Sequence[Any],
        similarities: np.ndarray,
    ) -> Adjust:
        answers = self.asker.ask(kind, queries, label=f"{kind} (calibration)")
        model = training.fit_fusion(
            answers,
            calibration_similarities,
            [q.correct for q in questions],
            seed=self.ctx.spec.seed,
        )
        info: dict[str, Any] = {
            "calibration_questions": len(questions),
            "fitted": model is not None,
        }
        self.info[kind] = info
        if model is not None:
            info["coefficients"] = training.coefficients(model)

        def adjust(round_answers: list[Answer]) -> list[Answer]:
            if model is None:
                return round_answers  # nothing to fit on: the LLM's answers as asked
            chosen = training.fused_choices(model, round_answers, list(similarities))
            encoder = similarities.argmax(axis=1)
            info["changed"] = sum(a.value != c for a, c in zip(round_answers, chosen, strict=True))
            info["same_as_encoder"] = int(
                sum(int(c) == int(e) for c, e in zip(chosen, encoder, strict=True))
            )
            return [
                dataclasses.replace(a, value=c, status=OK)
                for a, c in zip(round_answers, chosen, strict=True)
            ]

        return adjust
