"""Mining math against hand-built cases, kNN self handling, cluster state and the miners."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gcdbench import registry
from gcdbench.api.miner import ClusterState
from gcdbench.errors import GcdbenchError
from gcdbench.training.mining import (
    assignment_entropy,
    cluster_state,
    dec_target,
    knn,
    local_inconsistency,
    nearest_to_centers,
    squared_distances,
    student_t,
    top_clusters,
)


def _random(n: int, d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def test_squared_distances_equal_broadcast_and_are_non_negative():
    features, centers = _random(50, 16), _random(7, 16, seed=1)
    brute = ((features[:, None, :].astype(np.float64) - centers[None]) ** 2).sum(axis=2)
    got = squared_distances(features, centers)
    np.testing.assert_allclose(got, brute, rtol=1e-5)
    assert (squared_distances(features, features[:5]) >= 0).all()


def test_student_t_paper_and_official_hand_values():
    point, centers = np.array([[0.0]]), np.array([[0.0], [1.0], [2.0]])  # d² = 0, 1, 4
    # α = 1, paper: (1 + d²)^−1 = 1, 1/2, 1/5; official squares it: 1, 1/4, 1/25.
    paper = np.array([1, 1 / 2, 1 / 5]) / (1 + 1 / 2 + 1 / 5)
    official = np.array([1, 1 / 4, 1 / 25]) / (1 + 1 / 4 + 1 / 25)
    np.testing.assert_allclose(student_t(point, centers), [paper], rtol=1e-12)
    np.testing.assert_allclose(
        student_t(point, centers, variant="official"), [official], rtol=1e-12
    )
    # α = 3, paper exponent 2: (1 + d²/3)^−2 = 1, 9/16, 9/49; official exponent 4.
    paper3 = np.array([1, 9 / 16, 9 / 49]) / (1 + 9 / 16 + 9 / 49)
    np.testing.assert_allclose(student_t(point, centers, alpha=3.0), [paper3], rtol=1e-12)
    far = student_t(np.array([[1e4]]), np.array([[0.0], [1.0]]))  # no 0/0 far away
    assert np.isfinite(far).all() and far.sum() == pytest.approx(1.0)
    with pytest.raises(GcdbenchError, match="unknown mining variant"):
        student_t(point, centers, variant="clean")


def test_dec_target_hand_value():
    q = np.array([[0.6, 0.4], [0.5, 0.5]])
    column = [0.6 + 0.5, 0.4 + 0.5]
    rows = np.array([[0.36 / column[0], 0.16 / column[1]], [0.25 / column[0], 0.25 / column[1]]])
    expected = rows / rows.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dec_target(q), expected, rtol=1e-12)


def test_assignment_entropy_variants_hand_values():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(assignment_entropy(p), [math.log(2), 0.0], atol=1e-12)
    # official: softmax first; softmax([1, 0]) = (e, 1)/(e + 1).
    a, b = math.e / (math.e + 1), 1 / (math.e + 1)
    official = [math.log(2), -(a * math.log(a) + b * math.log(b))]
    np.testing.assert_allclose(assignment_entropy(p, "official"), official, rtol=1e-12)


def test_knn_inner_removes_self_wherever_it_ranks():
    # Inner products of x0 with (x0, x1, x2, x3) = (1, 10, 0, 5): x0 is its own 3rd hit.
    x = np.array([[1, 0], [10, 0], [0, 1], [5, 1]], dtype=np.float32)
    got = knn(x, 2, metric="inner")
    assert got[0].tolist() == [1, 3]
    assert not (got == np.arange(4)[:, None]).any()
    # The reference code drops column 0 (here x1), keeping x0 itself.
    assert knn(x, 2, metric="inner", official_first_hit=True)[0].tolist() == [3, 0]
    assert knn(x, 2, metric="inner", exclude_self=False)[0].tolist() == [1, 3]


def test_knn_drops_last_hit_when_self_is_not_among_them():
    x = np.array([[1, 0], [10, 0], [9, 0]], dtype=np.float32)
    assert knn(x, 1, metric="inner")[0].tolist() == [1]


def test_knn_cosine_chunked_matches_brute_force():
    x = _random(300, 12, seed=3)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    brute = np.argsort(-similarity, axis=1, kind="stable")[:, :5]
    got = knn(x, 5, backend="torch", chunk_size=64)
    np.testing.assert_array_equal(got, brute)
    with pytest.raises(GcdbenchError, match="lower k"):
        knn(x[:3], 3)


def test_knn_faiss_agrees_with_torch():
    pytest.importorskip("faiss")
    x = _random(200, 8, seed=4)
    for metric in ("cosine", "inner"):
        np.testing.assert_array_equal(
            knn(x, 4, metric=metric, backend="faiss"), knn(x, 4, metric=metric, backend="torch")
        )


def test_local_inconsistency_hand_case():
    assignments = np.array([0, 0, 1, 1])
    neighbours = np.array([[1, 2], [0, 3], [3, 0], [2, 1]])
    np.testing.assert_array_equal(local_inconsistency(assignments, neighbours), [1, 1, 1, 1])
    np.testing.assert_array_equal(local_inconsistency([0, 0, 0, 1], neighbours), [0, 1, 1, 2])


def test_top_clusters_ranked_with_stable_ties():
    p = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.4]])
    np.testing.assert_array_equal(top_clusters(p, 2), [[1, 2], [2, 0]])
    with pytest.raises(GcdbenchError, match=r"within 1\.\.K"):
        top_clusters(p, 4)


def test_nearest_to_centers_searches_all_samples():
    features = np.array([[0.0], [0.9], [2.0], [5.0], [5.3]])
    centers = np.array([[1.0], [5.1]])
    np.testing.assert_array_equal(nearest_to_centers(features, centers, 3), [[1, 0, 2], [3, 4, 2]])


def _blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(4, 8))
    return (centres.repeat(30, axis=0) + rng.normal(size=(120, 8))).astype(np.float32)


@pytest.mark.parametrize("variant", ["paper", "official"])
def test_cluster_state_fields(variant):
    features = _blobs()
    global_state = np.random.get_state()[1].copy()
    state = cluster_state(features, 4, k=5, seed=0, variant=variant, num_labeled=10)
    assert np.array_equal(np.random.get_state()[1], global_state)
    assert state.soft.shape == (120, 4) and state.centers.shape == (4, 8)
    np.testing.assert_allclose(state.soft.sum(axis=1), 1.0)
    np.testing.assert_allclose(state.entropy, assignment_entropy(state.soft, variant))
    assert state.neighbours.shape == (120, 5) and state.variant == variant
    assert np.bincount(state.assignments).tolist() == [30, 30, 30, 30]
    # p agrees with the hard assignment on well-separated blobs.
    assert (state.soft.argmax(axis=1) == state.assignments).all()
    again = cluster_state(features, 4, k=5, seed=0, variant=variant)
    assert np.array_equal(state.assignments, again.assignments)
    if variant == "paper":
        assert not (state.neighbours == np.arange(120)[:, None]).any()


def _state(
    entropy: list[float], assignments: list[int], neighbours: list[list[int]], labeled: int = 0
):
    n = len(entropy)
    soft = np.full((n, 2), 0.5)
    return ClusterState(
        features=np.zeros((n, 1)),
        assignments=np.array(assignments),
        soft=soft,
        neighbours=np.array(neighbours),
        entropy=np.array(entropy),
        num_labeled=labeled,
    )


def test_entropy_miner_top_budget_with_stable_ties():
    miner = registry.get("miner", "entropy")
    state = _state([0.1, 0.9, 0.5, 0.9, 0.2], [0] * 5, [[1]] * 5)
    rng = np.random.default_rng(0)
    assert miner.select(state, 3, rng).tolist() == [1, 3, 2]
    assert miner.select(state, 10, rng).tolist() == [1, 3, 2, 4, 0]
    excluding = type(miner)(exclude_labeled=True)
    labeled_first = _state([0.1, 0.9, 0.5, 0.9, 0.2], [0] * 5, [[1]] * 5, labeled=2)
    assert excluding.select(labeled_first, 2, rng).tolist() == [3, 2]
    with pytest.raises(GcdbenchError, match="budget"):
        miner.select(state, -1, rng)


def test_entropy_miner_falls_back_to_soft_when_entropy_missing():
    soft = np.array([[0.9, 0.1], [0.5, 0.5], [0.7, 0.3]])
    state = ClusterState(np.zeros((3, 1)), np.zeros(3, int), soft, np.zeros((3, 1), int))
    assert registry.get("miner", "entropy").select(state, 1, np.random.default_rng()).tolist() == [
        1
    ]


def test_random_miner_is_seeded_unique_and_bounded():
    miner = registry.get("miner", "random")
    state = _state([0.0] * 50, [0] * 50, [[1]] * 50)
    first = miner.select(state, 20, np.random.default_rng(5))
    assert len(set(first.tolist())) == 20 and first.max() < 50
    assert np.array_equal(first, miner.select(state, 20, np.random.default_rng(5)))
    assert not np.array_equal(first, miner.select(state, 20, np.random.default_rng(6)))
    assert len(miner.select(state, 80, np.random.default_rng(5))) == 50


def test_local_inconsistency_miner_is_the_intersection():
    # Inconsistency: sample 0 → 2, 1 → 0, 2 → 2, 3 → 1, 4 → 0.
    assignments = [0, 0, 1, 0, 0]
    neighbours = [[2, 2], [0, 3], [0, 1], [2, 0], [1, 0]]
    entropy = [0.3, 0.9, 0.1, 0.8, 0.2]
    state = _state(entropy, assignments, neighbours)
    miner = registry.get("miner", "local-inconsistency")
    # top-2 inconsistency {0, 2}; top-2 entropy {1, 3}: empty intersection.
    assert miner.select(state, 2, np.random.default_rng(0)).tolist() == []
    # top-3 inconsistency {0, 2, 3}; top-3 entropy {1, 3, 0} → {3, 0} in entropy order.
    assert miner.select(state, 3, np.random.default_rng(0)).tolist() == [3, 0]
