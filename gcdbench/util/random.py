"""Seeded generators keyed by a name, so each stage or question draws its own stream."""

from __future__ import annotations

import hashlib

import numpy as np


def keyed_generator(seed: int, key: str) -> np.random.Generator:
    """A generator determined by ``seed`` and ``key`` alone: adding or reordering other
    draws never changes this stream."""
    stream = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))
