"""The built-in miners: ``entropy`` (GLEAN's "highest"), ``random`` and
``local-inconsistency`` (Loop's LIS). Rankings break ties by the lower pool index, so a
selection is a function of the state alone (``random`` aside, which uses only ``rng``).

Each miner includes labeled samples, as the reference code does (docs/methods/glean.md §11.11);
``exclude_labeled=True`` skips pool rows ``< state.num_labeled``.
"""

from __future__ import annotations

import numpy as np

from gcdbench.api import GcdbenchError, hookimpl, training
from gcdbench.api.miner import ClusterState, Miner


class _PoolMiner(Miner):
    """What the built-in miners share: the ``exclude_labeled`` switch and the budget check."""

    def __init__(self, exclude_labeled: bool = False) -> None:
        self.exclude_labeled = exclude_labeled

    def _candidates(self, state: ClusterState, budget: int) -> np.ndarray:
        """The pool rows this miner may pick from, after checking ``budget``."""
        if budget < 0:
            raise GcdbenchError(
                f"miner budget must be >= 0, got {budget}; pass the round's query count."
            )
        start = state.num_labeled if self.exclude_labeled else 0
        return np.arange(start, state.size)


def _top(scores: np.ndarray, candidates: np.ndarray, budget: int) -> np.ndarray:
    """The ``budget`` candidates with the highest score, highest first (stable on ties)."""
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order[:budget]]


def _entropy(state: ClusterState) -> np.ndarray:
    if state.entropy is not None:
        return state.entropy
    # gcdbench.api.training loads the engine (torch, scikit-learn) on this first use, not
    # when `gcdbench plugins` or `data list` imports this module.
    return training.assignment_entropy(state.soft, state.variant)


class EntropyMiner(_PoolMiner):
    name = "entropy"
    description = "the samples whose soft cluster assignment has the highest entropy"

    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        return _top(_entropy(state), self._candidates(state, budget), budget)


class RandomMiner(_PoolMiner):
    name = "random"
    description = "uniformly random samples, without replacement"

    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        candidates = self._candidates(state, budget)
        return rng.choice(candidates, size=min(budget, len(candidates)), replace=False)


class LocalInconsistencyMiner(_PoolMiner):
    name = "local-inconsistency"
    description = (
        "Loop's LIS: the top-budget samples by local inconsistency that are also in the "
        "top-budget by entropy (may return fewer than budget)"
    )

    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        candidates = self._candidates(state, budget)
        inconsistency = training.local_inconsistency(state.assignments, state.neighbours)
        by_inconsistency = _top(inconsistency.astype(np.float64), candidates, budget)
        by_entropy = _top(_entropy(state), candidates, budget)
        # Keep the entropy ranking's order for the intersection.
        return by_entropy[np.isin(by_entropy, by_inconsistency)]


@hookimpl
def register_miners(register):
    register(EntropyMiner())
    register(RandomMiner())
    register(LocalInconsistencyMiner())
