"""What a round hook hands the round loop: the :class:`RoundPlan`. Torch-free, so a method
builds plans (and types its hook) without importing the training engine."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gcdbench.api.miner import ClusterState


@dataclass
class RoundPlan:
    """What a round hook asks the next epochs to train with (every field optional).

    ``positives`` maps a pool index to the pool index used as its positive for the whole
    round. ``align_targets`` maps a pool index to its chosen cluster id, and
    ``align_candidates`` to the cluster ids offered (the target among them); cluster ids
    index ``descriptions``, one text per cluster, encoded at every step.

    ``encode_offered_only`` makes a step encode only the descriptions offered to its batch's
    anchors that have a target; the loss never reads the others, so a method that describes
    only the clusters it offers leaves the rest empty. It is a method's choice, not a silent
    speed-up: the dropout draws differ from encoding all K, so results move.
    """

    positives: Mapping[int, int] = field(default_factory=dict)
    align_targets: Mapping[int, int] = field(default_factory=dict)
    align_candidates: Mapping[int, Sequence[int]] = field(default_factory=dict)
    descriptions: Sequence[str] = ()
    encode_offered_only: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)  # recorded in the round's stats


#: (cluster state, round index, pool texts) -> plan or None; the GLEAN/Loop extension point
RoundHook = Callable[[ClusterState, int, Sequence[str]], RoundPlan | None]

__all__ = ["RoundHook", "RoundPlan"]
