"""Optimiser and learning-rate schedule shared by MTP pre-training and the round loop.

AdamW with weight decay on every weight except biases and normalisation layers, a linear
warm-up over the first 10% of steps then a linear decay to zero, and grad-norm clipping
(docs/methods/glean.md §2.1, §3).

The schedule length is the number of optimiser steps that will really run: the official
code sizes it with ``floor(N / batch) * epochs`` while its loaders yield ``ceil(N / batch)``
batches, so the learning rate reaches zero before training ends (§11.19). Here the caller
passes ``steps_per_epoch(n, batch) * epochs``, which counts the last partial batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import get_linear_schedule_with_warmup

WARMUP_SHARE = 0.1
GRAD_CLIP_NORM = 1.0


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
    """Batches in one pass over ``num_samples`` items, the last one possibly partial."""
    return max(1, math.ceil(num_samples / batch_size))


def cycling_batches(size: int, batch: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Batches of ``range(size)`` forever, a fresh shuffle on every pass; empty batches
    forever when ``size`` is 0."""
    while size:
        order = rng.permutation(size)
        for start in range(0, size, batch):
            yield order[start : start + batch]
    while True:
        yield np.zeros(0, dtype=np.int64)


def _is_no_decay(module: torch.nn.Module, param_name: str) -> bool:
    # Matching on the module type, not on names like "LayerNorm.weight", also covers
    # models whose norm layers are named differently (e.g. "norm", "ln_f").
    is_norm = (
        isinstance(module, torch.nn.LayerNorm | torch.nn.GroupNorm)
        or "Norm" in type(module).__name__
    )
    return is_norm or param_name == "bias"


def parameter_groups(
    modules: Sequence[torch.nn.Module],
    trainable: Iterable[torch.nn.Parameter],
    weight_decay: float,
) -> list[dict[str, object]]:
    """Split ``trainable`` into a decayed and a non-decayed group.

    ``modules`` are searched to learn which layer owns each parameter; a trainable
    parameter owned by none of them is decayed.
    """
    wanted = {id(p): p for p in trainable if p.requires_grad}
    no_decay_ids: set[int] = set()
    for root in modules:
        for module in root.modules():
            for name, param in module.named_parameters(recurse=False):
                if id(param) in wanted and _is_no_decay(module, name):
                    no_decay_ids.add(id(param))
    decay = [p for i, p in wanted.items() if i not in no_decay_ids]
    no_decay = [p for i, p in wanted.items() if i in no_decay_ids]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


@dataclass
class Optimisation:
    """An optimiser, its schedule and the clip norm, stepped together."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    parameters: list[torch.nn.Parameter]
    total_steps: int
    clip_norm: float = GRAD_CLIP_NORM
    steps_taken: int = 0

    def step(self, loss: torch.Tensor) -> float:
        """Backward, clip, step, schedule; returns the pre-clip gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.clip_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.steps_taken += 1
        return float(norm)

    @property
    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])


def make_optimisation(
    modules: Sequence[torch.nn.Module],
    trainable: Iterable[torch.nn.Parameter],
    *,
    lr: float,
    total_steps: int,
    weight_decay: float = 0.01,
    warmup_share: float = WARMUP_SHARE,
) -> Optimisation:
    """AdamW + linear warm-up/decay over exactly ``total_steps`` optimiser steps."""
    groups = parameter_groups(modules, trainable, weight_decay)
    params = [p for group in groups for p in group["params"]]  # type: ignore[attr-defined]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    total_steps = max(1, int(total_steps))
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(warmup_share * total_steps), total_steps
    )
    return Optimisation(optimizer, scheduler, params, total_steps)
