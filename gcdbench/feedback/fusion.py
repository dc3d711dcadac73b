"""Fusing a provider's answers with the encoder's similarities, fitted on labeled texts only.

A small model says, per offered option, how likely it is right from what both sides know:
the provider's probability for it (``Answer.scores``; a generated answer without scores
counts as all mass on its choice), its log, the option's cosine similarity to the anchor,
and that similarity's distance to the question's best. It is a logistic regression fitted on
the *calibration* bank's questions (gcdbench/runner/bank.py: labeled known-class anchors
and options, right answers from the labels a method holds), then applied to the bank's
questions: the fused answer is the option with the highest fitted probability. Where the
provider adds nothing, the fit leans on the similarity and the fused answer is the encoder's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gcdbench.api.feedback import Answer
from gcdbench.feedback.bank import BankQuestion

DIGITS = 4
FEATURES = ("provider_probability", "log_provider_probability", "cosine", "cosine_gap")
_EPS = 1e-4


def provider_probabilities(answer: Answer, n: int) -> list[float]:
    """The provider's probability per option (query order): its scores, else one-hot on
    its choice, else uniform (no answer)."""
    scores = getattr(answer, "scores", None)
    if scores and len(scores) == n:
        return [float(s) for s in scores]
    if answer.value is not None:
        return [1.0 if i == int(answer.value) else 0.0 for i in range(n)]
    return [1.0 / n] * n


def option_features(question: BankQuestion, answer: Answer) -> np.ndarray:
    """[options, len(FEATURES)] features of one question's options."""
    n = len(question.options)
    probs = provider_probabilities(answer, n)
    cosines = np.asarray(question.encoder_scores, dtype=np.float64)
    gap = cosines - cosines.max()
    return np.asarray(
        [[p, math.log(p + _EPS), c, g] for p, c, g in zip(probs, cosines, gap, strict=True)]
    )


def fit(questions: Sequence[BankQuestion], answers: Sequence[Answer], seed: int = 0) -> Any:
    """The fitted model, or None when the calibration questions cannot teach one (no right
    or no wrong option among them)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows, labels = [], []
    for q, a in zip(questions, answers, strict=True):
        if not q.correct:
            continue  # nothing right to learn from
        rows.append(option_features(q, a))
        labels += [int(i in q.correct) for i in range(len(q.options))]
    if not rows or len(set(labels)) < 2:
        return None
    # Standardised, so the regularisation weighs a small cosine gap like a probability.
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
    )
    return model.fit(np.vstack(rows), np.asarray(labels))


def fused_choices(
    model: Any, questions: Sequence[BankQuestion], answers: Sequence[Answer]
) -> list[int]:
    """Per question, the option with the highest fitted probability (ties: the first)."""
    out = []
    for q, a in zip(questions, answers, strict=True):
        p = model.predict_proba(option_features(q, a))[:, 1]
        out.append(int(np.argmax(p)))
    return out


def score_fusion(
    calibration: tuple[Sequence[BankQuestion], Sequence[Answer]],
    bank: tuple[Sequence[BankQuestion], Sequence[Answer]],
    seed: int = 0,
) -> dict[str, Any]:
    """Fit on ``calibration``, answer every question of ``bank``; accuracy beside the
    encoder's over all of them (the fused answer never abstains)."""
    model = fit(*calibration, seed=seed)
    questions, answers = bank
    out: dict[str, Any] = {"calibration_questions": len(calibration[0])}
    if model is None or not questions:
        return {**out, "fused_accuracy": None, "gain": None}
    chosen = fused_choices(model, questions, answers)
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
        # On standardised features: their sizes compare what the fit leans on.
        "coefficients": dict(
            zip(FEATURES, (round(float(c), DIGITS) for c in model[-1].coef_[0]), strict=True)
        ),
    }


__all__ = ["FEATURES", "fit", "fused_choices", "option_features", "score_fusion"]
