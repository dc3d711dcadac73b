"""A hashed bag-of-words encoder: model-free, instant, deterministic.

A classical baseline representation, and the encoder the conformance checks and fast tests
use so that they load no model.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence

import numpy as np

from gcdbench.api.encoder import Encoder, EncoderFactory
from gcdbench.api.toolkit import l2_normalise

_TOKEN = re.compile(r"[a-z0-9]+")


class BagOfWordsEncoder(Encoder):
    """Word counts hashed (crc32) into ``dim`` buckets, L2-normalised."""

    def __init__(self, dim: int = 1024) -> None:
        self.dim = dim
        self.name = "bag-of-words"
        self.fingerprint = f"bag-of-words-crc32-{dim}-v1"

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for token in _TOKEN.findall(text.lower()):
                out[i, zlib.crc32(token.encode()) % self.dim] += 1.0
        out = l2_normalise(out)
        if on_progress is not None:
            on_progress(len(texts))
        return out

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "backend": "bag-of-words", "fingerprint": self.fingerprint}


class BagOfWordsFactory(EncoderFactory):
    name = "bag-of-words"
    description = "hashed bag of words (1024 buckets, L2-normalised); no model, instant"

    def create(self, ref: str | None = None) -> Encoder:
        return BagOfWordsEncoder()
