"""Feedback providers answer typed queries about texts, a whole batch at a time.

A query kind (what goes in ``payload`` and ``meta``, what ``Answer.value`` holds) is a
plugin: :class:`gcdbench.api.query_kind.QueryKind`, registered by the method that asks it
(``gcdbench list query-kinds``). How a method wants its questions asked travels with each
query as an :class:`AskingPolicy`, part of the method's parameters. A provider is built per
run by a :class:`FeedbackProviderFactory` that a plugin registers
(``register_feedback_providers``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcdbench.api.spec import canonical_json
from gcdbench.errors import GcdbenchError

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


#: Option orders of a choice question (see :class:`AskingPolicy`).
LAYOUTS = ("cache-friendly", "official")
#: How a choice is scored (see :class:`AskingPolicy`): the generated reply, the
#: log-probabilities of the option labels, or one yes/no question per option.
GENERATE, LOGPROBS, YES_NO = "generate", "logprobs", "yes-no"
SCORINGS = (GENERATE, LOGPROBS, YES_NO)
#: How the answers of several option orders become one (see :class:`AskingPolicy`).
AGREE, AVERAGE = "agree", "average"
COMBINES = (AGREE, AVERAGE)


@dataclass(frozen=True)
class AskingPolicy:
    """How a method wants a question asked — declared in its parameters, so it is part of
    the run id once, and read only by the feedback layer (oracles ignore it):

    * ``orderings`` > 1 asks a choice in that many option orders, combined as ``combine``
      says;
    * ``min_confidence`` marks answers below it "low-confidence" (with ``generate`` scoring
      the prompt asks for a confidence; the others compute one from probabilities);
    * ``layout`` orders a choice prompt's sections (``cache-friendly`` or ``official``);
    * ``template`` picks a prompt template version other than the kind's default;
    * ``scoring`` reads a choice from the generated reply (``generate``), from the
      log-probabilities of the option labels "1".."n" at the first answer token
      (``logprobs``: one forward pass, a probability per option), or from one request per
      option asking Yes or No (``yes-no``: no positions at all, so no position bias; option
      probabilities are the softmax of the Yes/No log-odds; ``orderings``, ``combine`` and
      ``layout`` do not apply). ``yes-no`` needs a template with ``yes_no_*`` sections;
    * ``combine`` turns the answers of ``orderings`` option orders into one: ``agree`` (the
      orders must agree, else "inconsistent") or ``average`` (position debiasing: the orders
      are the first ``orderings`` cyclic rotations, their option probabilities are averaged
      in the query's own order and the answer is the most probable option; a generated
      choice counts as a one-hot distribution).

    What the backend needs (temperature, token limits, log-probabilities, constrained
    decoding) is not here: that is ``--llm-option``.
    """

    orderings: int = 1
    min_confidence: float | None = None
    layout: str = "cache-friendly"
    template: str | None = None
    scoring: str = GENERATE
    combine: str = AGREE

    def __post_init__(self) -> None:
        if self.orderings < 1:
            raise GcdbenchError(f"asking policy: orderings must be >= 1, got {self.orderings}.")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise GcdbenchError(
                f"asking policy: min_confidence must be in [0, 1], got {self.min_confidence}."
            )
        if self.layout not in LAYOUTS:
            raise GcdbenchError(
                f"asking policy: layout {self.layout!r} is not one of {', '.join(LAYOUTS)}."
            )
        if self.scoring not in SCORINGS:
            raise GcdbenchError(
                f"asking policy: scoring {self.scoring!r} is not one of {', '.join(SCORINGS)}."
            )
        if self.combine not in COMBINES:
            raise GcdbenchError(
                f"asking policy: combine {self.combine!r} is not one of {', '.join(COMBINES)}."
            )

    @property
    def filtering(self) -> bool:
        """Whether answers can be marked unusable (low-confidence or inconsistent)."""
        disagreeing = self.orderings > 1 and self.combine == AGREE and self.scoring != YES_NO
        return self.min_confidence is not None or disagreeing


@dataclass(frozen=True)
class Query:
    """One question. ``kind`` names a registered query kind (e.g.
    ``select-similar-instance``); ``payload`` holds what the answerer sees (texts, options),
    ``meta`` what only oracles and diagnostics may read (pool ids), and ``policy`` how the
    method wants it asked."""

    kind: str
    payload: Mapping[str, Any]
    meta: Mapping[str, Any] = field(default_factory=dict)
    policy: AskingPolicy = field(default_factory=AskingPolicy)

    def content_key(self) -> str:
        """The question itself (kind, payload, meta; not how it is asked) as canonical JSON:
        what seeds an oracle's noise and the option orders shown, so answers do not depend
        on the order questions are asked in."""
        return canonical_json(
            {"kind": self.kind, "payload": _plain(self.payload), "meta": _plain(self.meta)}
        )


def _plain(obj: Any) -> Any:
    """NumPy scalars and tuples as JSON has them."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj.item() if hasattr(obj, "item") else obj


@dataclass(frozen=True)
class Answer:
    """``value`` is the parsed answer (a 0-based option index for choice kinds), or None when
    nothing usable came back; ``status`` says why (see the constants above). A
    "low-confidence" answer keeps its value: methods that filter by confidence (GLEAN) test
    :attr:`ok`, methods that do not may still read ``value``.

    ``scores`` are a choice's per-option probabilities in the query's own option order
    (summing to 1) where the asking gives them (``logprobs`` or ``yes-no`` scoring, or
    ``average`` over option orders), else None: what calibration and a fusion with encoder
    similarities read."""

    value: Any
    status: str = OK
    raw: str = ""
    confidence: float | None = None
    cached: bool = False
    scores: tuple[float, ...] | None = None

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

    def checkpoint_state(self) -> dict[str, Any]:
        """What the provider has counted so far (what ``describe()`` reports as statistics),
        saved with a training run's round checkpoints (docs/resume.md) so that the record and
        the budgets see every question of a resumed run, not only those asked after it. Plain
        values and dataclasses of ``gcdbench.api`` and ``gcdbench.feedback.accounting``
        only; the default, for a provider that counts nothing, is empty."""
        return {}

    def restore_checkpoint_state(self, state: Mapping[str, Any]) -> None:  # noqa: B027
        """Continue counting from what :meth:`checkpoint_state` returned."""

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
