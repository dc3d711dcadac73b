"""Calibration questions: choice questions about labeled texts only, whose right answers a
method already knows (docs/feedback-bank.md, "Fusion with the encoder").

They are mined from a round's :class:`~gcdbench.api.miner.ClusterState` the way GLEAN's
questions are, but with labeled known-class anchors: the most uncertain labeled texts; as
similar-instance options one *labeled* member of each of the anchor's top clusters that has
one (the anchor excluded); as category options its top ⌊ratio·K⌋ clusters, right when the
majority of a cluster's labeled members shares the anchor's label. Right options come from
``labeled_y`` (``task.labeled_y``), which every method holds: no gold label of an unlabeled
text is read. A provider's answers to them fit the fusion model
(:mod:`gcdbench.training.fusion`). The feedback bank (gcdbench/runner/bank.py) mines its
calibration bank with this module too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gcdbench.api.miner import ClusterState
from gcdbench.training.candidates import category_candidates, cluster_members
from gcdbench.training.mining import assignment_entropy, top_clusters


@dataclass(frozen=True)
class CalibrationQuestion:
    """One question about a labeled anchor: option ids (pool ids or cluster ids, by kind)
    and the positions of the right ones."""

    anchor: int
    options: tuple[int, ...]
    correct: tuple[int, ...]


@dataclass(frozen=True)
class CalibrationSet:
    instance: tuple[CalibrationQuestion, ...]
    category: tuple[CalibrationQuestion, ...]


def calibration_questions(
    state: ClusterState,
    labeled_y: np.ndarray,
    count: int,
    options: int,
    category_ratio: float,
    rng: np.random.Generator,
) -> CalibrationSet:
    """Up to ``count`` questions of each kind about the most uncertain labeled texts (pool
    ids ``0..len(labeled_y)-1``). An instance question needs two options with a labeled
    member; an anchor whose top clusters hold fewer is skipped."""
    labeled_y = np.asarray(labeled_y)
    n_labeled = len(labeled_y)
    if n_labeled == 0 or count < 1:
        return CalibrationSet((), ())
    # A hand-built state may carry no entropy: it is the soft assignments' (the miners' own).
    entropy = state.entropy if state.entropy is not None else assignment_entropy(state.soft)
    order = np.argsort(-np.asarray(entropy)[:n_labeled], kind="stable")
    anchors = order[:count].astype(np.int64)
    num_clusters = state.soft.shape[1]
    labeled_members = [m[m < n_labeled] for m in cluster_members(state.assignments, num_clusters)]
    majority = [int(np.bincount(labeled_y[m]).argmax()) if len(m) else -1 for m in labeled_members]
    ranked = top_clusters(state.soft[anchors], num_clusters)
    instance: list[CalibrationQuestion] = []
    for anchor, clusters in zip(anchors, ranked, strict=True):
        picked: list[int] = []
        for c in clusters:
            pool = labeled_members[c][labeled_members[c] != anchor]
            if len(pool):
                picked.append(int(pool[rng.integers(len(pool))]))
            if len(picked) == options:
                break
        if len(picked) < 2:
            continue  # a choice needs two options
        right = tuple(i for i, o in enumerate(picked) if labeled_y[o] == labeled_y[anchor])
        instance.append(CalibrationQuestion(int(anchor), tuple(picked), right))
    rows = category_candidates(state, anchors, category_ratio)
    category = tuple(
        CalibrationQuestion(
            int(a),
            tuple(int(c) for c in row),
            tuple(i for i, c in enumerate(row) if majority[c] == labeled_y[a]),
        )
        for a, row in zip(anchors, rows, strict=True)
    )
    return CalibrationSet(tuple(instance), category)


__all__ = ["CalibrationQuestion", "CalibrationSet", "calibration_questions"]
