"""The built-in loss hooks: ``ce``, ``ncl`` and ``align`` (keys: :mod:`gcdbench.api.loss`).

The round loop builds the ones a method's ``losses`` parameter names from the registry with
:meth:`~gcdbench.api.LossHook.from_params` and sums them with
:func:`gcdbench.api.training.weighted_sum`. The math is in the training engine, loaded when
a term is first computed, so registering these hooks does not import torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gcdbench.api import LossHook, hookimpl, training

if TYPE_CHECKING:
    from torch import Tensor


class CrossEntropyHook(LossHook):
    name = "ce"
    description = "cross-entropy of the classifier on labeled known-class samples"
    batch_keys = ("labels",)
    output_keys = ("logits",)

    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Tensor:
        return training.cross_entropy_loss(outputs["logits"], batch["labels"])


class NeighbourContrastiveHook(LossHook):
    name = "ncl"
    description = "neighbourhood contrastive loss: SupCon over the views with the kNN/label mask"
    batch_keys = ("adjacency",)
    output_keys = ("features",)

    def __init__(self, temperature: float = 0.07, base_temperature: float = 0.07) -> None:
        self.temperature = temperature
        self.base_temperature = base_temperature

    @classmethod
    def from_params(cls, params: Any) -> NeighbourContrastiveHook:
        return cls(temperature=params.temperature)

    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Tensor:
        return training.supcon_loss(
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

    @classmethod
    def from_params(cls, params: Any) -> AlignmentHook:
        return cls(temperature=params.temperature, include_positive=params.variant == "paper")

    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Tensor:
        return training.alignment_loss(
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
