"""Training modes: how much of the backbone trains. The losses never change.

* ``full``   everything trains; augmentation is random token replacement on the input ids
             (docs/methods/glean.md §2.2).
* ``top-N``  the embeddings and all but the top N layers are frozen. Their token states for
             every pool text are computed once (eval mode, no dropout) and cached, so a step
             runs only the top N layers forward and backward.
* ``head``   the whole backbone is frozen; pooled features are cached once and only what sits
             on top of them (the projection head and classifier, owned by the caller) trains.

Cached modes cannot change input tokens below the cut, so each defines the closest
equivalent of the augmentation and says so in :meth:`TrainingMode.describe`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gcdbench.errors import GcdbenchError
from gcdbench.training.backbone import TextBackbone
from gcdbench.training.cached_modes import HeadMode, TopLayersMode
from gcdbench.training.mode_base import (
    HEAD_FEATURE_DROPOUT,
    MLM_PROB,
    RTR_PROB,
    TrainingMode,
)
from gcdbench.training.params import PRECISIONS


class FullMode(TrainingMode):
    """Everything trains; the official setting."""

    name = "full"
    augmentation = (
        "random token replacement on input ids, 25% of tokens (docs/methods/glean.md §2.2)"
    )

    def __init__(self, backbone: TextBackbone, pool_texts: Sequence[str], **kwargs: Any) -> None:
        super().__init__(backbone, pool_texts, **kwargs)
        self._set_trainable(list(backbone.parameters()))

    def embed(
        self, indices: np.ndarray, *, augment: bool, generator: torch.Generator | None
    ) -> Tensor:
        ids, mask, special = self.batch(indices)
        if augment:
            ids = self.rtr(ids, mask, special, generator or self._fallback_generator)
        ids, mask = self.to_device(ids, mask)
        with self.autocast(), self.dropout_rng(generator):
            return self.backbone(ids, mask).float()

    def mlm_loss(self, indices: np.ndarray, generator: torch.Generator) -> Tensor | None:
        ids, mask, special = self.batch(indices)
        ids, labels = self.masked(ids, special, generator)
        ids, mask, labels = self.to_device(ids, mask, labels)
        with self.autocast(), self.dropout_rng(generator):
            return self.backbone.mlm_loss(ids, mask, labels).float()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.backbone.parameters())

    def trained_layers(self) -> list[int]:
        return list(range(self.backbone.num_layers))

    def _freeze_eval(self) -> None:
        pass  # nothing is frozen


def make_mode(
    mode: str,
    backbone: TextBackbone,
    pool_texts: Sequence[str],
    *,
    precision: str = "fp32",
    reporter: Any = None,
    seed: int = 0,
) -> TrainingMode:
    """``full``, ``top-N`` (1 ≤ N ≤ the backbone's layers) or ``head``; precision fp32|bf16.
    ``seed`` feeds dropout when a step passes no generator."""
    if precision not in PRECISIONS:
        raise GcdbenchError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
    kwargs = {"precision": precision, "reporter": reporter, "seed": seed}
    if mode == "full":
        return FullMode(backbone, pool_texts, **kwargs)
    if mode == "head":
        return HeadMode(backbone, pool_texts, **kwargs)
    match = re.fullmatch(r"top-(\d+)", mode)
    if match and 1 <= int(match.group(1)) <= backbone.num_layers:
        return TopLayersMode(backbone, pool_texts, top=int(match.group(1)), **kwargs)
    raise GcdbenchError(
        f"unknown training mode {mode!r}; use 'full', 'head' or 'top-N' with N from 1 to "
        f"{backbone.num_layers} (the backbone's layers)."
    )


__all__ = [
    "HEAD_FEATURE_DROPOUT",
    "MLM_PROB",
    "PRECISIONS",
    "RTR_PROB",
    "FullMode",
    "HeadMode",
    "TopLayersMode",
    "TrainingMode",
    "make_mode",
]
