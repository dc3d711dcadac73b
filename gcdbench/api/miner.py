"""Miners choose which samples a round asks feedback about."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClusterState:
    """What a miner sees of the current round: features, clusters and soft assignments."""

    features: np.ndarray  # N x d
    assignments: np.ndarray  # N hard cluster ids
    soft: np.ndarray  # N x K soft assignment (rows sum to 1)
    neighbours: np.ndarray  # N x k indices of nearest neighbours, self excluded


class Miner(ABC):
    name: str
    description: str = ""

    @abstractmethod
    def select(self, state: ClusterState, budget: int, rng: np.random.Generator) -> np.ndarray:
        """Pool indices to query this round (at most ``budget``)."""
