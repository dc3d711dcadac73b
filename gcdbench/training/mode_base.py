"""The contract every training mode implements (:class:`TrainingMode`) and the machinery
the modes share; :mod:`gcdbench.training.modes` describes the modes and builds one."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gcdbench.errors import GcdbenchError
from gcdbench.training.backbone import TextBackbone

RTR_PROB = 0.25  # docs/methods/glean.md §2.2: hard-coded in the official code
MLM_PROB = 0.15
HEAD_FEATURE_DROPOUT = 0.25  # mirrors the 25% of tokens rtr selects


class TrainingMode(ABC):
    """Features of the fixed training pool (and of other texts) from a partly trainable
    backbone. ``generator`` arguments drive augmentation, masking and dropout, so the global
    RNGs are never touched."""

    name: str
    augmentation: str

    def __init__(
        self,
        backbone: TextBackbone,
        pool_texts: Sequence[str],
        *,
        precision: str = "fp32",
        reporter: Any = None,
        seed: int = 0,
    ) -> None:
        self.backbone = backbone
        self.precision = precision
        self.reporter = reporter
        # Dropout needs a generator even when the caller passes none (extract-free steps).
        self._fallback_generator = torch.Generator().manual_seed(seed)
        # The pool is tokenised once and kept on the CPU; batches move to the device.
        tokens = backbone.tokenize(list(pool_texts))
        self._ids = tokens["input_ids"].cpu()
        self._mask = tokens["attention_mask"].cpu()
        self._special = tokens["special_tokens_mask"].cpu()
        self._lengths = self._mask.sum(1)
        self.training = False

    def reseed(self, seed: int) -> None:
        """Restart the fallback generator, so a mode handed over from pre-training draws
        exactly as a fresh one built from the cached weights does."""
        self._fallback_generator = torch.Generator().manual_seed(seed)

    def rng_state(self) -> Tensor:
        """The state of the generator the mode draws from when a call passes none: saved
        with round checkpoints (docs/resume.md) so a resumed run draws as an uninterrupted one."""
        return self._fallback_generator.get_state()

    def set_rng_state(self, state: Tensor) -> None:
        """Continue from a state :meth:`rng_state` returned."""
        self._fallback_generator.set_state(state)

    # ---- the interface ------------------------------------------------------------------
    @property
    def pool_size(self) -> int:
        return len(self._ids)

    @abstractmethod
    def embed(
        self, indices: np.ndarray, *, augment: bool, generator: torch.Generator | None
    ) -> Tensor:
        """[len(indices), hidden] float32 pooled features of pool texts ``indices``, with
        grad through the trainable part."""

    def extract(self, indices: np.ndarray | None = None, *, batch_size: int = 128) -> np.ndarray:
        """Eval mode, no augmentation, no grad: float32 [n, hidden] (all pool texts when
        ``indices`` is None)."""
        indices = np.arange(len(self._ids)) if indices is None else np.asarray(indices)
        # Similar lengths in a batch waste less compute on padding.
        order = np.argsort(self._lengths[indices].numpy(), kind="stable")
        out = np.zeros((len(indices), self.backbone.hidden_size), dtype=np.float32)
        with self._evaluating(), torch.no_grad():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                feats = self.embed(indices[rows], augment=False, generator=None)
                out[rows] = feats.float().cpu().numpy()
        return out

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 128) -> np.ndarray:
        """Features of texts outside the pool (dev/test) through the whole backbone. Frozen
        parts are unchanged, so this agrees with :meth:`extract` for pool texts."""
        chunks = [np.zeros((0, self.backbone.hidden_size), dtype=np.float32)]
        with self._evaluating(), torch.no_grad():
            for start in range(0, len(texts), batch_size):
                tokens = self.backbone.tokenize(list(texts[start : start + batch_size]))
                with self.autocast():
                    feats = self.backbone(tokens["input_ids"], tokens["attention_mask"])
                chunks.append(feats.float().cpu().numpy())
        return np.concatenate(chunks)

    def embed_texts(
        self, texts: Sequence[str], *, generator: torch.Generator | None = None
    ) -> Tensor:
        """[len(texts), hidden] float32 features of any texts (GLEAN's cluster descriptions),
        un-augmented, with grad through the trainable part, in the mode's current train/eval
        state. This base version runs the whole backbone (what ``full`` trains)."""
        tokens = self.backbone.tokenize(list(texts))
        with self.autocast(), self.dropout_rng(generator):
            return self.backbone(tokens["input_ids"], tokens["attention_mask"]).float()

    @abstractmethod
    def mlm_loss(self, indices: np.ndarray, generator: torch.Generator) -> Tensor | None:
        """Masked-LM loss on pool texts ``indices``; None when the mode has no token level."""

    @abstractmethod
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """The backbone parameters this mode trains (the MLM head's included when loaded)."""

    @abstractmethod
    def trained_layers(self) -> list[int]: ...

    def cached_bytes(self) -> int:
        return 0

    def train(self) -> TrainingMode:
        # Several modes may share one backbone (a benchmark, say): the one training sets
        # which parameters take gradients.
        self._set_trainable(self.trainable_parameters())
        self.training = True
        self.backbone.train()
        self._freeze_eval()
        return self

    def eval(self) -> TrainingMode:
        self.training = False
        self.backbone.eval()
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.name,
            "trained_layers": self.trained_layers(),
            "num_layers": self.backbone.num_layers,
            "trainable_parameters": sum(p.numel() for p in self.trainable_parameters()),
            "cached_bytes": self.cached_bytes(),
            "precision": self.precision,
            "device": str(self.backbone.device),
            "augmentation": self.augmentation,
            # Cached modes replace GLEAN's input-level augmentation (§2.2) by an equivalent.
            "deviations": ([] if self.name == "full" else [f"augmentation: {self.augmentation}"])
            + self.backbone.deviations,
        }

    # ---- shared machinery ---------------------------------------------------------------
    @abstractmethod
    def _freeze_eval(self) -> None:
        """Put frozen modules back in eval mode (no dropout), as when their outputs were
        cached; called by :meth:`train`."""

    def batch(self, indices: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """CPU (ids, mask, special) of pool rows, trimmed to the longest of them."""
        rows = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        width = max(int(self._lengths[rows].max()), 1) if len(rows) else 1
        return self._ids[rows, :width], self._mask[rows, :width], self._special[rows, :width]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.backbone.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def dropout_rng(self, generator: torch.Generator | None) -> Iterator[None]:
        """Dropout draws from the global generators; fork them and seed the fork from
        ``generator`` so training is reproducible and the caller's global state untouched."""
        if not self.training:
            yield
            return
        seed = int(torch.randint(0, 2**62, (1,), generator=generator or self._fallback_generator))
        device = self.backbone.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def rtr(self, ids: Tensor, mask: Tensor, special: Tensor, generator: torch.Generator) -> Tensor:
        from gcdbench.training.augment import random_token_replacement

        return random_token_replacement(
            ids, mask, special, self.backbone.vocab_size, generator, prob=RTR_PROB
        )

    def masked(self, ids: Tensor, special: Tensor, generator: torch.Generator):
        from gcdbench.training.augment import mlm_mask

        mask_id = self.backbone.tokenizer.mask_token_id
        if mask_id is None:
            raise GcdbenchError("the tokenizer has no [MASK] token; MLM needs one.")
        return mlm_mask(ids, special, mask_id, self.backbone.vocab_size, generator, prob=MLM_PROB)

    def to_device(self, *tensors: Tensor) -> list[Tensor]:
        return [t.to(self.backbone.device, non_blocking=True) for t in tensors]

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            if was_training:
                self.train()

    def _set_trainable(self, params: list[torch.nn.Parameter]) -> None:
        keep = {id(p) for p in params}
        for p in self.backbone.parameters():
            p.requires_grad_(id(p) in keep)

    def _progress(self, description: str, total: int) -> contextlib.AbstractContextManager[Any]:
        if self.reporter is None:
            return contextlib.nullcontext(lambda advance: None)
        return self.reporter.task(description, total=total)
