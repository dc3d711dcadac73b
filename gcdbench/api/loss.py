"""Loss hooks: named, weighted terms a training method sums into its loss."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class LossHook(ABC):
    name: str
    description: str = ""

    @abstractmethod
    def __call__(self, batch: Any, outputs: Any) -> Any:
        """The loss term (a scalar tensor) for one training step."""
