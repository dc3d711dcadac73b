"""Calibration questions about labeled texts and the fusion of a provider's answers with the
encoder's similarities (gcdbench/training/calibration.py, gcdbench/training/fusion.py), the
pieces GLEAN's ``fusion`` parameter and the feedback bank's ``--fusion`` share."""

from __future__ import annotations

import numpy as np
import pytest

from gcdbench.api.feedback import Answer
from gcdbench.training.calibration import calibration_questions
from gcdbench.training.fusion import fit_fusion, fused_choices, provider_probabilities
from gcdbench.training.mining import assignment_entropy
from tests.test_candidates import MEMBERS, _state

LABELED_Y = np.array([0, 1, 0, 2, 1, 0])  # pool ids 0..5 are labeled


def _calibration(count: int = 6, options: int = 3, ratio: float = 0.5, seed: int = 0):
    return calibration_questions(
        _state(), LABELED_Y, count, options, ratio, np.random.default_rng(seed)
    )


def test_calibration_questions_are_about_labeled_texts_only():
    state = _state()
    asked = _calibration()
    entropy = assignment_entropy(state.soft)[: len(LABELED_Y)]
    anchors = [q.anchor for q in asked.category]
    # The most uncertain labeled texts, most uncertain first; every labeled text once.
    assert sorted(anchors) == list(range(len(LABELED_Y)))
    assert list(entropy[anchors]) == sorted(entropy, reverse=True)
    for q in asked.instance:
        assert q.anchor < len(LABELED_Y) and q.anchor not in q.options
        assert all(o < len(LABELED_Y) for o in q.options)  # labeled options only
        assert 2 <= len(q.options) <= 3
        assert q.correct == tuple(
            i for i, o in enumerate(q.options) if LABELED_Y[o] == LABELED_Y[q.anchor]
        )
        # One option per cluster, in the anchor's ranking of clusters.
        clusters = [int(state.assignments[o]) for o in q.options]
        assert len(set(clusters)) == len(clusters)
        ranking = list(np.argsort(-state.soft[q.anchor], kind="stable"))
        assert clusters == sorted(clusters, key=ranking.index)


def test_category_calibration_is_right_where_the_labeled_majority_agrees():
    asked = _calibration()
    # Labeled members per cluster (MEMBERS ∩ 0..5): 0 → {0, 2, 5} (label 0),
    # 1 → {1, 4} (label 1), 2 → {3} (label 2), 3 → none (never right).
    majority = {0: 0, 1: 1, 2: 2}
    for q in asked.category:
        assert len(q.options) == 2  # floor(0.5 * 4)
        expected = tuple(
            i for i, c in enumerate(q.options) if majority.get(c) == LABELED_Y[q.anchor]
        )
        assert q.correct == expected
    assert [m for m in MEMBERS[3] if m < len(LABELED_Y)] == []


def test_calibration_draws_are_seeded_and_count_is_capped():
    assert _calibration(seed=3) == _calibration(seed=3)
    assert len(_calibration(count=2).category) == 2
    assert calibration_questions(
        _state(), np.array([], dtype=np.int64), 5, 3, 0.5, np.random.default_rng(0)
    ) == type(_calibration())((), ())


def _synthetic(n: int, provider_right: float, similarity_right: float, seed: int):
    """``n`` 4-option questions, option 0..3, one right; the provider puts its mass on the
    right option with probability ``provider_right`` (else on a wrong one); the encoder's
    similarity favours the right option with probability ``similarity_right``."""
    rng = np.random.default_rng(seed)
    answers, sims, correct = [], [], []
    for _ in range(n):
        right = int(rng.integers(4))
        pick = right if rng.random() < provider_right else int((right + rng.integers(1, 4)) % 4)
        answers.append(Answer(pick))
        s = rng.normal(0.3, 0.05, size=4)
        favoured = right if rng.random() < similarity_right else int((right + 1) % 4)
        s[favoured] += 0.2
        sims.append(s.tolist())
        correct.append((right,))
    return answers, sims, correct


def _accuracy(chosen, correct) -> float:
    return float(np.mean([c in r for c, r in zip(chosen, correct, strict=True)]))


@pytest.mark.parametrize(
    ("provider_right", "similarity_right", "follows"),
    [(0.95, 0.3, "provider"), (0.25, 0.9, "encoder")],
)
def test_fusion_leans_on_whichever_side_is_right_more_often(
    provider_right, similarity_right, follows
):
    model = fit_fusion(*_synthetic(200, provider_right, similarity_right, seed=1))
    answers, sims, correct = _synthetic(200, provider_right, similarity_right, seed=2)
    fused = _accuracy(fused_choices(model, answers, sims), correct)
    provider = _accuracy([a.value for a in answers], correct)
    encoder = _accuracy([int(np.argmax(s)) for s in sims], correct)
    assert fused >= max(provider, encoder) - 0.03
    assert (provider > encoder) == (follows == "provider")


def test_fusion_needs_right_and_wrong_options_to_learn_from():
    answers = [Answer(0), Answer(1)]
    sims = [[0.5, 0.1], [0.2, 0.3]]
    assert fit_fusion(answers, sims, [(), ()]) is None  # no question with a right option
    assert fit_fusion(answers[:1], [[0.5]], [(0,)]) is None  # no wrong option


def test_provider_probabilities_from_scores_choice_or_nothing():
    assert provider_probabilities(Answer(1, scores=(0.2, 0.5, 0.3)), 3) == [0.2, 0.5, 0.3]
    assert provider_probabilities(Answer(2), 3) == [0.0, 0.0, 1.0]
    assert provider_probabilities(Answer(None, "error"), 4) == [0.25] * 4
