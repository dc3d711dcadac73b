"""Encoders turn texts into vectors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class Encoder(ABC):
    """Text to float32 vectors, one row per text.

    ``fingerprint`` identifies the weights and everything else that changes the output
    (pooling, normalisation, maximum length); feature caches are keyed by it.
    """

    name: str
    fingerprint: str

    @abstractmethod
    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        """Provenance for the run record."""
        return {"name": self.name, "fingerprint": self.fingerprint}


class EncoderFactory(ABC):
    """What a plugin registers: a named way to build an encoder.

    ``accepts_ref`` factories take a model reference (a local path or a hub id) after a
    colon, e.g. ``sentence-transformers:/models/my-encoder``.
    """

    name: str
    description: str = ""
    accepts_ref: bool = False

    @abstractmethod
    def create(self, ref: str | None = None) -> Encoder: ...

    def model_ref(self, ref: str | None = None) -> str | None:
        """The transformer model the encoder built from ``ref`` wraps (a packaged alias, a
        local folder or a hub id), so that methods which fine-tune one train the model the
        run's ``--encoder`` names. None, the default, for encoders without such weights
        (a bag of words, a remote embedding API): those cannot be fine-tuned."""
        return None
