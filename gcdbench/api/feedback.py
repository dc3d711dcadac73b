"""Feedback providers answer typed queries about texts, a whole batch at a time.

The query kinds (what goes in ``payload`` and ``meta``, what ``Answer.value`` holds) are
listed in :mod:`gcdbench.feedback.kinds`. A provider is built per run by a
:class:`FeedbackProviderFactory` that a plugin registers (``register_feedback_providers``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gcdbench.api.task import Gold

#: Answer statuses. Only "ok" answers should be used as they are; "low-confidence" keeps the
#: value so a method can decide (GLEAN drops them), every other status has ``value=None``.
OK = "ok"
LOW_CONFIDENCE = "low-confidence"
PARSE_FAILURE = "parse-failure"
INCONSISTENT = "inconsistent"
ERROR = "error"
BUDGET_EXHAUSTED = "budget-exhausted"
NO_CORRECT_OPTION = "no-correct-option"
STATUSES = (OK, LOW_CONFIDENCE, PARSE_FAILURE, INCONSISTENT, ERROR, BUDGET_EXHAUSTED,
            NO_CORRECT_OPTION)  # fmt: skip


@dataclass(frozen=True)
class Query:
    """One question. ``kind`` names the query type (e.g. ``select-similar-instance``);
    ``payload`` holds what the answerer sees (texts, options) and ``meta`` what only oracles
    and diagnostics may read (pool ids)."""

    kind: str
    payload: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    """``value`` is the parsed answer (a 0-based option index for choice kinds), or None when
    nothing usable came back; ``status`` says why (see the constants above). A
    "low-confidence" answer keeps its value: methods that filter by confidence (GLEAN) test
    :attr:`ok`, methods that do not may still read ``value``."""

    value: Any
    status: str = OK
    raw: str = ""
    confidence: float | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclass(frozen=True)
class FeedbackEnv:
    """What the runner hands a factory: the run seed, gold labels (only oracles read them),
    and where answers are kept."""

    seed: int = 0
    gold: Gold | None = None
    ledger_path: Path | None = None
    offline: bool = False
    run_hash: str = ""


class FeedbackProvider(ABC):
    name: str
    description: str = ""
    simulated: bool = False  # True for oracles: the run record says so

    @abstractmethod
    def answer(self, queries: Sequence[Query]) -> list[Answer]:
        """Answers in the order of ``queries``; one call per round's batch."""

    def describe(self) -> dict[str, Any]:
        """The run record's ``feedback`` section: identity, options and statistics."""
        return {"provider": self.name, "simulated": self.simulated}

    def close(self) -> None:  # noqa: B027 - optional
        """Release models, connections and the ledger."""


class FeedbackProviderFactory(ABC):
    """What a plugin registers: a named way to build a provider for one run.

    ``arg`` is what follows ``NAME:`` in ``--llm NAME:ARG``; ``options`` are the
    ``--llm-option key=value`` pairs. :meth:`check` validates both before anything runs.
    """

    name: str
    description: str = ""
    simulated: bool = False

    def check(self, arg: str | None, options: Mapping[str, str]) -> None:  # noqa: B027
        """Raise :class:`gcdbench.errors.GcdbenchError` for a bad argument or option."""

    @abstractmethod
    def create(
        self, arg: str | None, options: Mapping[str, str], env: FeedbackEnv
    ) -> FeedbackProvider: ...
