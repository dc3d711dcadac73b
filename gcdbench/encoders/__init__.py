"""Encoders: model lookup (offline packages, local paths, hub ids), the sentence-transformers
encoder, and the on-disk feature cache."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from gcdbench import registry
from gcdbench.api.encoder import Encoder
from gcdbench.errors import UnknownNameError

DEFAULT_BACKEND = "sentence-transformers"


def resolve_encoder(value: str) -> Encoder:
    """Build the encoder ``--encoder VALUE`` names (see :func:`encoder_factory`)."""
    return encoder_factory(value)()


def encoder_factory(value: str) -> Callable[[], Encoder]:
    """Check ``--encoder VALUE`` now and return a thunk that builds the encoder later.

    In order: a registered encoder name (``all-MiniLM-L6-v2``); ``BACKEND:REF`` for a
    registered backend that takes a model reference; a local path or a hub id
    (``org/model``), handed to the sentence-transformers backend.
    """
    known = registry.names("encoder")
    if value in known:
        return partial(registry.get("encoder", value).create, None)
    backend, sep, ref = value.partition(":")
    if sep and backend in known and registry.get("encoder", backend).accepts_ref:
        return partial(registry.get("encoder", backend).create, ref)
    if "/" in value or Path(value).expanduser().exists():
        return partial(registry.get("encoder", DEFAULT_BACKEND).create, value)
    raise UnknownNameError("encoder", value, known)
