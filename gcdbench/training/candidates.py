"""Who the feedback is asked to choose between (docs/methods/glean.md §5.1–5.3, §6.2).

Each function is a pure function of a round's :class:`~gcdbench.api.miner.ClusterState`,
the anchors and an explicit generator, so hand-built states test it exactly. Pool ids index
the training pool (labeled first); cluster ids index the round's K-means clusters.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from gcdbench.api.miner import ClusterState
from gcdbench.api.toolkit import l2_normalise
from gcdbench.errors import GcdbenchError
from gcdbench.training.mining import nearest_to_centers, top_clusters
from gcdbench.training.params import VARIANTS

NO_QUERY = -1  # a Loop anchor whose neighbours all share its cluster gets no question


def cluster_members(assignments: np.ndarray, num_clusters: int) -> list[np.ndarray]:
    """Pool ids of every cluster, ascending."""
    order = np.argsort(assignments, kind="stable")
    bounds = np.searchsorted(assignments[order], np.arange(num_clusters + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(num_clusters)]


def instance_candidates(
    state: ClusterState,
    anchors: np.ndarray,
    options: int,
    rng: np.random.Generator,
    *,
    exclude_anchor: bool = True,
) -> np.ndarray:
    """GLEAN's similar-instance options, [len(anchors), options] pool ids: one uniformly
    random member of each of the anchor's top-``options`` clusters by p, best cluster first.

    The official code may offer the anchor itself (with probability 1/|cluster|);
    ``exclude_anchor`` (the paper variant) never does, unless it is its cluster's only member.
    """
    num_clusters = state.soft.shape[1]
    if not 1 <= options <= num_clusters:
        raise GcdbenchError(
            f"options = {options} must be within 1..K = {num_clusters}; lower -p options."
        )
    anchors = np.asarray(anchors, dtype=np.int64)
    members = cluster_members(state.assignments, num_clusters)
    ranked = top_clusters(state.soft[anchors], options)
    out = np.empty((len(anchors), options), dtype=np.int64)
    for row, anchor in enumerate(anchors):
        for col, cluster in enumerate(ranked[row]):
            pool = members[cluster]
            if exclude_anchor and len(pool) > 1:
                pool = pool[pool != anchor]
            if len(pool) == 0:
                raise GcdbenchError(
                    f"cluster {cluster} has no members; K-means returned an empty cluster."
                )
            out[row, col] = pool[rng.integers(len(pool))]
    return out


def category_candidates(state: ClusterState, anchors: np.ndarray, ratio: float) -> np.ndarray:
    """GLEAN's pseudo-category options, [len(anchors), m] cluster ids: the anchor's top-m
    clusters by p with m = ⌊ratio · K⌋ (at least 1)."""
    num_clusters = state.soft.shape[1]
    if not 0 < ratio <= 1:
        raise GcdbenchError(
            f"category ratio {ratio} must be in (0, 1]; e.g. -p category_ratio=0.5."
        )
    m = max(1, int(np.floor(ratio * num_clusters)))
    return top_clusters(state.soft[np.asarray(anchors, dtype=np.int64)], m)


def representatives(state: ClusterState, count: int) -> np.ndarray:
    """[K, count] pool ids nearest each cluster centre (searched over the whole pool, as the
    reference does), nearest first — the texts a cluster is characterised from."""
    if state.centers is None:
        raise GcdbenchError("representatives need the round's cluster centres; use cluster_state.")
    return nearest_to_centers(state.features, state.centers, min(count, state.size))


def loop_candidates(
    state: ClusterState,
    anchors: np.ndarray,
    options: int,
    rng: np.random.Generator,
    *,
    variant: str = "paper",
) -> np.ndarray:
    """Loop's scalable query, [len(anchors), options] pool ids (rows of ``NO_QUERY`` where the
    anchor's neighbourhood offers fewer than ``options`` clusters): one random *neighbour* from
    each candidate cluster, the anchor's own cluster first.

    paper: the candidate clusters are the ``options`` clusters holding most of the anchor's
    k neighbours (own cluster always first); the anchor is never offered. official: own
    cluster + the cluster of the nearest neighbour in a different cluster (only
    ``options = 2``), neighbours drawn from the list with the anchor itself in it.
    """
    if variant not in VARIANTS:
        raise GcdbenchError(f"unknown Loop variant {variant!r}; use one of {', '.join(VARIANTS)}.")
    if options < 2:
        raise GcdbenchError(f"Loop asks between at least 2 options, got {options}.")
    if variant == "official" and options != 2:
        raise GcdbenchError(
            "the official Loop code supports only 2 options; use --variant paper for more."
        )
    anchors = np.asarray(anchors, dtype=np.int64)
    out = np.full((len(anchors), options), NO_QUERY, dtype=np.int64)
    for row, anchor in enumerate(anchors):
        neighbours = state.neighbours[anchor]
        if variant == "official":
            neighbours = np.concatenate([[anchor], neighbours])
        else:  # an official-variant state's kNN may keep the anchor; the paper never offers it
            neighbours = neighbours[neighbours != anchor]
        clusters = state.assignments[neighbours]
        own = int(state.assignments[anchor])
        chosen = _loop_clusters(own, clusters, options, variant)
        if chosen is None:
            continue
        picks = []
        for cluster in chosen:
            pool = neighbours[clusters == cluster]
            if len(pool) == 0:  # no neighbour in the anchor's own cluster (paper variant)
                break
            picks.append(pool[rng.integers(len(pool))])
        else:
            out[row] = picks
    return out


def _loop_clusters(own: int, clusters: np.ndarray, options: int, variant: str) -> list[int] | None:
    if variant == "official":
        differing = clusters[clusters != own]
        return [own, int(differing[0])] if len(differing) else None
    counts = Counter(int(c) for c in clusters if c != own)
    # Most neighbours first; ties to the lower cluster id, so the choice is deterministic.
    others = sorted(counts, key=lambda c: (-counts[c], c))[: options - 1]
    return [own, *others] if len(others) == options - 1 else None


def _unit(vectors: np.ndarray) -> np.ndarray:
    return l2_normalise(np.asarray(vectors, dtype=np.float32))


def _similarities(anchors: np.ndarray, options: np.ndarray) -> np.ndarray:
    """[n, m] cosine similarity of each anchor vector ([n, d]) with its options ([n, m, d])."""
    return np.einsum("nd,nmd->nm", _unit(anchors), _unit(options))


def encoder_similarities(
    features: np.ndarray, anchors: np.ndarray, options: np.ndarray
) -> np.ndarray:
    """[len(anchors), m] cosine similarity of each anchor's features with each option's
    (rows of ids into ``features``)."""
    anchors = np.asarray(anchors, dtype=np.int64)
    return _similarities(features[anchors], features[np.asarray(options)])


def cluster_similarities(
    state: ClusterState, anchors: np.ndarray, options: np.ndarray
) -> np.ndarray:
    """[len(anchors), m] cosine similarity of each anchor with each offered cluster centre."""
    if state.centers is None:
        raise GcdbenchError("cluster similarities need the round's cluster centres.")
    anchors = np.asarray(anchors, dtype=np.int64)
    centers = np.asarray(state.centers)
    return _similarities(state.features[anchors], centers[np.asarray(options)])


def encoder_choice(features: np.ndarray, anchors: np.ndarray, options: np.ndarray) -> np.ndarray:
    """The option the current encoder alone would pick: highest cosine similarity between
    the anchor's features and each option's ([len(anchors), m] rows of ids into
    ``features``); what feedback must beat to be worth its cost."""
    return encoder_similarities(features, anchors, options).argmax(axis=1).astype(np.int64)


def cluster_choice(state: ClusterState, anchors: np.ndarray, options: np.ndarray) -> np.ndarray:
    """The encoder's own pseudo-category choice: the offered cluster whose centre is most
    cosine-similar to the anchor."""
    return cluster_similarities(state, anchors, options).argmax(axis=1).astype(np.int64)


def cluster_centers(features: np.ndarray, assignments: np.ndarray) -> tuple[list[int], np.ndarray]:
    """The cluster ids present in ``assignments`` (ascending) and their mean features."""
    ids = sorted(set(np.asarray(assignments).tolist()))
    return ids, np.stack([features[assignments == c].mean(axis=0) for c in ids])
