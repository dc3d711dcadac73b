"""Oracles: feedback simulated from gold labels, for upper bounds and fast CPU tests.

``oracle`` answers every query from the gold labels the runner passes in (methods never see
them). ``noisy-oracle:P`` answers a choice question right with probability P and otherwise
picks one of the wrong options uniformly; ``noisy-oracle:select-similar-instance=0.53,
select-category=0.859`` sets P per kind (a bare number is the default for the other kinds,
which are otherwise answered exactly). Generative kinds (names, label lists) are always
answered exactly.

When no offered option is right, ``oracle`` answers ``status="no-correct-option"`` with
``value=None`` (it knows), while ``noisy-oracle`` behaves like a model that must answer and
picks an option uniformly. Every draw comes from a generator seeded by the run seed and the
question's key (:meth:`Query.content_key`: kind, payload and meta, not the asking policy),
so answers do not depend on the order questions are asked in nor on how they are asked.
What a right answer is, each kind says (:meth:`ChoiceKind.correct_options`,
:meth:`QueryKind.oracle_answer`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gcdbench.api.feedback import NO_CORRECT_OPTION, OK, Answer, FeedbackProvider, Query
from gcdbench.api.query_kind import ChoiceKind, GoldView, QueryKind
from gcdbench.api.task import Gold
from gcdbench.errors import GcdbenchError
from gcdbench.feedback import kinds
from gcdbench.feedback.accounting import FeedbackStats
from gcdbench.util.random import keyed_generator


def parse_accuracy(arg: str | None) -> dict[str, float]:
    """``0.8`` → {"*": 0.8}; ``select-category=0.86,0.7`` → {"select-category": .86, "*": .7}."""
    if not arg:
        raise GcdbenchError(
            "noisy-oracle needs an accuracy: --llm noisy-oracle:0.8 or "
            "--llm noisy-oracle:select-similar-instance=0.53,select-category=0.859."
        )
    out: dict[str, float] = {}
    for piece in arg.split(","):
        kind, sep, value = piece.strip().rpartition("=")
        kind = kind.strip() if sep else "*"
        if kind != "*":
            kinds.get_kind(kind)
        try:
            p = float(value)
        except ValueError:
            p = -1.0
        if not 0.0 <= p <= 1.0:
            raise GcdbenchError(
                f"noisy-oracle accuracy {piece.strip()!r} must be a probability in [0, 1]; "
                "e.g. noisy-oracle:0.8."
            )
        out[kind] = p
    return out


class OracleProvider(FeedbackProvider):
    simulated = True

    def __init__(
        self,
        gold: Gold | None,
        seed: int,
        accuracy: Mapping[str, float] | None = None,
        *,
        spec: str = "",
    ) -> None:
        if gold is None:
            raise GcdbenchError(
                "oracle feedback answers from gold labels, which only `gcdbench run` passes "
                "in; use an LLM backend here (e.g. --llm llamacpp)."
            )
        self.name = "noisy-oracle" if accuracy is not None else "oracle"
        self.gold = GoldView(gold)
        self.seed = seed
        self.accuracy = dict(accuracy) if accuracy is not None else None
        self.spec = spec or self.name
        self.stats = FeedbackStats()

    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        answers = []
        for query in queries:
            kind = kinds.validate(query)
            answer = self._answer(kind, query)
            stats = self.stats.kind(query.kind)
            stats.queries += 1
            stats.statuses[answer.status] += 1
            if isinstance(kind, ChoiceKind) and answer.value is not None:
                stats.positions[kind.index(answer.value) + 1] += 1
            answers.append(answer)
        return answers

    def _answer(self, kind: QueryKind, query: Query) -> Answer:
        if not isinstance(kind, ChoiceKind):
            return kind.oracle_answer(query, self.gold)  # generative kinds: always exact
        correct = kind.correct_options(query, self.gold)
        rng = keyed_generator(self.seed, query.content_key())
        p = self._accuracy(query.kind)
        if p is None:  # the exact oracle
            if not correct:
                return Answer(None, NO_CORRECT_OPTION, confidence=1.0)
            return Answer(kind.value(int(rng.choice(correct))), OK, confidence=1.0)
        wrong = [i for i in range(len(kind.options(query))) if i not in correct]
        right = bool(rng.random() < p)
        pool = correct if (right and correct) or not wrong else wrong
        return Answer(kind.value(int(rng.choice(pool))), OK)

    def _accuracy(self, kind: str) -> float | None:
        if self.accuracy is None:
            return None
        return self.accuracy.get(kind, self.accuracy.get("*", 1.0))

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "spec": self.spec,
            "simulated": True,
            "accuracy": self.accuracy,
            "stats": self.stats.to_dict(),
        }

    def checkpoint_state(self) -> dict[str, Any]:
        return {"stats": self.stats}

    def restore_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.stats = state["stats"]
