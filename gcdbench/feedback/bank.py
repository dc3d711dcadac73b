"""A feedback bank: a fixed, hashed set of a dataset's questions, each with its gold answer
and the encoder's own answer, for measuring a feedback provider before any training run.

The questions are mined the way GLEAN mines its first round (gcdbench/runner/bank.py builds
them): the most uncertain pool texts of the MTP-pre-trained model, one candidate text from
each of its top clusters (``select-similar-instance``), and its top clusters as categories
(``select-category``). A category question's options are the clusters' descriptions, which
the provider under test writes itself at evaluation (as GLEAN does) unless the evaluation
shows representative texts instead; so a category question is stored as the clusters it
offers, and its options are filled in at evaluation.

Everything a question shows or is judged by is in the bank, and the bank's id is the sha256
of all of it: two evaluations with the same bank id asked the same questions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcdbench.api.feedback import AskingPolicy, Query
from gcdbench.api.spec import canonical_json
from gcdbench.errors import GcdbenchError
from gcdbench.util.files import atomic_open

#: Bumped whenever the way a bank is mined changes, so no cached bank is reused across it.
BANK_FORMAT = 1
INSTANCE = "select-similar-instance"
CATEGORY = "select-category"
KINDS = (INSTANCE, CATEGORY)


@dataclass(frozen=True)
class BankQuestion:
    """One question: the anchor (a pool id), its options (pool ids for an instance question,
    cluster ids for a category question), which options are right by gold, and the option
    the encoder alone picks (highest cosine similarity) with every option's similarity."""

    anchor: int
    options: tuple[int, ...]
    correct: tuple[int, ...]
    encoder_choice: int
    encoder_scores: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchor": self.anchor,
            "options": list(self.options),
            "correct": list(self.correct),
            "encoder_choice": self.encoder_choice,
            "encoder_scores": [round(s, 6) for s in self.encoder_scores],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BankQuestion:
        return cls(
            int(data["anchor"]),
            tuple(int(o) for o in data["options"]),
            tuple(int(c) for c in data["correct"]),
            int(data["encoder_choice"]),
            tuple(float(s) for s in data["encoder_scores"]),
        )


@dataclass(frozen=True)
class Bank:
    """A dataset's questions per kind, and what they need to be shown.

    ``texts`` are the pool texts (ids index them), ``task`` the task word ("intent"),
    ``known_names`` the known classes' names (context for characterising clusters),
    ``demonstrations`` per kind the known-class examples shown with each question,
    ``clusters`` per cluster id its members (pool ids; gold majority decides a category
    answer) and its representatives (pool ids nearest its centre, what a description is
    written from), and ``source`` how the bank was mined (dataset, split, encoder, params).
    """

    source: Mapping[str, Any]
    texts: tuple[str, ...]
    task: str
    known_names: tuple[str, ...]
    demonstrations: Mapping[str, tuple[tuple[str, str], ...]]
    questions: Mapping[str, tuple[BankQuestion, ...]]
    members: tuple[tuple[int, ...], ...] = ()
    representatives: tuple[tuple[int, ...], ...] = ()
    bank_id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.questions) - set(KINDS))
        if unknown:
            raise GcdbenchError(f"a bank holds {', '.join(KINDS)} questions, not {unknown}.")
        if not self.bank_id:
            object.__setattr__(self, "bank_id", _sha256(self._content()))

    # -- (de)serialising ---------------------------------------------------------------------

    def _content(self) -> dict[str, Any]:
        return {
            "format": BANK_FORMAT,
            "source": dict(self.source),
            "texts": list(self.texts),
            "task": self.task,
            "known_names": list(self.known_names),
            "demonstrations": {k: [list(p) for p in v] for k, v in self.demonstrations.items()},
            "questions": {k: [q.to_dict() for q in v] for k, v in self.questions.items()},
            "members": [list(m) for m in self.members],
            "representatives": [list(r) for r in self.representatives],
        }

    def to_dict(self) -> dict[str, Any]:
        return {"bank_id": self.bank_id, **self._content()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Bank:
        if data.get("format") != BANK_FORMAT:
            raise GcdbenchError(
                f"feedback bank format {data.get('format')!r} is not {BANK_FORMAT}; "
                "delete the bank file and let `gcdbench feedback eval` build it again."
            )
        bank = cls(
            source=dict(data["source"]),
            texts=tuple(data["texts"]),
            task=str(data["task"]),
            known_names=tuple(data["known_names"]),
            demonstrations={
                k: tuple((str(t), str(label)) for t, label in v)
                for k, v in data["demonstrations"].items()
            },
            questions={
                k: tuple(BankQuestion.from_dict(q) for q in v) for k, v in data["questions"].items()
            },
            members=tuple(tuple(int(i) for i in m) for m in data["members"]),
            representatives=tuple(tuple(int(i) for i in r) for r in data["representatives"]),
        )
        if data.get("bank_id") and data["bank_id"] != bank.bank_id:
            raise GcdbenchError(
                f"feedback bank {data['bank_id'][:12]} does not match its content (it hashes "
                f"to {bank.bank_id[:12]}); it was edited or cut short: delete it and rebuild."
            )
        return bank

    def save(self, path: Path) -> None:
        with atomic_open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh)

    @classmethod
    def load(cls, path: Path) -> Bank:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise GcdbenchError(
                f"cannot read feedback bank {path} ({type(exc).__name__}: {exc}); delete it "
                "and let `gcdbench feedback eval` build it again."
            ) from None
        return cls.from_dict(data)

    # -- questions as a provider is asked them -------------------------------------------------

    def queries(
        self, kind: str, policy: AskingPolicy, descriptions: Sequence[str] = ()
    ) -> list[Query]:
        """The kind's questions as typed queries asked with ``policy``; category questions
        show ``descriptions[c]`` for cluster c (one per cluster)."""
        if kind == CATEGORY and len(descriptions) != len(self.members):
            raise GcdbenchError(
                f"category questions need one description per cluster ({len(self.members)}), "
                f"got {len(descriptions)}."
            )
        demos = [list(pair) for pair in self.demonstrations.get(kind, ())]
        out = []
        for q in self.questions.get(kind, ()):
            if kind == INSTANCE:
                shown = [self.texts[o] for o in q.options]
                meta: dict[str, Any] = {"anchor": q.anchor, "options": list(q.options)}
            else:
                shown = [descriptions[c] for c in q.options]
                meta = {
                    "anchor": q.anchor,
                    "option_members": [list(self.members[c]) for c in q.options],
                }
            payload: dict[str, Any] = {
                "query": self.texts[q.anchor],
                "options": shown,
                "task": self.task,
            }
            if demos:
                payload["demonstrations"] = demos
            out.append(Query(kind, payload, meta, policy))
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "bank_id": self.bank_id,
            **{k: self.source[k] for k in ("dataset", "known_ratio", "seed") if k in self.source},
            "questions": {k: len(v) for k, v in self.questions.items()},
        }


def _sha256(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()


__all__ = ["BANK_FORMAT", "CATEGORY", "INSTANCE", "KINDS", "Bank", "BankQuestion"]
