"""The cached training modes: ``top-N`` (token states at the cut cached) and ``head``
(pooled features cached). See :mod:`gcdbench.training.modes` for what each does and
:mod:`gcdbench.training.mode_base` for the contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from gcdbench.training.backbone import TextBackbone
from gcdbench.training.mode_base import HEAD_FEATURE_DROPOUT, TrainingMode


class TopLayersMode(TrainingMode):
    """Only the top ``top`` layers (and the MLM head, if loaded) train."""

    def __init__(
        self, backbone: TextBackbone, pool_texts: Sequence[str], *, top: int, **kwargs: Any
    ) -> None:
        super().__init__(backbone, pool_texts, **kwargs)
        self.top = top
        self.cut = backbone.num_layers - top
        self.name = f"top-{top}"
        self.augmentation = (
            "random token replacement moved to the cut: the positions rtr selects (25% of "
            f"tokens, glean.md §2.2) get the cached layer-{self.cut} state of a token drawn "
            "uniformly from the whole pool, since the frozen layers below cannot see new ids"
        )
        layers = _encoder_layers(backbone)
        head = []
        if backbone.with_mlm_head:
            frozen = {id(p) for p in backbone.encoder_model.parameters()}
            # The decoder is tied to the (frozen) word embeddings; only the rest is new.
            head = [p for p in backbone.model.parameters() if id(p) not in frozen]
        self._trainable = [p for layer in layers[self.cut :] for p in layer.parameters()] + head
        self._set_trainable(self._trainable)
        self._cache, self._offsets = self._build_cache()

    def _build_cache(self) -> tuple[Tensor, Tensor]:
        """Packed [total tokens, hidden] states after layer ``cut`` (no padding stored)."""
        store = torch.bfloat16 if self.precision == "bf16" else torch.float32
        n = len(self._ids)
        order = np.argsort(self._lengths.numpy(), kind="stable")
        per_text: list[Tensor | None] = [None] * n
        with (
            self._evaluating(),
            torch.no_grad(),
            self._progress(f"caching layer-{self.cut} states", n) as advance,
        ):
            for start in range(0, n, 128):
                rows = order[start : start + 128]
                ids, mask, _ = self.batch(rows)
                ids, mask = self.to_device(ids, mask)
                with self.autocast():
                    states = self.backbone.token_states(ids, mask, stop=self.cut)
                for k, row in enumerate(rows):
                    per_text[row] = states[k, : int(self._lengths[row])].to(store)
                advance(len(rows))
        lengths = self._lengths.to(torch.long)
        offsets = torch.zeros(n + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        return torch.cat([t for t in per_text if t is not None]), offsets

    def _cut_states(self, indices: np.ndarray, width: int) -> Tensor:
        states = torch.zeros(
            len(indices), width, self.backbone.hidden_size, dtype=torch.float32,
            device=self._cache.device,
        )  # fmt: skip
        for k, row in enumerate(np.asarray(indices)):
            lo, hi = int(self._offsets[row]), int(self._offsets[row + 1])
            states[k, : hi - lo] = self._cache[lo:hi].float()
        return states

    def embed(
        self, indices: np.ndarray, *, augment: bool, generator: torch.Generator | None
    ) -> Tensor:
        ids, mask, special = self.batch(indices)
        states = self._cut_states(indices, ids.shape[1])
        if augment:
            gen = generator or self._fallback_generator
            replaced = self.rtr(ids, mask, special, gen) != ids
            donors = torch.randint(0, len(self._cache), (int(replaced.sum()),), generator=gen)
            states[replaced.to(states.device)] = self._cache[donors.to(self._cache.device)].float()
        ids, mask, states = self.to_device(ids, mask, states)
        with self.autocast(), self.dropout_rng(generator):
            top = self.backbone.token_states(ids, mask, start=self.cut, start_states=states)
            return self.backbone.pool(top, mask).float()

    def embed_texts(
        self, texts: Sequence[str], *, generator: torch.Generator | None = None
    ) -> Tensor:
        """The frozen layers run live without grad (new texts have no cached states), the
        top layers with grad."""
        tokens = self.backbone.tokenize(list(texts))
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        with self.autocast():
            with torch.no_grad():
                states = self.backbone.token_states(ids, mask, stop=self.cut)
            with self.dropout_rng(generator):
                top = self.backbone.token_states(
                    ids, mask, start=self.cut, start_states=states.float()
                )
                return self.backbone.pool(top, mask).float()

    def mlm_loss(self, indices: np.ndarray, generator: torch.Generator) -> Tensor | None:
        """Real MLM for the top layers: the masked ids run live through the frozen lower
        layers (no grad, eval mode), since cached states were computed without masks."""
        ids, mask, special = self.batch(indices)
        ids, labels = self.masked(ids, special, generator)
        ids, mask, labels = self.to_device(ids, mask, labels)
        with self.autocast():
            with torch.no_grad():
                states = self.backbone.token_states(ids, mask, stop=self.cut)
            with self.dropout_rng(generator):
                loss = self.backbone.mlm_loss(
                    ids, mask, labels, start=self.cut, start_states=states.float()
                )
        return loss.float()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return list(self._trainable)

    def trained_layers(self) -> list[int]:
        return list(range(self.cut, self.backbone.num_layers))

    def cached_bytes(self) -> int:
        return self._cache.numel() * self._cache.element_size()

    def _freeze_eval(self) -> None:
        cast(torch.nn.Module, self.backbone.encoder_model.embeddings).eval()
        for layer in _encoder_layers(self.backbone)[: self.cut]:
            layer.eval()


class HeadMode(TrainingMode):
    """The backbone is frozen; pooled features are computed once."""

    name = "head"
    augmentation = (
        f"feature dropout: each cached feature is zeroed with probability "
        f"{HEAD_FEATURE_DROPOUT} and the rest rescaled, in place of token replacement, "
        "which cannot run on a frozen, cached backbone"
    )

    def __init__(self, backbone: TextBackbone, pool_texts: Sequence[str], **kwargs: Any) -> None:
        super().__init__(backbone, pool_texts, **kwargs)
        self._set_trainable([])
        # The base-class extract goes through embed(), which reads this cache: build it from
        # the backbone directly first.
        self._features = torch.from_numpy(self._encode_pool()).to(backbone.device)

    def _encode_pool(self) -> np.ndarray:
        n = len(self._ids)
        out = np.zeros((n, self.backbone.hidden_size), dtype=np.float32)
        order = np.argsort(self._lengths.numpy(), kind="stable")
        with (
            self._evaluating(),
            torch.no_grad(),
            self._progress("caching pooled features", n) as advance,
        ):
            for start in range(0, n, 128):
                rows = order[start : start + 128]
                ids, mask, _ = self.batch(rows)
                ids, mask = self.to_device(ids, mask)
                with self.autocast():
                    out[rows] = self.backbone(ids, mask).float().cpu().numpy()
                advance(len(rows))
        return out

    def embed(
        self, indices: np.ndarray, *, augment: bool, generator: torch.Generator | None
    ) -> Tensor:
        rows = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=self._features.device)
        feats = self._features[rows]
        if augment:
            gen = generator or self._fallback_generator
            keep = torch.rand(feats.shape, generator=gen) >= HEAD_FEATURE_DROPOUT
            feats = feats * keep.to(feats.device) / (1.0 - HEAD_FEATURE_DROPOUT)
        return feats

    def embed_texts(
        self, texts: Sequence[str], *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Nothing in the backbone trains: plain features, no grad."""
        feats = self.encode_texts(texts)
        return torch.as_tensor(feats, device=self._features.device)

    def mlm_loss(self, indices: np.ndarray, generator: torch.Generator) -> Tensor | None:
        return None

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return []

    def trained_layers(self) -> list[int]:
        return []

    def cached_bytes(self) -> int:
        return self._features.numel() * self._features.element_size()

    def _freeze_eval(self) -> None:
        self.backbone.eval()


def _encoder_layers(backbone: TextBackbone) -> list[torch.nn.Module]:
    """The transformer blocks, bottom first (BERT-style models keep them in
    ``encoder.layer``); typed here, since torch's ``Module.__getattr__`` is not."""
    encoder = cast(torch.nn.Module, backbone.encoder_model.encoder)
    return list(cast(torch.nn.ModuleList, encoder.layer))
