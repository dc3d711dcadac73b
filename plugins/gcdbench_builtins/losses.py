"""The built-in loss hooks: ``ce``, ``ncl`` and ``align`` (keys: :mod:`gcdbench.api.loss`).

A training method builds them from the registry, e.g.
``registry.get("loss", "ncl")(temperature=0.07)``, and sums them with
:func:`gcdbench.training.losses.weighted_sum`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from gcdbench import hookimpl
from gcdbench.api.loss import LossHook
from gcdbench.training.losses import alignment_loss, cross_entropy_loss, supcon_loss


class CrossEntropyHook(LossHook):
    name = "ce"
    description = "cross-entropy of the classifier on labeled known-class samples"
    batch_keys = ("labels",)
    output_keys = ("logits",)

    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Tensor:
        return cross_entropy_loss(outputs["logits"], batch["labels"])


class NeighbourContrastiveHook(LossHook):
    name = "ncl"
    description = "neighbourhood contrastive loss: SupCon over the views with the kNN/label mask"
    batch_keys = ("adjacency",)
    output_keys = ("features",)

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07) -> None:
        self.temperature = temperature
        self.base_temperature = base_temperature

    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Tensor:
        return supcon_loss(
            outputs["features"],
            batch["adjacency"],
            temperature=self.temperature,
            base_temperature=self.base_temperature,
        )


class AlignmentHook(LossHook):
    name = "align"
    description = "pseudo-category alignment of anchors to their chosen cluster's description"
    batch_keys = ("align_targets", "align_candidates")
    output_keys = ("anchor_features", "description_features")

    def __init__(self, temperature: float = 0.07, include_positive: bool = True) -> None:
        self.temperature = temperature
        # False reproduces the released GLEAN code (negatives-only denominator).
        self.include_positive = include_positive

    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Tensor:
        return alignment_loss(
            outputs["anchor_features"],
            outputs["description_features"],
            batch["align_targets"],
            batch["align_candidates"],
            temperature=self.temperature,
            include_positive=self.include_positive,
        )


@hookimpl
def register_loss_hooks(register):
    register(CrossEntropyHook)
    register(NeighbourContrastiveHook)
    register(AlignmentHook)
