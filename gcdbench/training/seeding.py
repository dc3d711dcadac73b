"""Torch randomness seeded from a run's NumPy stage generators, so training draws depend on
the run seed and the stage alone, and the caller's global torch RNG is left as it was."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def torch_seed(rng: np.random.Generator) -> int:
    """A torch seed (an int in [0, 2^63 - 1)) drawn from a NumPy stage generator."""
    return int(rng.integers(0, 2**63 - 1))


def generator_for(rng: np.random.Generator, device: torch.device) -> torch.Generator:
    """A torch generator on ``device`` seeded from a NumPy stage generator."""
    gen = torch.Generator(device=device)
    gen.manual_seed(torch_seed(rng))
    return gen


@contextlib.contextmanager
def isolated_torch_rng(rng: np.random.Generator) -> Iterator[None]:
    """Dropout and layer initialisation draw from torch's global generator; fork it, seed the
    fork from the run's stage generator, and restore it afterwards, so training is
    deterministic per run seed and the caller's torch RNG is untouched."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(torch_seed(rng))
        yield


__all__ = ["generator_for", "isolated_torch_rng", "torch_seed"]
