"""Loss hooks: named, weighted terms a training method sums into its loss.

The contract between a training step and the hooks is two mappings of string keys. The
built-in hooks (``gcdbench_builtins.losses``) read:

=========  ==============================  ============================================
hook       ``batch`` keys                  ``outputs`` keys
=========  ==============================  ============================================
``ce``     ``labels`` [B] long             ``logits`` [B, C]
``ncl``    ``adjacency`` [B, B] bool       ``features`` [B, V, d], L2-normalised views
``align``  ``align_targets`` [B] long      ``anchor_features`` [B, d] L2-normalised,
           (-1 = no target),               ``description_features`` [C, d]
           ``align_candidates`` [B, C]     L2-normalised (one row per cluster)
           bool
=========  ==============================  ============================================

``adjacency`` is :func:`gcdbench.training.losses.neighbour_adjacency` of the batch; in
``features`` view 0 is the anchor view and view 1 the positive's view. A training step fills
only the keys of the hooks it runs: a term weighted 0 is never called (see
:func:`gcdbench.training.losses.weighted_sum`).

The round loop of the training methods (``no-llm``, GLEAN, Loop) sums the losses their
``losses`` parameter names, so a registered hook joins with ``-p losses=ncl,ce,NAME`` (or
``NAME:WEIGHT``) when every key it reads is one of the table's: the loop fills ``labels``
and ``logits`` when the task has labeled texts, and the ``align_*``, ``anchor_features``
and ``description_features`` keys only in rounds whose plan gives alignment targets (a hook
reading them sits the other rounds out). The loop builds each hook with
:meth:`LossHook.from_params`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from gcdbench.errors import GcdbenchError


class LossHook(ABC):
    """One loss term. Subclasses set ``name``, the keys they read (so a missing key fails
    with a message naming it) and implement :meth:`compute`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    batch_keys: ClassVar[tuple[str, ...]] = ()
    output_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_params(cls, params: Any) -> LossHook:
        """The hook as a training method's parameters configure it (a temperature, the
        variant, ...). The default takes no arguments: ``cls()``."""
        return cls()

    def __call__(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
        """The loss term (a scalar tensor) for one training step."""
        for where, keys, given in (
            ("batch", self.batch_keys, batch),
            ("outputs", self.output_keys, outputs),
        ):
            missing = [key for key in keys if key not in given]
            if missing:
                raise GcdbenchError(
                    f"loss {self.name!r} needs {where} keys {missing}; the training step must "
                    f"fill them (see gcdbench.api.loss) or give the term weight 0."
                )
        return self.compute(batch, outputs)

    @abstractmethod
    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any: ...
