"""Fusing a provider's answers to choice questions with the encoder's similarities.

A small model says, per offered option, how likely it is right from what both sides know:
the provider's probability for it (``Answer.scores``; a generated answer without scores
counts as all mass on its choice; no answer, as uniform), its log, the option's cosine
similarity to the anchor, and that similarity's distance to the question's best. It is a
standardised logistic regression fitted on *calibration* questions, whose right answers come
from labeled texts (:mod:`gcdbench.training.calibration`); the fused answer to any other
question is the option with the highest fitted probability. Where the provider adds
nothing, the fit leans on the similarity and the fused answer is the encoder's.
docs/feedback-bank.md has the measurements behind it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gcdbench.api.feedback import Answer

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


def option_features(answer: Answer, similarities: Sequence[float]) -> np.ndarray:
    """[options, len(FEATURES)] features of one question's options."""
    cosines = np.asarray(similarities, dtype=np.float64)
    probs = provider_probabilities(answer, len(cosines))
    gap = cosines - cosines.max()
    return np.asarray(
        [[p, math.log(p + _EPS), c, g] for p, c, g in zip(probs, cosines, gap, strict=True)]
    )


def fit_fusion(
    answers: Sequence[Answer],
    similarities: Sequence[Sequence[float]],
    correct: Sequence[Sequence[int]],
    seed: int = 0,
) -> Any:
    """The fitted model, or None when the calibration questions cannot teach one (no right
    or no wrong option among them). Questions without a right option teach nothing."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows, labels = [], []
    for answer, sims, right in zip(answers, similarities, correct, strict=True):
        if not right:
            continue
        rows.append(option_features(answer, sims))
        labels += [int(i in right) for i in range(len(sims))]
    if not rows or len(set(labels)) < 2:
        return None
    # Standardised, so the regularisation weighs a small cosine gap like a probability.
    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
    )
    return model.fit(np.vstack(rows), np.asarray(labels))


def fused_choices(
    model: Any, answers: Sequence[Answer], similarities: Sequence[Sequence[float]]
) -> list[int]:
    """Per question, the option with the highest fitted probability (ties: the first)."""
    return [
        int(np.argmax(model.predict_proba(option_features(a, s))[:, 1]))
        for a, s in zip(answers, similarities, strict=True)
    ]


def coefficients(model: Any, digits: int = 4) -> dict[str, float]:
    """The fit's weights on standardised features: their sizes compare what it leans on."""
    return dict(zip(FEATURES, (round(float(c), digits) for c in model[-1].coef_[0]), strict=True))


__all__ = [
    "FEATURES",
    "coefficients",
    "fit_fusion",
    "fused_choices",
    "option_features",
    "provider_probabilities",
]
