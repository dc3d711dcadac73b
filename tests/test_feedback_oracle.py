"""Oracles: exact answers from gold labels, and a noisy oracle whose accuracy is P."""

from __future__ import annotations

import numpy as np
import pytest

from gcdbench.api.feedback import FeedbackEnv, Query
from gcdbench.api.task import Gold
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.oracle import OracleProvider, parse_accuracy
from gcdbench.feedback.resolve import open_feedback

CLASSES = tuple(f"class_{c}" for c in range(10))


@pytest.fixture(scope="module")
def gold() -> Gold:
    rng = np.random.default_rng(123)
    train_y = rng.integers(0, 10, size=5000)
    return Gold(CLASSES, {c: c for c in CLASSES}, np.arange(3), train_y, train_y[:200])


def choice_questions(gold: Gold, n: int, seed: int = 0) -> tuple[list[Query], list[int]]:
    """Five-way instance questions with exactly one right option; returns the right index."""
    rng = np.random.default_rng(seed)
    by_class = {c: np.flatnonzero(gold.train_y == c) for c in range(10)}
    queries, right = [], []
    for _ in range(n):
        anchor = int(rng.integers(len(gold.train_y)))
        y = int(gold.train_y[anchor])
        others = rng.choice([c for c in range(10) if c != y], size=4, replace=False)
        classes = [y, *others.tolist()]
        rng.shuffle(classes)
        ids = [int(rng.choice(by_class[c])) for c in classes]
        queries.append(
            Query(
                "select-similar-instance",
                {"query": "q", "options": ["a"] * 5},
                {"anchor": anchor, "options": ids},
            )
        )
        right.append(classes.index(y))
    return queries, right


def test_exact_oracle_is_always_right_and_simulated(gold):
    queries, right = choice_questions(gold, 300)
    oracle = OracleProvider(gold, seed=0)
    answers = oracle.answer(queries)
    assert [a.value for a in answers] == right and oracle.simulated
    assert oracle.describe()["stats"]["total"]["statuses"] == {"ok": 300}


@pytest.mark.parametrize("p", [0.53, 0.859])
def test_noisy_oracle_accuracy_is_p_and_wrong_options_are_uniform(gold, p):
    queries, right = choice_questions(gold, 2000)
    answers = OracleProvider(gold, seed=7, accuracy={"*": p}).answer(queries)
    values = np.array([a.value for a in answers])
    correct = values == np.array(right)
    # 2,000 Bernoulli(p) draws: 4 standard deviations is < 0.045.
    assert abs(correct.mean() - p) < 4 * np.sqrt(p * (1 - p) / 2000)
    wrong_offsets = (values[~correct] - np.array(right)[~correct]) % 5  # 1..4
    counts = np.bincount(wrong_offsets, minlength=5)[1:]
    expected = (~correct).sum() / 4
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom, p = 0.001


def test_noisy_oracle_is_deterministic_per_seed_and_order_free(gold):
    queries, _ = choice_questions(gold, 200)
    a = [x.value for x in OracleProvider(gold, 1, {"*": 0.5}).answer(queries)]
    b = [x.value for x in OracleProvider(gold, 1, {"*": 0.5}).answer(queries[::-1])][::-1]
    c = [x.value for x in OracleProvider(gold, 2, {"*": 0.5}).answer(queries)]
    assert a == b and a != c


def test_per_kind_accuracy(gold):
    assert parse_accuracy("select-similar-instance=0.53,select-category=0.859") == {
        "select-similar-instance": 0.53,
        "select-category": 0.859,
    }
    assert parse_accuracy("0.9,select-category=0.5") == {"*": 0.9, "select-category": 0.5}
    with pytest.raises(GcdbenchError, match="Did you mean 'select-category'"):
        parse_accuracy("select-categry=0.5")
    queries, right = choice_questions(gold, 300)
    exact_elsewhere = OracleProvider(gold, 0, parse_accuracy("select-category=0.1"))
    assert [a.value for a in exact_elsewhere.answer(queries)] == right


def test_no_correct_option(gold):
    anchor = int(np.flatnonzero(gold.train_y == 0)[0])
    wrong = [int(i) for i in np.flatnonzero(gold.train_y != 0)[:3]]
    query = Query(
        "select-similar-instance",
        {"query": "q", "options": ["a"] * 3},
        {"anchor": anchor, "options": wrong},
    )
    [exact] = OracleProvider(gold, 0).answer([query])
    assert (exact.status, exact.value) == ("no-correct-option", None)
    [noisy] = OracleProvider(gold, 0, {"*": 0.9}).answer([query])
    assert noisy.status == "ok" and noisy.value in {0, 1, 2}


def test_every_kind_is_answered_from_gold(gold):
    ids0 = [int(i) for i in np.flatnonzero(gold.train_y == 0)[:6]]
    ids3 = [int(i) for i in np.flatnonzero(gold.train_y == 3)[:4]]
    queries = [
        Query(
            "select-category",
            {"query": "q", "options": ["d1", "d2"]},
            {"anchor": ids3[0], "option_members": [ids0, ids3[1:]]},
        ),
        Query("characterize-cluster", {"texts": ["t"] * 7}, {"ids": ids0 + ids3[:1]}),
        Query("label-generation", {"texts": ["t"] * 3}, {"ids": [ids3[0], ids0[0], ids3[1]]}),
        Query("label-merging", {"labels": ["Class 3", "class_3", "new thing"]}),
        Query(
            "classify-into-labels", {"text": "t", "labels": ["class 1", "Class 3"]}, {"id": ids3[0]}
        ),
        Query(
            "classify-into-labels",
            {"text": "t", "labels": ["class_0"]},
            {"id": int(np.flatnonzero(gold.test_y == 0)[0]), "part": "test"},
        ),
    ]
    answers = OracleProvider(gold, 0).answer(queries)
    assert answers[0].value == 1
    assert (
        answers[1].value["name"] == "class_0" and "6 of these 7" in answers[1].value["description"]
    )
    assert answers[2].value == ["class_3", "class_0"]
    assert answers[3].value == ["class_3", "new thing"]
    assert answers[4].value == 1 and answers[5].value == 0


def test_oracle_needs_gold_and_meta(gold):
    with pytest.raises(GcdbenchError, match="gold labels"):
        open_feedback("oracle", FeedbackEnv())
    query = Query("select-similar-instance", {"query": "q", "options": ["a", "b"]})
    with pytest.raises(GcdbenchError, match=r"meta\['anchor'\]"):
        OracleProvider(gold, 0).answer([query])
