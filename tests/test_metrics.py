from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from gcdbench.metrics import cluster_acc, evaluate, hungarian_mapping


def brute_force_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best one-to-one cluster -> class assignment by trying every injective map."""
    classes, clusters = np.unique(y_true), np.unique(y_pred)
    best = 0
    if clusters.size <= classes.size:
        for image in itertools.permutations(classes, clusters.size):
            mapping = dict(zip(clusters, image, strict=True))
            best = max(best, sum(mapping[p] == t for t, p in zip(y_true, y_pred, strict=True)))
    else:
        for chosen in itertools.permutations(clusters, classes.size):
            mapping = dict(zip(chosen, classes, strict=True))
            best = max(best, sum(mapping.get(p) == t for t, p in zip(y_true, y_pred, strict=True)))
    return best / y_true.size


def test_permuted_labels_score_100() -> None:
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [2, 2, 0, 0, 1, 1]
    assert cluster_acc(y_true, y_pred) == 1.0
    assert hungarian_mapping(y_true, y_pred) == {2: 0, 0: 1, 1: 2}
    scores = evaluate(y_true, y_pred, known_classes=[0, 1])
    for key in ("acc", "ari", "nmi", "known_acc", "novel_acc", "h_score"):
        assert scores[key] == pytest.approx(100.0)


def test_one_error() -> None:
    # Contingency (cluster x class): cluster 0 = {class 0: 2}, cluster 1 = {class 0: 1,
    # class 1: 3}. Best matching 0->0, 1->1 gets 2 + 3 = 5 of 6 right: 83.33%.
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [0, 0, 1, 1, 1, 1]
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 6)
    assert evaluate(y_true, y_pred, [0, 1])["acc"] == pytest.approx(83.3333333)


def test_more_clusters_than_classes_non_contiguous_labels() -> None:
    # Classes 3 and 10, clusters 5, 9, 7. Cluster 5 = {3: 2}, cluster 9 = {3: 2},
    # cluster 7 = {10: 4}. Only one of 5/9 can take class 3: 2 + 4 = 6 of 8 = 0.75;
    # the other cluster's 2 samples are wrong.
    y_true = [3, 3, 3, 3, 10, 10, 10, 10]
    y_pred = [5, 5, 9, 9, 7, 7, 7, 7]
    assert cluster_acc(y_true, y_pred) == pytest.approx(0.75)
    mapping = hungarian_mapping(y_true, y_pred)
    assert len(mapping) == 2
    assert mapping[7] == 10
    assert set(mapping) - {7} <= {5, 9}
    assert evaluate(y_true, y_pred, [3])["known_acc"] == pytest.approx(50.0)


def test_fewer_clusters_than_classes() -> None:
    # Three classes, two clusters. Cluster 0 = {0: 2, 1: 2}, cluster 1 = {2: 3}.
    # Best: 1->2 (3) and 0->0 or 0->1 (2): 5 of 7 = 0.714285...; one class stays unmatched.
    y_true = [0, 0, 1, 1, 2, 2, 2]
    y_pred = [0, 0, 0, 0, 1, 1, 1]
    assert cluster_acc(y_true, y_pred) == pytest.approx(5 / 7)
    mapping = hungarian_mapping(y_true, y_pred)
    assert mapping[1] == 2
    assert mapping[0] in (0, 1)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize(("k_true", "k_pred"), [(3, 3), (5, 5), (6, 6), (4, 6), (6, 3), (2, 5)])
def test_matches_brute_force(seed: int, k_true: int, k_pred: int) -> None:
    rng = np.random.default_rng(seed)
    n = 40
    y_true = rng.integers(0, k_true, size=n)
    # Correlated but noisy predictions, so the best map is not trivially the identity.
    y_pred = np.where(rng.random(n) < 0.6, y_true % k_pred, rng.integers(0, k_pred, size=n))
    y_pred = (y_pred * 7 + 11) % 101  # non-contiguous cluster ids
    assert cluster_acc(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred))


@pytest.mark.parametrize("seed", range(5))
def test_ari_nmi_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 6, size=100)
    y_pred = rng.integers(0, 8, size=100)
    scores = evaluate(y_true, y_pred, known_classes=[0, 1, 2])
    assert scores["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred) * 100)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred) * 100)
    assert scores["acc"] == pytest.approx(cluster_acc(y_true, y_pred) * 100)


def test_known_novel_h_hand_case() -> None:
    # Known classes 0, 1; novel 2, 3. Cluster 0 = {0: 2, 1: 1}, cluster 1 = {1: 1},
    # cluster 2 = {2: 2, 3: 2}. Matching: 0->0, 1->1, 2->2 or 2->3 (a tie worth 2 either
    # way): 5 of 8 = 62.5. Known: 3 of 4 right = 75. Novel: 2 of 4 right = 50 whichever
    # way the tie goes. H = 2 * 75 * 50 / 125 = 60.
    y_true = [0, 0, 1, 1, 2, 2, 3, 3]
    y_pred = [0, 0, 1, 0, 2, 2, 2, 2]
    scores = evaluate(y_true, y_pred, known_classes=[0, 1])
    assert scores["acc"] == pytest.approx(62.5)
    assert scores["known_acc"] == pytest.approx(75.0)
    assert scores["novel_acc"] == pytest.approx(50.0)
    assert scores["h_score"] == pytest.approx(60.0)


def test_known_novel_use_the_global_matching() -> None:
    # Cluster 0 = {0: 3, 1: 2}, cluster 1 = {1: 1}. Globally 0->0 and 1->1, so novel class 1
    # gets 1 of 3 right. Matching the novel subset on its own would map cluster 0 -> 1 and
    # claim 2 of 3: that must not happen.
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [0, 0, 0, 0, 0, 1]
    scores = evaluate(y_true, y_pred, known_classes=[0])
    assert scores["known_acc"] == pytest.approx(100.0)
    assert scores["novel_acc"] == pytest.approx(100 / 3)
    assert scores["h_score"] == pytest.approx(2 * 100 * (100 / 3) / (100 + 100 / 3))


def test_h_score_zero_when_one_side_is_zero() -> None:
    # One cluster takes class 1 (3 samples); the known sample of class 0 is wrong.
    scores = evaluate([0, 1, 1, 1], [5, 5, 5, 5], known_classes=[0])
    assert scores["acc"] == pytest.approx(75.0)
    assert scores["known_acc"] == 0.0
    assert scores["novel_acc"] == pytest.approx(100.0)
    assert scores["h_score"] == 0.0


def test_missing_side_is_nan() -> None:
    y_true, y_pred = [0, 0, 1, 1], [1, 1, 0, 0]
    no_known = evaluate(y_true, y_pred, known_classes=[])
    assert math.isnan(no_known["known_acc"])
    assert no_known["novel_acc"] == pytest.approx(100.0)
    assert math.isnan(no_known["h_score"])
    no_novel = evaluate(y_true, y_pred, known_classes=[0, 1, 7])
    assert math.isnan(no_novel["novel_acc"])
    assert math.isnan(no_novel["h_score"])
    assert no_novel["acc"] == pytest.approx(100.0)


def test_returns_plain_floats() -> None:
    scores = evaluate([0, 1, 1], [1, 0, 0], [0])
    assert set(scores) == {"acc", "ari", "nmi", "known_acc", "novel_acc", "h_score"}
    assert all(type(v) is float for v in scores.values())


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 1, 2], [0, 1], "same length"),
        ([], [], "empty"),
        ([[0, 1], [1, 0]], [[0, 1], [1, 0]], "1-D"),
        ([0.0, 1.0], [0, 1], "integer"),
        ([0, 1], ["a", "b"], "integer"),
        ([0, 1], [0.5, 1.0], "integer"),
    ],
)
def test_validation(y_true: list, y_pred: list, message: str) -> None:
    for fn in (cluster_acc, hungarian_mapping):
        with pytest.raises(ValueError, match=message):
            fn(y_true, y_pred)
    with pytest.raises(ValueError, match=message):
        evaluate(y_true, y_pred, [0])


def test_known_classes_validated() -> None:
    with pytest.raises(ValueError, match=r"known_classes.*integer"):
        evaluate([0, 1], [0, 1], known_classes=[0.5])
