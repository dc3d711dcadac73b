"""Encoders: model lookup (offline packages, local paths, hub ids), the sentence-transformers
encoder, and the on-disk feature cache.

Every method gets its encoder from one ``--encoder`` value, read here: embedding methods
through :func:`encoder_factory`, methods that fine-tune a transformer through
:func:`trainable_ref` (the model the same value names), so both kinds record the same
encoder name and weight fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gcdbench import registry
from gcdbench.api.encoder import Encoder, EncoderFactory
from gcdbench.encoders.models import (
    PACKAGED_MODELS,
    check_model_available,
    is_hub_id,
    looks_like_path,
    missing_folder_message,
)
from gcdbench.errors import GcdbenchError, UnknownNameError

DEFAULT_BACKEND = "sentence-transformers"


@dataclass(frozen=True)
class EncoderChoice:
    """What an ``--encoder`` value names: a registered factory and the reference it gets."""

    value: str
    factory: EncoderFactory
    ref: str | None

    def build(self) -> Encoder:
        return self.factory.create(self.ref)

    @property
    def model_ref(self) -> str | None:
        """The transformer model behind the encoder; None when it has no weights."""
        return self.factory.model_ref(self.ref)


def parse_encoder(value: str) -> EncoderChoice:
    """Read ``--encoder VALUE``, in order: a registered encoder name (``all-MiniLM-L6-v2``);
    ``BACKEND:REF`` for a registered backend that takes a model reference; an existing local
    path or a hub id (``org/name``, or a well-known org-less id such as
    ``bert-base-uncased``), handed to the sentence-transformers backend. Loads nothing."""
    known = registry.names("encoder")
    if value in known:
        return EncoderChoice(value, registry.get("encoder", value), None)
    backend, sep, ref = value.partition(":")
    if sep and backend in known and registry.get("encoder", backend).accepts_ref:
        return EncoderChoice(value, registry.get("encoder", backend), ref)
    if _existing_path(value) is not None or is_hub_id(value):
        return EncoderChoice(value, registry.get("encoder", DEFAULT_BACKEND), value)
    if looks_like_path(value):
        raise GcdbenchError(missing_folder_message(value))
    raise UnknownNameError("encoder", value, known)


def encoder_factory(value: str) -> Callable[[], Encoder]:
    """Check ``--encoder VALUE`` now (see :func:`parse_encoder`) and return a thunk that
    builds the encoder later."""
    return parse_encoder(value).build


def resolve_encoder(value: str) -> Encoder:
    """Build the encoder ``--encoder VALUE`` names (see :func:`parse_encoder`)."""
    return encoder_factory(value)()


def check_encoder(value: str) -> None:
    """Everything about ``--encoder VALUE`` that can be known before a run writes anything:
    the name, and that its model can be had here (packages installed, folder present, a hub
    id cached locally or the hub reachable). Downloads and writes nothing."""
    ref = parse_encoder(value).model_ref
    if not ref:
        return
    local = None if ref in PACKAGED_MODELS else _existing_path(ref)
    if local is not None:
        _check_model_folder(ref, local)
    check_model_available(ref)


#: Files a model folder holds: a sentence-transformers save (modules.json) or a Hugging Face
#: model (config.json). A folder with neither fails only when the model loads, mid-run.
MODEL_FOLDER_MARKERS = ("modules.json", "config.json")


def _check_model_folder(ref: str, local: Path) -> None:
    if not local.is_dir():
        raise GcdbenchError(f"encoder path {ref!r} is a file; pass the model's folder.")
    if not any((local / marker).is_file() for marker in MODEL_FOLDER_MARKERS):
        raise GcdbenchError(
            f"encoder folder {ref!r} holds no model (no {' or '.join(MODEL_FOLDER_MARKERS)}); "
            "pass the folder a model was saved to, a hub id (org/name) or a registered "
            "encoder (gcdbench list encoders)."
        )


def _existing_path(value: str) -> Path | None:
    """``value`` as an existing local path, else None. A name the file system cannot even
    look up (a part longer than a file name may be, a ``~user`` with no such user) is no
    encoder either: one line, not the OSError or RuntimeError it raises."""
    try:
        path = Path(value).expanduser()
        return path if path.exists() else None
    except (OSError, RuntimeError) as exc:
        raise GcdbenchError(
            f"encoder {_shorten(value)} is no registered encoder, local folder or hub id "
            f"({type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}); pass a "
            "registered encoder (gcdbench list encoders), a folder or a hub id (org/name)."
        ) from None


def _shorten(value: str) -> str:
    return repr(value) if len(value) <= 60 else f"{value[:40]!r}... ({len(value)} characters)"


def trainable_ref(value: str | None, method: str) -> str:
    """The model a method that fine-tunes a transformer trains, from the run's ``--encoder``:
    a registered encoder that wraps a model (a packaged alias, ``sentence-transformers:REF``,
    ``hf-transformer:REF#opts``) trains that model; a folder or hub id trains itself."""
    if not value:
        raise GcdbenchError(f"method {method!r} needs --encoder naming a transformer model.")
    ref = parse_encoder(value).model_ref
    if not ref:
        raise GcdbenchError(
            f"method {method!r} fine-tunes a transformer; --encoder {value} has no weights. "
            "Pass a model: all-MiniLM-L6-v2, all-mpnet-base-v2, a local folder or a hub id "
            "(e.g. bert-base-uncased)."
        )
    return ref


__all__ = [
    "DEFAULT_BACKEND",
    "EncoderChoice",
    "check_encoder",
    "encoder_factory",
    "parse_encoder",
    "resolve_encoder",
    "trainable_ref",
]
