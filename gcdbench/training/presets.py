"""Where a training method's backbone comes from, plus the names this module used to hold.

The parameters, presets and constants now live in :mod:`gcdbench.training.params`
(torch-free), the torch seeding helpers in :mod:`gcdbench.training.seeding`, and
``l2_normalise`` is :func:`gcdbench.api.toolkit.l2_normalise`. Methods reach all of them
through :mod:`gcdbench.api.training`; the re-exports below keep older imports working.
"""

from __future__ import annotations

from gcdbench import registry
from gcdbench.api.toolkit import l2_normalise
from gcdbench.errors import GcdbenchError
from gcdbench.training.params import (
    CLASSIFIERS,
    DEFAULT_TOPK,
    MODE_PATTERN,
    MODES_HINT,
    PAPER_TOPK,
    VARIANTS,
    PretrainParams,
    RoundParams,
    check_params,
    presets_for,
    resolve_topk,
)
from gcdbench.training.seeding import generator_for, isolated_torch_rng, torch_seed


def backbone_ref(encoder: str | None, method: str) -> str:
    """The model a training method fine-tunes, from the run's ``--encoder`` value.

    A registered frozen encoder that wraps a model (``sentence-transformers:REF``) trains
    REF; a bare alias, folder or hub id trains that model.
    """
    if not encoder:
        raise GcdbenchError(f"method {method!r} needs --encoder naming a transformer model.")
    backend, sep, ref = encoder.partition(":")
    if sep and backend in registry.names("encoder"):
        return ref
    if encoder in {"bag-of-words"}:
        raise GcdbenchError(
            f"method {method!r} fine-tunes a transformer; --encoder {encoder} has no weights. "
            "Pass a model: all-MiniLM-L6-v2, a local folder or a hub id."
        )
    return encoder


__all__ = [
    "CLASSIFIERS",
    "DEFAULT_TOPK",
    "MODES_HINT",
    "MODE_PATTERN",
    "PAPER_TOPK",
    "VARIANTS",
    "PretrainParams",
    "RoundParams",
    "backbone_ref",
    "check_params",
    "generator_for",
    "isolated_torch_rng",
    "l2_normalise",
    "presets_for",
    "resolve_topk",
    "torch_seed",
]
