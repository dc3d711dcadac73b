"""The built-in miners: ``entropy`` (GLEAN's "highest"), ``random`` and
``local-inconsistency`` (Loop's LIS). Rankings break ties by the lower pool index, so a
selection is a function of the state alone (``random`` aside, which uses only ``rng``).

Each miner includes labeled samples, as the reference code does (glean-spec §11.11);
``exclude_labeled=True`` skips pool rows ``< state.num_labeled``.
"""

from __future__ import annotations

import numpy as np

from gcdbench import hookimpl
from gcdbench.api.miner import ClusterState, Miner
from gcdbench.errors import GcdbenchError
from gcdbench.training.mining import assignment_entropy, local_inconsistency


def _check_budget(budget: int) -> None:
    if budget < 0:
        raise GcdbenchError(
            f"miner budget must be >= 0, got {budget}; pass the round's query count."
        )


def _candidates(state: ClusterState, exclude_labeled: bool) -> np.ndarray:
    start = state.num_labeled if exclude_labeled else 0
    return np.arange(start, state.size)


def _top(scores: np.ndarray, candidates: np.ndarray, budget: int) -> np.ndarray:
    """The ``budget`` candidates with the highest score, highest first (stable on ties)."""
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order[:budget]]


def _entropy(state: ClusterState) -> np.ndarray:
    if state.entropy is not None:
        return state.entropy
    return assignment_entropy(state.soft, state.variant)


class EntropyMiner(Miner):
    name = "entropy"
    description = "the samples whose soft cluster assignment has the highest entropy"

    def __init__(self, exclude_labeled: bool = False) -> None:
        self.exclude_labeled = exclude_labeled

    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        _check_budget(budget)
        return _top(_entropy(state), _candidates(state, self.exclude_labeled), budget)


class RandomMiner(Miner):
    name = "random"
    description = "uniformly random samples, without replacement"

    def __init__(self, exclude_labeled: bool = False) -> None:
        self.exclude_labeled = exclude_labeled

    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        _check_budget(budget)
        candidates = _candidates(state, self.exclude_labeled)
        return rng.choice(candidates, size=min(budget, len(candidates)), replace=False)


class LocalInconsistencyMiner(Miner):
    name = "local-inconsistency"
    description = (
        "Loop's LIS: the top-budget samples by local inconsistency that are also in the "
        "top-budget by entropy (may return fewer than budget)"
    )

    def __init__(self, exclude_labeled: bool = False) -> None:
        self.exclude_labeled = exclude_labeled

    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        _check_budget(budget)
        candidates = _candidates(state, self.exclude_labeled)
        inconsistency = local_inconsistency(state.assignments, state.neighbours)
        by_inconsistency = _top(inconsistency.astype(np.float64), candidates, budget)
        by_entropy = _top(_entropy(state), candidates, budget)
        # Keep the entropy ranking's order for the intersection.
        return by_entropy[np.isin(by_entropy, by_inconsistency)]


@hookimpl
def register_miners(register):
    register(EntropyMiner())
    register(RandomMiner())
    register(LocalInconsistencyMiner())
