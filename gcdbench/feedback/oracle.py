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
query's content, so answers do not depend on the order questions are asked in.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gcdbench.api.feedback import NO_CORRECT_OPTION, OK, Answer, FeedbackProvider, Query
from gcdbench.api.spec import canonical_json
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
        self.gold = gold
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
            if kind.answer == kinds.CHOICE and answer.value is not None:
                stats.positions[int(answer.value) + 1] += 1
            answers.append(answer)
        return answers

    def _answer(self, kind: kinds.QueryKind, query: Query) -> Answer:
        if kind.answer == kinds.CHOICE:
            return self._choose(query, kind.option_count(query), self._correct(query))
        ids = self._meta(query, "ids") if query.kind != "label-merging" else []
        names = [self._name(y) for y in self._labels(query, ids)]
        if query.kind == "characterize-cluster":
            name, count = Counter(names).most_common(1)[0]
            description = f"{count} of these {len(names)} texts are {name.replace('_', ' ')}"
            return Answer({"name": name, "description": description}, OK, confidence=1.0)
        if query.kind == "label-generation":
            return Answer(list(dict.fromkeys(names)), OK, confidence=1.0)
        # label-merging: each label that names a gold class becomes that class's name.
        lookup = {_norm(n): n for n in self._all_names()}
        merged = [lookup.get(_norm(label), label) for label in query.payload["labels"]]
        return Answer(list(dict.fromkeys(merged)), OK, confidence=1.0)

    def _correct(self, query: Query) -> list[int]:
        if query.kind == "select-similar-instance":
            anchor = self._labels(query, [self._meta(query, "anchor")])[0]
            options = self._labels(query, self._meta(query, "options"))
            return [i for i, y in enumerate(options) if y == anchor]
        if query.kind == "select-category":
            anchor = self._labels(query, [self._meta(query, "anchor")])[0]
            majorities = [
                Counter(self._labels(query, members).tolist()).most_common(1)[0][0]
                if len(members)
                else -1
                for members in self._meta(query, "option_members")
            ]
            return [i for i, y in enumerate(majorities) if y == anchor]
        y = int(self._labels(query, [self._meta(query, "id")])[0])
        accepted = {_norm(self.gold.classes[y]), _norm(self._name(y))}
        return [i for i, label in enumerate(query.payload["labels"]) if _norm(label) in accepted]

    def _choose(self, query: Query, n: int, correct: list[int]) -> Answer:
        rng = self._rng(query)
        wrong = [i for i in range(n) if i not in correct]
        p = self._accuracy(query.kind)
        if p is None:  # the exact oracle
            if not correct:
                return Answer(None, NO_CORRECT_OPTION, confidence=1.0)
            return Answer(int(rng.choice(correct)), OK, confidence=1.0)
        right = bool(rng.random() < p)
        pool = correct if (right and correct) or not wrong else wrong
        return Answer(int(rng.choice(pool)), OK)

    def _accuracy(self, kind: str) -> float | None:
        if self.accuracy is None:
            return None
        return self.accuracy.get(kind, self.accuracy.get("*", 1.0))

    def _rng(self, query: Query) -> np.random.Generator:
        content = canonical_json(
            {"kind": query.kind, "payload": _plain(query.payload), "meta": _plain(query.meta)}
        )
        return keyed_generator(self.seed, content)

    def _meta(self, query: Query, key: str) -> Any:
        if key not in query.meta:
            raise GcdbenchError(
                f"the oracle answers {query.kind} from meta[{key!r}] (pool ids), which this "
                "query lacks; the method must pass it."
            )
        return query.meta[key]

    def _labels(self, query: Query, ids: Sequence[int]) -> np.ndarray:
        part = query.meta.get("part", "train")
        gold_y = self.gold.test_y if part == "test" else self.gold.train_y
        index = np.asarray(list(ids), dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= len(gold_y)):
            raise GcdbenchError(
                f"{query.kind} query names ids outside the {part} pool (0..{len(gold_y) - 1}); "
                "fix the method's meta."
            )
        return gold_y[index]

    def _name(self, y: int) -> str:
        key = self.gold.classes[int(y)]
        return str(self.gold.class_names.get(key, key))

    def _all_names(self) -> list[str]:
        return [self._name(y) for y in range(len(self.gold.classes))]

    def describe(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "spec": self.spec,
            "simulated": True,
            "accuracy": self.accuracy,
            "stats": self.stats.to_dict(),
        }


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(text).strip().lower())


def _plain(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj.item() if hasattr(obj, "item") else obj
