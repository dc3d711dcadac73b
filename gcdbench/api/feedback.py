"""Feedback providers answer typed queries about texts, a whole batch at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Query:
    """One question. ``kind`` names the query type (e.g. ``select-similar-instance``);
    ``payload`` holds its inputs (texts, options) and ``meta`` what only oracles and
    diagnostics may read (sample ids)."""

    kind: str
    payload: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """``value`` is the parsed answer, or None when nothing usable came back (``status``
    says why: "ok", "parse-failure", "budget-exhausted", "error")."""

    value: Any
    status: str = "ok"
    raw: str = ""
    confidence: float | None = None
    cached: bool = False


class FeedbackProvider(ABC):
    name: str
    description: str = ""
    simulated: bool = False  # True for oracles: the run record says so

    @abstractmethod
    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        """Answers in the order of ``queries``; one call per round's batch."""
