"""Encoders built on :class:`~gcdbench.training.backbone.TextBackbone`.

* ``hf-transformer:REF`` — any Hugging Face encoder (a packaged alias, a local folder or a
  hub id) with CLS pooling, the GLEAN/Loop feature. Options follow a ``#``, comma-separated:
  ``mean`` or ``cls`` for the pooling, ``len=N`` for the maximum length, e.g.
  ``hf-transformer:all-mpnet-base-v2#mean,len=128``.
* :func:`load_backbone` — the model a run's ``--encoder`` names, as a trainable backbone
  (what ``RunContext.load_backbone`` hands to methods that fine-tune).
* :func:`trained_encoder` — wraps a backbone a method has fine-tuned, so its test features go
  through the same Encoder interface with a fingerprint of the trained weights.
"""

from __future__ import annotations

import hashlib
import json
import re
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api.encoder import Encoder, EncoderFactory
from gcdbench.encoders.cache import model_fingerprint
from gcdbench.encoders.models import ModelSource, locate_model
from gcdbench.errors import GcdbenchError

if TYPE_CHECKING:
    from gcdbench.training.backbone import TextBackbone
    from gcdbench.training.modes import TrainingMode

DEFAULT_MAX_LENGTH = 64  # docs/methods/glean.md §2: the official code truncates at 64 tokens
_OPTION = re.compile(r"(cls|mean|len=\d+)")


def parse_hf_ref(value: str) -> tuple[str, str, int]:
    """``REF[#opt,...]`` → (ref, pooling, max_length)."""
    ref, sep, options = value.rpartition("#")
    if not sep or not all(_OPTION.fullmatch(o.strip()) for o in options.split(",")):
        # No options, or a '#' that belongs to the path itself.
        return value, "cls", DEFAULT_MAX_LENGTH
    pooling, max_length = "cls", DEFAULT_MAX_LENGTH
    for option in (o.strip() for o in options.split(",")):
        if option.startswith("len="):
            max_length = int(option[4:])
        else:
            pooling = option
    if max_length < 2:
        raise GcdbenchError(f"encoder {value!r}: len must be at least 2, e.g. #len=64.")
    return ref, pooling, max_length


class _BackboneEncoder(Encoder):
    """Shared batching: pooled backbone features in eval mode, float32."""

    precision = "fp32"

    @abstractmethod
    def _backbone(self) -> TextBackbone: ...

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int = 64,
        on_progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        import torch

        backbone = self._backbone()
        was_training = backbone.training
        backbone.eval()
        out = np.zeros((len(texts), backbone.hidden_size), dtype=np.float32)
        # Sorting by length keeps padding, and so wasted compute, small.
        order = np.argsort([len(t) for t in texts], kind="stable")
        autocast: Any = (
            torch.autocast(backbone.device.type, dtype=torch.bfloat16)
            if self.precision == "bf16"
            else torch.autocast(backbone.device.type, enabled=False)
        )
        try:
            with torch.no_grad(), autocast:
                for start in range(0, len(order), batch_size):
                    rows = order[start : start + batch_size]
                    tokens = backbone.tokenize([texts[i] for i in rows])
                    feats = backbone(tokens["input_ids"], tokens["attention_mask"])
                    out[rows] = feats.float().cpu().numpy()
                    if on_progress is not None:
                        on_progress(len(rows))
        finally:
            backbone.train(was_training)
        return out


class HFTransformerEncoder(_BackboneEncoder):
    """A frozen Hugging Face encoder with explicit pooling; loads on first use."""

    def __init__(self, source: ModelSource, name: str, *, pooling: str, max_length: int) -> None:
        self.source = source
        self.name = name
        self.pooling = pooling
        self.max_length = max_length
        self.fingerprint = model_fingerprint(
            "hf-transformer", source.path, pooling=pooling, max_length=max_length
        )
        self._loaded: TextBackbone | None = None

    def _backbone(self) -> TextBackbone:
        if self._loaded is None:
            from gcdbench.training.backbone import TextBackbone

            self._loaded = TextBackbone.from_ref(
                str(self.source.path), pooling=self.pooling, max_length=self.max_length
            )
        return self._loaded

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": "hf-transformer",
            "fingerprint": self.fingerprint,
            "pooling": self.pooling,
            "max_length": self.max_length,
            **self.source.describe(),
        }


