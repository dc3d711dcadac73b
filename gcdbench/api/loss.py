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
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar


class LossHook(ABC):
    """One loss term. Subclasses set ``name``, the keys they read (so a missing key fails
    with a message naming it) and implement :meth:`compute`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    batch_keys: ClassVar[tuple[str, ...]] = ()
    output_keys: ClassVar[tuple[str, ...]] = ()

    def __call__(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any:
        """The loss term (a scalar tensor) for one training step."""
        for where, keys, given in (
            ("batch", self.batch_keys, batch),
            ("outputs", self.output_keys, outputs),
        ):
            missing = [key for key in keys if key not in given]
            if missing:
                from gcdbench.errors import GcdbenchError

                raise GcdbenchError(
                    f"loss {self.name!r} needs {where} keys {missing}; the training step must "
                    f"fill them (see gcdbench.api.loss) or give the term weight 0."
                )
        return self.compute(batch, outputs)

    @abstractmethod
    def compute(self, batch: Mapping[str, Any], outputs: Mapping[str, Any]) -> Any: ...
