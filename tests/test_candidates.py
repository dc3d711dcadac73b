"""Candidate construction (GLEAN §5.1–5.3, Loop §6.2) against a hand-built cluster state.

The state: 12 pool samples in 4 clusters, members 0: {0, 2, 5}, 1: {1, 4, 7, 10, 11},
2: {3, 6, 9}, 3: {8} (a singleton), 2-d features, centres at the corners of a 10×10 square,
hand-written p rows and k = 4 neighbour lists chosen so each Loop rule has its own anchor.
Random draws are checked by the exact set of values a column takes over many draws.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gcdbench import registry
from gcdbench.api.miner import ClusterState
from gcdbench.errors import GcdbenchError
from gcdbench.training.candidates import (
    NO_QUERY,
    category_candidates,
    cluster_choice,
    cluster_members,
    encoder_choice,
    instance_candidates,
    loop_candidates,
    representatives,
)
from gcdbench.training.mining import local_inconsistency

ASSIGNMENTS = [0, 1, 0, 2, 1, 0, 2, 1, 3, 2, 1, 1]
MEMBERS = [[0, 2, 5], [1, 4, 7, 10, 11], [3, 6, 9], [8]]
FEATURES = [
    [0.0, 0.1], [10.0, 0.2], [0.5, 0.0], [0.0, 10.0], [9.0, 0.0], [1.0, 1.0],
    [0.3, 9.0], [11.0, 1.0], [10.5, 10.0], [1.0, 11.5], [6.0, 0.5], [8.0, 9.0],
]  # fmt: skip
CENTERS = [[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]
SOFT = [
    [0.70, 0.10, 0.15, 0.05],  # ranking 0, 2, 1, 3
    [0.10, 0.60, 0.10, 0.20],  # 1, 3, 0, 2 (0 and 2 tie: lower id first)
    [0.60, 0.30, 0.05, 0.05],  # 0, 1, 2, 3
    [0.10, 0.10, 0.70, 0.10],  # 2, 0, 1, 3
    [0.20, 0.50, 0.10, 0.20],  # 1, 0, 3, 2
    [0.40, 0.10, 0.20, 0.30],  # 0, 3, 2, 1
    [0.05, 0.15, 0.60, 0.20],  # 2, 3, 1, 0
    [0.10, 0.50, 0.10, 0.30],  # 1, 3, 0, 2
    [0.10, 0.20, 0.10, 0.60],  # 3, 1, 0, 2
    [0.20, 0.10, 0.50, 0.20],  # 2, 0, 3, 1
    [0.35, 0.40, 0.05, 0.20],  # 1, 0, 3, 2
    [0.05, 0.10, 0.40, 0.45],  # 3, 2, 1, 0
]
RANKING = [
    [0, 2, 1, 3], [1, 3, 0, 2], [0, 1, 2, 3], [2, 0, 1, 3], [1, 0, 3, 2], [0, 3, 2, 1],
    [2, 3, 1, 0], [1, 3, 0, 2], [3, 1, 0, 2], [2, 0, 3, 1], [1, 0, 3, 2], [3, 2, 1, 0],
]  # fmt: skip
NEIGHBOURS = [
    [2, 10, 4, 3],  # clusters 0 1 1 2: first differing is cluster 1, which also has most
    [4, 7, 0, 2],
    [0, 5, 1, 4],
    [8, 6, 1, 4],  # 3 1 2 1 → first differing: cluster 3 (1 hit); most: cluster 1 (2 hits)
    [1, 7, 10, 11],  # all in the anchor's cluster 1
    [0, 2, 6, 3],
    [3, 9, 5, 10],
    [1, 4, 9, 8],
    [11, 7, 9, 3],  # the singleton's anchor: no neighbour shares its cluster
    [6, 7, 8, 0],  # 2 1 3 0 → clusters 1, 3, 0 tie with one hit each
    [5, 3, 0, 6],  # no neighbour in its own cluster 1
    [8, 7, 1, 9],
]


def _state(**changes) -> ClusterState:
    state = ClusterState(
        features=np.array(FEATURES),
        assignments=np.array(ASSIGNMENTS),
        soft=np.array(SOFT),
        neighbours=np.array(NEIGHBOURS),
        centers=np.array(CENTERS),
    )
    return replace(state, **changes)


def _columns(draw, anchor: int, times: int = 400, seed: int = 0) -> list[set[int]]:
    """The set of pool ids each column takes over ``times`` draws for one anchor."""
    out = draw(np.full(times, anchor), np.random.default_rng(seed))
    return [set(column.tolist()) for column in out.T]


def test_cluster_members_ascending_per_cluster_with_empty_clusters():
    got = cluster_members(np.array(ASSIGNMENTS), 4)
    assert [ids.tolist() for ids in got] == MEMBERS
    with_empty = cluster_members(np.array(ASSIGNMENTS), 6)
    assert [ids.tolist() for ids in with_empty] == [*MEMBERS, [], []]


def test_instance_candidates_column_j_is_a_member_of_the_jth_ranked_cluster():
    state = _state()
    for anchor in range(12):
        expected = [set(MEMBERS[c]) - {anchor} or {anchor} for c in RANKING[anchor]]

        def draw(anchors, rng):
            return instance_candidates(state, anchors, 4, rng)

        assert _columns(draw, anchor) == expected, anchor
    # Fewer options keep the first columns of the same ranking.
    got = instance_candidates(state, np.arange(12), 2, np.random.default_rng(1))
    assert got.shape == (12, 2) and got.dtype == np.int64
    for anchor, row in enumerate(got):
        assert [ASSIGNMENTS[i] for i in row] == RANKING[anchor][:2]


def test_instance_candidates_anchor_exclusion():
    state = _state()

    def official(anchors, rng):
        return instance_candidates(state, anchors, 2, rng, exclude_anchor=False)

    def paper(anchors, rng):
        return instance_candidates(state, anchors, 2, rng, exclude_anchor=True)

    # Anchor 0's best cluster is its own {0, 2, 5}: the official draw may offer 0 itself.
    assert _columns(official, 0) == [{0, 2, 5}, {3, 6, 9}]
    assert _columns(paper, 0) == [{2, 5}, {3, 6, 9}]
    # Anchor 8 is its cluster's only member: offered either way.
    assert _columns(paper, 8) == [{8}, set(MEMBERS[1])]
    # Uniform over the cluster: each of {0, 2, 5} about a third of 600 draws.
    draws = official(np.zeros(600, dtype=np.int64), np.random.default_rng(3))[:, 0]
    shares = np.bincount(draws, minlength=6)[[0, 2, 5]] / 600
    assert shares.min() > 0.27 and shares.max() < 0.40, shares


def test_instance_candidates_seeded_and_errors():
    state = _state()
    anchors = np.arange(12).repeat(20)
    first = instance_candidates(state, anchors, 3, np.random.default_rng(7))
    assert np.array_equal(first, instance_candidates(state, anchors, 3, np.random.default_rng(7)))
    assert not np.array_equal(
        first, instance_candidates(state, anchors, 3, np.random.default_rng(8))
    )
    for options in (0, 5):
        with pytest.raises(GcdbenchError, match=f"options = {options} must be within 1..K = 4"):
            instance_candidates(state, anchors, options, np.random.default_rng(0))
    # Cluster 3 emptied: anchor 8 ranks it first, so there is no member to offer.
    no_three = _state(assignments=np.array([1 if c == 3 else c for c in ASSIGNMENTS]))
    with pytest.raises(GcdbenchError, match="cluster 3 has no members"):
        instance_candidates(no_three, [8], 1, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("ratio", "m"), [(0.5, 2), (0.1, 1), (0.25, 1), (0.74, 2), (0.75, 3), (1.0, 4)]
)
def test_category_candidates_top_floor_ratio_k(ratio, m):
    got = category_candidates(_state(), np.arange(12), ratio)
    assert got.tolist() == [row[:m] for row in RANKING]


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.01, float("nan")])
def test_category_candidates_reject_ratio_outside_unit_interval(ratio):
    with pytest.raises(GcdbenchError, match=r"must be in \(0, 1\]"):
        category_candidates(_state(), [0], ratio)


def test_representatives_nearest_over_whole_pool():
    state = _state()
    # Squared distances: centre 0 → 0: .01, 2: .25, 5: 2; centre 1 → 1: .04, 4: 1, 7: 2;
    # centre 2 → 3: 0, 6: 1.09, 9: 3.25; centre 3 → 8: .25, then non-members 11: 5, 7: 82.
    assert representatives(state, 3).tolist() == [[0, 2, 5], [1, 4, 7], [3, 6, 9], [8, 11, 7]]
    assert representatives(state, 1).tolist() == [[0], [1], [3], [8]]
    assert representatives(state, 50).shape == (4, 12)  # capped at the pool size
    with pytest.raises(GcdbenchError, match="cluster centres"):
        representatives(_state(centers=None), 3)


def test_loop_official_own_cluster_and_first_differing_neighbour():
    state = _state()

    def draw(anchors, rng):
        return loop_candidates(state, anchors, 2, rng, variant="official")

    # Own cluster's neighbours include the anchor itself (the list starts with it).
    assert _columns(draw, 0) == [{0, 2}, {10, 4}]
    # First differing neighbour is 8 (cluster 3), though cluster 1 holds two neighbours.
    assert _columns(draw, 3) == [{3, 6}, {8}]
    # No neighbour shares the cluster: the anchor is the only own-cluster option.
    assert _columns(draw, 10) == [{10}, {5, 0}]
    assert _columns(draw, 8) == [{8}, {11, 7}]
    assert _columns(draw, 9) == [{9, 6}, {7}]
    # All neighbours share the anchor's cluster: no query.
    assert draw(np.array([4]), np.random.default_rng(0)).tolist() == [[NO_QUERY, NO_QUERY]]
    for options in (3, 4):
        with pytest.raises(GcdbenchError, match="only 2 options"):
            loop_candidates(state, [0], options, np.random.default_rng(0), variant="official")


def test_loop_paper_most_neighbours_ties_to_lower_id_anchor_never_offered():
    state = _state()

    def two(anchors, rng):
        return loop_candidates(state, anchors, 2, rng, variant="paper")

    def three(anchors, rng):
        return loop_candidates(state, anchors, 3, rng, variant="paper")

    assert _columns(two, 0) == [{2}, {10, 4}]
    assert _columns(two, 3) == [{6}, {1, 4}]  # cluster 1 has 2 neighbours, cluster 3 one
    assert _columns(three, 3) == [{6}, {1, 4}, {8}]
    assert _columns(three, 0) == [{2}, {10, 4}, {3}]
    # Anchor 9: clusters 0, 1 and 3 hold one neighbour each; ties go to the lower id.
    assert two(np.array([9]), np.random.default_rng(0)).tolist() == [[6, 0]]
    assert three(np.array([9]), np.random.default_rng(0)).tolist() == [[6, 0, 7]]
    # No query: all neighbours in the own cluster (4), none in it (8, 10), too few clusters.
    anchors = np.array([4, 8, 10])
    assert (two(anchors, np.random.default_rng(0)) == NO_QUERY).all()
    assert (three(np.array([5, 4, 8, 10]), np.random.default_rng(0)) == NO_QUERY).all()
    everything = np.arange(12).repeat(30)
    for draw in (two, three):
        picks = draw(everything, np.random.default_rng(2))
        assert not (picks == everything[:, None]).any()


def test_loop_paper_drops_the_anchor_from_an_official_style_knn_list():
    # The official kNN drops column 0 whatever it holds, so a list may contain the anchor.
    rows = [list(row) for row in NEIGHBOURS]
    rows[0] = [0, 2, 10, 3]  # own cluster: 0 (the anchor) and 2
    state = _state(neighbours=np.array(rows))
    draw = loop_candidates(state, np.zeros(200, dtype=np.int64), 2, np.random.default_rng(0))
    assert set(draw[:, 0].tolist()) == {2}


def test_loop_candidates_seeded_and_errors():
    state = _state()
    anchors = np.arange(12).repeat(20)
    for variant in ("official", "paper"):
        first = loop_candidates(state, anchors, 2, np.random.default_rng(4), variant=variant)
        again = loop_candidates(state, anchors, 2, np.random.default_rng(4), variant=variant)
        assert np.array_equal(first, again)
    with pytest.raises(GcdbenchError, match="at least 2 options"):
        loop_candidates(state, [0], 1, np.random.default_rng(0))
    with pytest.raises(GcdbenchError, match="unknown Loop variant 'clean'"):
        loop_candidates(state, [0], 2, np.random.default_rng(0), variant="clean")


def test_encoder_choice_is_cosine_not_inner_product():
    features = np.array([[1.0, 0.0], [100.0, 100.0], [1.0, 0.1], [0.0, 0.0], [-1.0, 0.0]])
    # Options are rows 1, 2, 4: inner product would pick the long row 1 (position 0); cosine
    # picks row 2 (position 1), nearly the anchor's direction.
    assert encoder_choice(features, [0], [[1, 2, 4]]).tolist() == [1]
    assert encoder_choice(features, [0, 0], [[4, 1], [2, 1]]).tolist() == [1, 0]
    # A zero vector scores 0 (no NaN), which beats the opposite direction.
    assert encoder_choice(features, [0], [[4, 3]]).tolist() == [1]


def test_cluster_choice_picks_the_most_cosine_similar_centre():
    state = _state()
    # Sample 10 = (6, .5) points along centre 1 = (10, 0); sample 11 = (8, 9) along (10, 10).
    assert cluster_choice(state, [10], [[2, 3, 1]]).tolist() == [2]
    assert cluster_choice(state, [11, 10], [[1, 3], [3, 1]]).tolist() == [1, 1]
    offered = category_candidates(state, [3, 7], 1.0)  # all 4 clusters, ranked by p
    picks = cluster_choice(state, [3, 7], offered)
    assert offered[np.arange(2), picks].tolist() == [2, 1]
    with pytest.raises(GcdbenchError, match="cluster centres"):
        cluster_choice(_state(centers=None), [0], [[0, 1]])


def test_candidate_functions_leave_global_rng_untouched():
    state = _state()
    before = np.random.get_state()[1].copy()
    instance_candidates(state, np.arange(12), 4, np.random.default_rng(0))
    loop_candidates(state, np.arange(12), 3, np.random.default_rng(0))
    loop_candidates(state, np.arange(12), 2, np.random.default_rng(0), variant="official")
    assert np.array_equal(np.random.get_state()[1], before)


# Miners on the same state: only what tests/test_mining.py does not already cover.
ENTROPY = [0.90, 0.10, 0.80, 0.50, 0.70, 0.20, 0.30, 0.60, 0.40, 0.95, 0.05, 0.65]


def test_local_inconsistency_miner_with_and_without_labeled_rows():
    state = _state(entropy=np.array(ENTROPY), num_labeled=3)
    # Neighbours in another cluster, counted by hand from NEIGHBOURS and ASSIGNMENTS.
    inconsistency = [3, 2, 2, 3, 0, 2, 2, 2, 4, 3, 4, 2]
    assert local_inconsistency(state.assignments, state.neighbours).tolist() == inconsistency
    miner = registry.get("miner", "local-inconsistency")
    excluding = type(miner)(exclude_labeled=True)
    rng = np.random.default_rng(0)
    # Rows 3..11: top entropy 9, 4, 11, 7, 3; top inconsistency 8, 10, 3, 9, 5.
    assert excluding.select(state, 3, rng).tolist() == []
    assert excluding.select(state, 4, rng).tolist() == [9]
    assert excluding.select(state, 5, rng).tolist() == [9, 3]
    # With labeled rows: entropy 9, 0, 2, 4, 11; inconsistency 8, 10, 0, 3, 9.
    assert miner.select(state, 4, rng).tolist() == [0]
    assert miner.select(state, 5, rng).tolist() == [9, 0]


def test_random_miner_excludes_labeled_rows():
    state = _state(num_labeled=5)
    miner = type(registry.get("miner", "random"))(exclude_labeled=True)
    picks = miner.select(state, 20, np.random.default_rng(0))
    assert sorted(picks.tolist()) == list(range(5, 12))


def test_entropy_miner_fallback_follows_the_state_variant():
    # Paper entropy: row 0 ln 2 ≈ .693 < row 1 ≈ .940. The official softmax(p) first flattens
    # both rows; row 0 then comes out higher (≈ 1.356 vs 1.346).
    soft = np.array([[0.5, 0.5, 0.0, 0.0], [0.7, 0.1, 0.1, 0.1]])
    state = ClusterState(np.zeros((2, 1)), np.zeros(2, int), soft, np.zeros((2, 1), int))
    miner = registry.get("miner", "entropy")
    assert miner.select(state, 1, np.random.default_rng(0)).tolist() == [1]
    official = replace(state, variant="official")
    assert miner.select(official, 1, np.random.default_rng(0)).tolist() == [0]