class HFTransformerFactory(EncoderFactory):
    name = "hf-transformer"
    description = (
        "Hugging Face encoder with CLS pooling (the GLEAN/Loop feature): a packaged alias, "
        "a local folder or a hub id; '#mean' for mean pooling, '#len=N' for the max length"
    )
    accepts_ref = True

    def create(self, ref: str | None = None) -> Encoder:
        if not ref:
            raise GcdbenchError(
                "encoder 'hf-transformer' needs a model: pass --encoder "
                "hf-transformer:<alias, folder or hub id>[#mean][,len=N]."
            )
        model_ref, pooling, max_length = parse_hf_ref(ref)
        return HFTransformerEncoder(
            locate_model(model_ref), f"hf-transformer:{ref}", pooling=pooling,
            max_length=max_length,
        )  # fmt: skip

    def model_ref(self, ref: str | None = None) -> str | None:
        # The options after '#' set this encoder's own pooling and length; a method that
        # fine-tunes the model takes those from its parameters.
        return parse_hf_ref(ref)[0] if ref else None


class TrainedBackboneEncoder(_BackboneEncoder):
    """A fine-tuned backbone as an Encoder. The fingerprint covers the weights as they are
    when this object is made, so build it after training."""

    def __init__(self, backbone: TextBackbone, name: str, precision: str = "fp32") -> None:
        from gcdbench.training.backbone import weights_digest

        if precision not in ("fp32", "bf16"):
            raise GcdbenchError(f"unknown precision {precision!r}; use fp32 or bf16.")
        self.backbone = backbone
        self.name = name
        self.precision = precision
        self.trained_weights = weights_digest(backbone.encoder_model)
        self.fingerprint = hashlib.sha256(
            json.dumps(
                [
                    "trained-backbone",
                    self.trained_weights,
                    backbone.pooling,
                    backbone.max_length,
                    precision,
                ]
            ).encode()
        ).hexdigest()

    def _backbone(self) -> TextBackbone:
        return self.backbone

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": "trained-backbone",
            "fingerprint": self.fingerprint,
            "trained_weights_sha256": self.trained_weights,
            "precision": self.precision,
            "start": self.backbone.source,
            "deviations": self.backbone.deviations,
        }


def trained_encoder(
    model: TextBackbone | TrainingMode, name: str = "trained-backbone", precision: str = "fp32"
) -> TrainedBackboneEncoder:
    """Wrap a trained backbone (or a training mode's backbone).

    Features come in fp32 unless asked otherwise, even after bf16 training: inference is
    cheap, and bf16 features cost MiniLM about 2 ACC points under K-means on BANKING (see
    benchmarks/encoder_throughput.py --cluster-texts).
    """
    from gcdbench.training.modes import TrainingMode

    backbone = model.backbone if isinstance(model, TrainingMode) else model
    return TrainedBackboneEncoder(backbone, name, precision=precision)


def load_backbone(
    encoder: str | Encoder | None,
    method: str,
    *,
    pooling: str,
    with_mlm_head: bool,
    max_length: int,
    device: str | None = None,
) -> TextBackbone:
    """The model ``encoder`` names, loaded as a trainable backbone for ``method``.

    ``encoder`` is an ``--encoder`` value (see :func:`gcdbench.encoders.trainable_ref`) or an
    encoder object built on model files (its ``source``); anything without weights, a bag
    of words say, is one clear error.
    """
    from gcdbench.encoders import trainable_ref
    from gcdbench.training.backbone import TextBackbone

    if isinstance(encoder, Encoder):
        source = getattr(encoder, "source", None)
        if not isinstance(source, ModelSource):
            raise GcdbenchError(
                f"method {method!r} fine-tunes a transformer; encoder {encoder.name!r} has no "
                "weights. Pass a model: all-MiniLM-L6-v2, all-mpnet-base-v2, a local folder "
                "or a hub id (e.g. bert-base-uncased)."
            )
        ref = source.ref  # located again the same way, so provenance keeps the hub id
    else:
        ref = trainable_ref(encoder, method)
    return TextBackbone.from_ref(
        ref, pooling=pooling, with_mlm_head=with_mlm_head, max_length=max_length, device=device
    )
