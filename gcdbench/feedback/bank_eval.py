"""Scoring a feedback provider on a bank (gcdbench/feedback/bank.py): is its feedback worth
asking for, on this data, against the encoder's own answers to the same questions?

Per kind, over the bank's N questions (docs/feedback-bank.md defines each figure):

* ``accuracy``: right answers among answered ones (an answer with a value, used or not);
  ``encoder_accuracy_answered`` the encoder's on the same questions;
* ``kept``: answers with status ok (after the asking policy's filters — option-order
  agreement, confidence); ``accuracy_kept``, ``coverage_kept`` = kept / N and
  ``encoder_accuracy_kept`` on the kept questions;
* ``accuracy_with_fallback``: a kept answer where there is one, the encoder's choice
  elsewhere — what a method that acts on feedback where it has it gets — against
  ``encoder_accuracy`` over all N: their difference, ``gain``, is the headline;
* ``disagree``: kept answers that differ from the encoder's choice, and who was right;
* ``ece``: expected calibration error of the stated confidence (or option probability) over
  answered questions, 10 equal-width bins;
* ``positions``: the share of answers at each shown option position (from the provider's
  own count; a model with no position bias spreads like the encoder);
* ``ceiling``: the share of questions with a right option at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gcdbench.api.feedback import Answer, AskingPolicy, FeedbackProvider, Query
from gcdbench.feedback.bank import Bank, BankQuestion

DIGITS = 4
#: How category options are described: by the provider under test (as GLEAN does), or by
#: the clusters' representative texts (no LLM call; the same for every provider).
DESCRIBERS = ("provider", "texts")
CHARACTERIZE = "characterize-cluster"
ECE_BINS = 10


def descriptions(bank: Bank, provider: FeedbackProvider, describer: str) -> list[str]:
    """One description per bank cluster, written from its representatives."""
    from gcdbench.training.questions import description_text

    reps = [[bank.texts[i] for i in ids] for ids in bank.representatives]
    if describer == "texts":
        return [description_text(None, texts) for texts in reps]
    queries = [
        Query(
            CHARACTERIZE,
            {"texts": texts, "known_names": list(bank.known_names), "task": bank.task},
            {"ids": list(ids)},
            AskingPolicy(),
        )
        for texts, ids in zip(reps, bank.representatives, strict=True)
    ]
    answers = provider.answer(queries)
    return [description_text(a.value, t) for a, t in zip(answers, reps, strict=True)]


def score_kind(
    questions: Sequence[BankQuestion],
    answers: Sequence[Answer],
    positions: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The figures of the module docstring for one kind's questions and answers."""
    n = len(questions)
    right = [
        a.value is not None and int(a.value) in q.correct
        for q, a in zip(questions, answers, strict=True)
    ]
    enc_right = [q.encoder_choice in q.correct for q in questions]
    answered = [a.value is not None for a in answers]
    kept = [a.ok and a.value is not None for a in answers]
    fallback = [r if k else e for r, k, e in zip(right, kept, enc_right, strict=True)]
    disagree = [
        i
        for i, (q, a, k) in enumerate(zip(questions, answers, kept, strict=True))
        if k and int(a.value) != q.encoder_choice
    ]
    statuses: dict[str, int] = {}
    for a in answers:
        statuses[a.status] = statuses.get(a.status, 0) + 1
    out: dict[str, Any] = {
        "questions": n,
        "ceiling": _share(sum(bool(q.correct) for q in questions), n),
        "answered": sum(answered),
        "accuracy": _mean(right, answered),
        "encoder_accuracy_answered": _mean(enc_right, answered),
        "kept": sum(kept),
        "coverage_kept": _share(sum(kept), n),
        "accuracy_kept": _mean(right, kept),
        "encoder_accuracy_kept": _mean(enc_right, kept),
        "accuracy_with_fallback": _share(sum(fallback), n),
        "encoder_accuracy": _share(sum(enc_right), n),
        "disagree": {
            "kept": len(disagree),
            "feedback_right": _share(sum(right[i] for i in disagree), len(disagree)),
            "encoder_right": _share(sum(enc_right[i] for i in disagree), len(disagree)),
        },
        "ece": ece(
            [_confidence(a) for a, ok in zip(answers, answered, strict=True) if ok],
            [r for r, ok in zip(right, answered, strict=True) if ok],
        ),
        "statuses": dict(sorted(statuses.items())),
        "encoder_positions": _spread([q.encoder_choice + 1 for q in questions]),
    }
    with_fallback, encoder = out["accuracy_with_fallback"], out["encoder_accuracy"]
    out["gain"] = None if n == 0 else round(with_fallback - encoder, DIGITS)
    if positions:
        total = sum(positions.values())
        out["positions"] = {k: round(v / total, DIGITS) for k, v in sorted(positions.items())}
    return out


def ece(confidences: Sequence[float | None], right: Sequence[bool]) -> float | None:
    """Expected calibration error over the answers that state a confidence (None: none do)."""
    pairs = [(c, r) for c, r in zip(confidences, right, strict=True) if c is not None]
    if not pairs:
        return None
    bins: dict[int, list[tuple[float, bool]]] = {}
    for c, r in pairs:
        bins.setdefault(min(int(c * ECE_BINS), ECE_BINS - 1), []).append((c, r))
    total = 0.0
    for members in bins.values():
        conf = sum(c for c, _ in members) / len(members)
        acc = sum(r for _, r in members) / len(members)
        total += len(members) / len(pairs) * abs(acc - conf)
    return round(total, DIGITS)


def _confidence(answer: Answer) -> float | None:
    """The answer's stated confidence, else the probability its scores give the choice."""
    if answer.confidence is not None:
        return float(answer.confidence)
    scores = getattr(answer, "scores", None)
    if scores and answer.value is not None:
        return float(scores[int(answer.value)])
    return None


def _mean(values: Sequence[bool], mask: Sequence[bool]) -> float | None:
    chosen = [v for v, m in zip(values, mask, strict=True) if m]
    return _share(sum(chosen), len(chosen)) if chosen else None


def _share(count: float, total: int) -> float | None:
    return round(count / total, DIGITS) if total else None


def _spread(positions: Sequence[int]) -> dict[str, float]:
    counts: dict[int, int] = {}
    for p in positions:
        counts[p] = counts.get(p, 0) + 1
    return {str(k): round(v / len(positions), DIGITS) for k, v in sorted(counts.items())}


__all__ = ["DESCRIBERS", "descriptions", "ece", "score_kind"]
