"""Miners choose which samples a round asks feedback about."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from gcdbench.errors import check_lengths


@dataclass(frozen=True)
class ClusterState:
    """What a miner sees of the current round: features, clusters and soft assignments.

    The pool is ordered labeled-first (as in :class:`gcdbench.api.GCDTask`), so rows
    ``< num_labeled`` are the labeled samples. ``soft`` is the sharpened DEC target ``p``
    (not the raw Student-t ``q``): it is what entropy and candidate ranking use downstream.
    :func:`gcdbench.training.mining.cluster_state` fills every field.
    """

    features: np.ndarray  # N x d
    assignments: np.ndarray  # N hard cluster ids
    soft: np.ndarray  # N x K soft assignment p (rows sum to 1)
    neighbours: np.ndarray  # N x k indices of nearest neighbours, self excluded
    centers: np.ndarray | None = None  # K x d cluster centres
    entropy: np.ndarray | None = None  # N, per-sample assignment entropy (see ``variant``)
    variant: str = "paper"  # "paper" or "official": how soft/entropy/neighbours were computed
    num_labeled: int = 0  # pool rows < num_labeled are labeled

    def __post_init__(self) -> None:
        n = len(self.features)
        shapes = {
            "assignments": len(self.assignments),
            "soft": len(self.soft),
            "neighbours": len(self.neighbours),
        }
        if self.entropy is not None:
            shapes["entropy"] = len(self.entropy)
        check_lengths(
            "ClusterState",
            n,
            shapes,
            "build every field over the same pool (gcdbench.training.mining.cluster_state does).",
        )

    @property
    def size(self) -> int:
        return len(self.features)


class Miner(ABC):
    name: str
    description: str = ""

    @abstractmethod
    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Pool indices to query this round (at most ``budget``)."""
