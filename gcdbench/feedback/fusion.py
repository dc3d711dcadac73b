"""Scoring fusion on the feedback bank: fit a provider's answers with the encoder's
similarities on the *calibration* bank (gcdbench/runner/bank.py: labeled known-class anchors
and options, right answers from the labels a method holds), then answer the bank's questions
with the fused choice (:mod:`gcdbench.training.fusion`, the model GLEAN's ``fusion``
parameter fits each round).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gcdbench.api.feedback import Answer
from gcdbench.feedback.bank import BankQuestion
from gcdbench.training.fusion import coefficients, fit_fusion, fused_choices

DIGITS = 4


def score_fusion(
    calibration: tuple[Sequence[BankQuestion], Sequence[Answer]],
    bank: tuple[Sequence[BankQuestion], Sequence[Answer]],
    seed: int = 0,
) -> dict[str, Any]:
    """Fit on ``calibration``, answer every question of ``bank``; accuracy beside the
    encoder's over all of them (the fused answer never abstains)."""
    cal_questions, cal_answers = calibration
    model = fit_fusion(
        cal_answers,
        [q.encoder_scores for q in cal_questions],
        [q.correct for q in cal_questions],
        seed=seed,
    )
    questions, answers = bank
    out: dict[str, Any] = {"calibration_questions": len(cal_questions)}
    if model is None or not questions:
        return {**out, "fused_accuracy": None, "gain": None}
    chosen = fused_choices(model, answers, [q.encoder_scores for q in questions])
    right = sum(c in q.correct for c, q in zip(chosen, questions, strict=True))
    encoder = sum(q.encoder_choice in q.correct for q in questions)
    follows = sum(c == q.encoder_choice for c, q in zip(chosen, questions, strict=True))
    n = len(questions)
    return {
        **out,
        "fused_accuracy": round(right / n, DIGITS),
        "encoder_accuracy": round(encoder / n, DIGITS),
        "gain": round((right - encoder) / n, DIGITS),
        "same_as_encoder": round(follows / n, DIGITS),
        "coefficients": coefficients(model, DIGITS),
    }


__all__ = ["score_fusion"]
