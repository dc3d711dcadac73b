"""Parameters, presets and constants of the training methods (``mtp``, ``no-llm``;
GLEAN/Loop extend them). Torch-free, so a method module can declare its ``Params`` at import
time without loading the training engine.

Three presets: ``paper`` (the official GLEAN settings, §2.1/§3: meant for a GPU and
``--encoder bert-base-uncased``), ``cpu`` (chosen by measurement with
benchmarks/no_llm_banking.py so BANKING 25% fits in ten minutes on two cores) and ``smoke``
(seconds, for tests). The field defaults equal the ``cpu`` preset, so a bare run is the CPU
configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gcdbench.api.method import check_value, param
from gcdbench.training.loss_terms import DEFAULT_LOSSES, LOSSES_SYNTAX, losses_problem

#: how a backbone's token states become one vector per text
POOLINGS = ("cls", "mean")
#: fp32, or bf16 autocast
PRECISIONS = ("fp32", "bf16")
#: top-k neighbours GLEAN/Loop hard-code per dataset (docs/methods/glean.md §3); ``k=0``
#: selects these.
PAPER_TOPK: Mapping[str, int] = {"banking": 50, "clinc": 50, "stackoverflow": 500}
DEFAULT_TOPK = 50
#: paper = the method as published; official = the released code's departures
VARIANTS = ("paper", "official")
CLASSIFIERS = ("known", "all")
MODES_HINT = "full, top-N (e.g. top-2) or head"
#: N >= 1 here; the backbone's layer count is checked when it loads
MODE_PATTERN = r"full|head|top-0*[1-9][0-9]*"


@dataclass(frozen=True)
class PretrainParams:
    """MTP pre-training (CE on labeled texts + MLM on the pool), shared by every method."""

    mode: str = param(
        "top-2",
        pattern=MODE_PATTERN,
        allowed=MODES_HINT,
        help="how much of the backbone trains: full, the top N layers, or only the head",
    )
    precision: str = param("bf16", choices=PRECISIONS, help="fp32, or bf16 autocast")
    pooling: str = param(
        "mean", choices=POOLINGS, help="cls (the papers, BERT) or mean (how MiniLM was trained)"
    )
    max_length: int = param(64, ge=2, help="tokens per text, [CLS] and [SEP] included")
    pretrain_epochs: int = param(6, ge=0, help="MTP epochs (0 = no pre-training steps)")
    pretrain_patience: int = param(
        2, ge=0, help="stop after this many epochs without a better dev accuracy"
    )
    pretrain_lr: float = param(5e-4, gt=0, help="MTP learning rate (AdamW, linear warm-up/decay)")
    pretrain_batch_size: int = param(
        48, ge=1, help="labeled texts per MTP step (and per CE batch in the rounds)"
    )
    pretrain_mlm: bool = param(True, help="add the MLM term on pool batches")
    # L2-normalise features before every K-means/kNN (MiniLM was trained for cosine
    # similarity); the papers cluster raw [CLS] vectors (paper preset: off)
    normalize: bool = param(True, help="L2-normalise features before every K-means and kNN")


@dataclass(frozen=True)
class RoundParams(PretrainParams):
    """The round loop: re-cluster every ``update_per_epoch`` epochs, then train with the
    ``losses`` terms (NCL + CE by default)."""

    epochs: int = param(6, ge=1, help="training epochs of the round loop")
    batch_size: int = param(48, ge=1, help="pool texts per training step")
    lr: float = param(3e-4, gt=0, help="learning rate of the round loop")
    update_per_epoch: int = param(2, ge=1, help="re-cluster (start a round) every N epochs")
    k: int = param(
        0, ge=0, help="kNN neighbours; 0 = the paper's per-dataset value (50, stackoverflow 500)"
    )
    temperature: float = param(0.07, gt=0, help="contrastive-loss temperature")
    feat_dim: int = param(128, ge=1, help="projection-head output size")
    ce_weight: float = param(1.0, ge=0, help="weight of the CE term on labeled texts")
    ncl_weight: float = param(1.0, ge=0, help="weight of the neighbourhood-contrastive term")
    max_steps_per_epoch: int = param(
        100, ge=0, help="cap on steps per epoch; 0 = a full pass over the pool"
    )
    # paper = the method as published; official = the released code's departures (Student-t
    # exponent, entropy of softmax(p), inner-product kNN on raw features, and for GLEAN the
    # alignment loss without the positive in its denominator); `--variant` sets it
    variant: str = param(
        "paper", choices=VARIANTS, help="follow the paper, or the released code's departures"
    )
    # classifier outputs: "known" (Loop, n_known logits) or "all" (GLEAN, K logits)
    classifier: str = param(
        "known", choices=CLASSIFIERS, help="classifier outputs: known classes or all K"
    )
    round_kmeans_n_init: int = param(
        10, ge=1, help="K-means restarts when a round re-clusters the pool"
    )
    # Names from the loss registry, summed in this order; a third-party loss joins with
    # -p losses=ncl,ce,mine (docs: gcdbench.training.loss_terms)
    losses: str = param(
        DEFAULT_LOSSES,
        check=losses_problem,
        allowed=LOSSES_SYNTAX,
        help="loss terms of the rounds, in order; weight: NAME:W, else NAME_weight, else 1",
    )


_SMOKE = {
    "mode": "top-1",
    "precision": "fp32",
    "max_length": 24,
    "pretrain_epochs": 2,
    "pretrain_patience": 1,
    "pretrain_batch_size": 32,
    "epochs": 1,
    "batch_size": 8,
    "update_per_epoch": 1,
    "k": 5,
    "feat_dim": 16,
    "max_steps_per_epoch": 3,
    "round_kmeans_n_init": 1,
}

_PAPER = {
    "mode": "full",
    "precision": "fp32",
    "pooling": "cls",
    "max_length": 64,
    "pretrain_epochs": 100,
    "pretrain_patience": 20,
    "pretrain_lr": 5e-5,
    "pretrain_batch_size": 48,
    "pretrain_mlm": True,
    "normalize": False,
    "epochs": 25,
    "batch_size": 48,
    "lr": 1e-5,
    "update_per_epoch": 5,
    "k": 0,
    "temperature": 0.07,
    "feat_dim": 768,  # GLEAN; Loop uses 128
    "max_steps_per_epoch": 0,
}


def _only_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _cpu(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def presets_for(
    cls: type,
    *,
    paper: Mapping[str, Any] | None = None,
    smoke: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """The three presets, restricted to the fields ``cls`` declares; a method adds its own
    values to ``paper`` and ``smoke`` (``cpu`` is always its field defaults)."""
    return {
        "cpu": _cpu(cls),
        "paper": {**_only_fields(cls, _PAPER), **(paper or {})},
        "smoke": {**_only_fields(cls, _SMOKE), **(smoke or {})},
    }


def check_params(params: PretrainParams, method: str) -> None:
    """One clear line for a value no training code can use: the schema :func:`param`
    declares, checked again for callers that build ``Params`` without ``resolve_params``."""
    for fld in dataclasses.fields(params):
        check_value(fld, getattr(params, fld.name), method, "--param")


def resolve_topk(k: int, dataset: str, pool_size: int) -> int:
    """``k=0`` -> the paper's value for ``dataset``; never more than the pool minus one."""
    wanted = k if k > 0 else PAPER_TOPK.get(dataset, DEFAULT_TOPK)
    return max(1, min(wanted, pool_size - 1))


__all__ = [
    "CLASSIFIERS",
    "DEFAULT_TOPK",
    "MODES_HINT",
    "MODE_PATTERN",
    "PAPER_TOPK",
    "POOLINGS",
    "PRECISIONS",
    "VARIANTS",
    "PretrainParams",
    "RoundParams",
    "check_params",
    "presets_for",
    "resolve_topk",
]
