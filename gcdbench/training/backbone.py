"""The trainable text backbone: a Hugging Face encoder (optionally with its MLM head), a
tokenizer, and a pooling rule that turns token states into one vector per text.

GLEAN/Loop cluster the last layer's [CLS] state of a fine-tuned BERT
(docs/methods/glean.md §2); mean
pooling is offered for sentence-transformers checkpoints trained that way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gcdbench.encoders.models import locate_model
from gcdbench.errors import GcdbenchError
from gcdbench.util.files import write_json

POOLINGS = ("cls", "mean")
# A fresh MLM head is initialised from this seed inside a forked RNG, so two loads of the same
# checkpoint agree and the global generators stay untouched.
HEAD_INIT_SEED = 0
_CONFIG_FILE = "gcdbench_backbone.json"


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        data = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
        # bf16 has no numpy equivalent; its raw bytes are what identify it anyway.
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _CachedStatesFeeder(torch.nn.Module):
    """Stands in for the embedding layer so the model's own forward starts from given states
    (it still builds its attention mask and position bias from them)."""

    def __init__(self, states: Tensor) -> None:
        super().__init__()
        self.states = states

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        return self.states


class TextBackbone(torch.nn.Module):
    """A BERT-family encoder whose pooled output is the text feature."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        pooling: str,
        max_length: int,
        source: dict[str, Any],
        deviations: list[str],
        with_mlm_head: bool,
        device: torch.device,
        fingerprint: str | None = None,
    ) -> None:
        """``source`` describes where the weights came from. Without ``fingerprint`` the
        weights are the starting point: they are hashed into the fingerprint and ``source``.
        With it (a reload of saved, maybe trained, weights) ``source`` is taken as complete."""
        super().__init__()
        if pooling not in POOLINGS:
            raise GcdbenchError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}.")
        if max_length < 2:
            raise GcdbenchError(f"max_length must be at least 2, got {max_length}.")
        # A Hugging Face model: its attributes (config, base_model, save_pretrained) are
        # dynamic, which torch's Module typing cannot express.
        self.model: Any = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.with_mlm_head = with_mlm_head
        self.deviations = list(deviations)
        self.device = device
        base = self.encoder_model
        self.hidden_size = int(base.config.hidden_size)
        self.num_layers = int(base.config.num_hidden_layers)
        if fingerprint is None:
            start_weights = weights_digest(base)
            fingerprint = hashlib.sha256(
                json.dumps([start_weights, pooling, max_length]).encode()
            ).hexdigest()
            source = {
                **source,
                "weights_sha256": start_weights,
                "pooling": pooling,
                "max_length": max_length,
            }
        self.fingerprint = fingerprint
        self.source = source
        self.to(device)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_ref(
        cls,
        ref: str,
        *,
        pooling: str = "cls",
        with_mlm_head: bool = False,
        max_length: int = 64,
        device: str | torch.device | None = None,
    ) -> TextBackbone:
        """Load ``ref``: a packaged alias (all-MiniLM-L6-v2, all-mpnet-base-v2), a local folder,
        or a hub id (e.g. bert-base-uncased: downloaded, or taken from the local Hugging Face
        cache offline). Methods get theirs from ``RunContext.load_backbone`` instead, which
        reads the run's ``--encoder``.

        ``with_mlm_head`` loads AutoModelForMaskedLM; a checkpoint without a head gets a fresh
        one, recorded in ``deviations``.
        """
        located = locate_model(ref)
        model, tokenizer, deviations = _load_model(
            located.path, with_mlm_head=with_mlm_head, offline=located.origin != "hub", ref=ref
        )
        source = {**located.describe(), "path": str(located.path)}
        return cls(
            model,
            tokenizer,
            pooling=pooling,
            max_length=max_length,
            source=source,
            deviations=deviations,
            with_mlm_head=with_mlm_head,
            device=resolve_device(device),
        )

    @classmethod
    def load(cls, folder: Path, device: str | torch.device | None = None) -> TextBackbone:
        """Reload what :meth:`save` wrote (weights, tokenizer, pooling, provenance)."""
        config_file = Path(folder) / _CONFIG_FILE
        if not config_file.is_file():
            raise GcdbenchError(
                f"{folder} holds no saved backbone ({_CONFIG_FILE} missing); pass a folder "
                "written by TextBackbone.save."
            )
        saved = json.loads(config_file.read_text(encoding="utf-8"))
        model, tokenizer, _ = _load_model(
            Path(folder), with_mlm_head=saved["with_mlm_head"], offline=True, ref=str(folder)
        )
        # The reloaded weights may be trained ones; provenance keeps naming the start.
        return cls(
            model,
            tokenizer,
            pooling=saved["pooling"],
            max_length=saved["max_length"],
            source=saved["source"],
            deviations=saved["deviations"],
            with_mlm_head=saved["with_mlm_head"],
            device=resolve_device(device),
            fingerprint=saved["fingerprint"],
        )

    def save(self, folder: Path) -> None:
        """HF ``save_pretrained`` for weights and tokenizer, plus gcdbench's own settings.

        The settings file is written last (atomically), so a folder with it is complete.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        write_json(
            folder / _CONFIG_FILE,
            {
                "pooling": self.pooling,
                "max_length": self.max_length,
                "with_mlm_head": self.with_mlm_head,
                "source": self.source,
                "deviations": self.deviations,
                "fingerprint": self.fingerprint,
            },
        )

    # ---- computation --------------------------------------------------------------------
    @property
    def encoder_model(self) -> Any:
        """The bare encoder (BertModel, MPNetModel, ...) without the MLM head: a torch Module
        with Hugging Face attributes (``config``, ``embeddings``, ``encoder``)."""
        return self.model.base_model if self.with_mlm_head else self.model

    @property
    def vocab_size(self) -> int:
        return int(self.encoder_model.config.vocab_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """input_ids, attention_mask and special_tokens_mask on the backbone's device,
        truncated to ``max_length`` and padded to the longest text of the batch."""
        batch = self.tokenizer(
            list(texts),
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_special_tokens_mask=True,
            return_tensors="pt",
        )
        # Padding counts as special: augmentation and MLM must never touch it.
        special = batch["special_tokens_mask"] | (1 - batch["attention_mask"])
        return {
            "input_ids": batch["input_ids"].to(self.device),
            "attention_mask": batch["attention_mask"].to(self.device),
            "special_tokens_mask": special.to(self.device),
        }

    def pool(self, token_states: Tensor, attention_mask: Tensor) -> Tensor:
        if self.pooling == "cls":
            return token_states[:, 0]
        weights = attention_mask.unsqueeze(-1).to(token_states.dtype)
        return (token_states * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """[B, hidden] pooled features."""
        states = self.encoder_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.pool(states.last_hidden_state, attention_mask)

    def token_states(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        *,
        start: int = 0,
        stop: int | None = None,
        start_states: Tensor | None = None,
    ) -> Tensor:
        """Token states after layer ``stop`` (default: the last).

        With ``start_states`` (the states after layer ``start``) the embeddings and layers
        below ``start`` are skipped; ``start=0`` without states begins at the embeddings.
        """
        stop = self.num_layers if stop is None else stop
        if not 0 <= start <= stop <= self.num_layers:
            raise ValueError(f"layer range {start}..{stop} outside 0..{self.num_layers}")
        if start > 0 and start_states is None:
            raise ValueError("start > 0 needs the states after layer `start`")
        with self._layer_slice(start, stop, start_states):
            out = self.encoder_model(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state

    def mlm_loss(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        labels: Tensor,
        *,
        start: int = 0,
        start_states: Tensor | None = None,
    ) -> Tensor:
        """Masked-LM cross-entropy (labels -100 where nothing is predicted); ``start`` and
        ``start_states`` skip the layers below ``start`` as in :meth:`token_states`."""
        if not self.with_mlm_head:
            raise GcdbenchError(
                "this backbone has no MLM head; load it with TextBackbone.from_ref(..., "
                "with_mlm_head=True) to train with MLM."
            )
        with self._layer_slice(start, self.num_layers, start_states):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
        return out.loss

    @contextlib.contextmanager
    def _layer_slice(self, start: int, stop: int, start_states: Tensor | None) -> Iterator[None]:
        """Temporarily make the encoder run layers start..stop only.

        Swapping modules (rather than calling layers ourselves) keeps each architecture's own
        attention-mask and position-bias code in charge.
        """
        if start == 0 and start_states is None and stop == self.num_layers:
            yield
            return
        base = self.encoder_model
        layers = _encoder_layers(base)
        embeddings = base.embeddings
        try:
            base.encoder.layer = torch.nn.ModuleList(list(layers)[start:stop])
            if start_states is not None:
                base.embeddings = _CachedStatesFeeder(start_states)
            yield
        finally:
            base.encoder.layer = layers
            base.embeddings = embeddings


def _encoder_layers(base: torch.nn.Module) -> torch.nn.ModuleList:
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(base, "embeddings"):
        raise GcdbenchError(
            f"{type(base).__name__} is not a BERT-style encoder (.embeddings + .encoder.layer); "
            "layer-wise training modes need one, use mode 'full' or 'head'."
        )
    return layers


def _load_model(
    path: Path, *, with_mlm_head: bool, offline: bool, ref: str
) -> tuple[torch.nn.Module, Any, list[str]]:
    import transformers
    from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    model_class = AutoModelForMaskedLM if with_mlm_head else AutoModel
    deviations: list[str] = []
    try:
        # Packaged and local models must never reach for the network (a per-call switch,
        # so a hub model loaded later in the same process still can).
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=offline)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(HEAD_INIT_SEED)
            model, info = model_class.from_pretrained(
                str(path), output_loading_info=True, local_files_only=offline
            )
    except Exception as exc:
        raise GcdbenchError(
            f"could not load model {ref!r} from {path} ({type(exc).__name__}: {exc}); "
            "pass a Hugging Face model folder (config.json, weights, tokenizer)."
        ) from None
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        what = "MLM head" if with_mlm_head else "weights"
        deviations.append(
            f"{ref}: checkpoint has no {what} for {len(missing)} tensors "
            f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
            f"initialised fresh with seed {HEAD_INIT_SEED}"
        )
    model.eval()
    return model, tokenizer, deviations
