"""MTP pre-training (docs/methods/glean.md §2.1), cached on disk and shared by every method.

Each step: cross-entropy on a labeled batch (classifier Dropout(0.1) -> Linear(h, n_known) on
pooled features) plus the MLM loss on a batch of the whole pool (cycled). One epoch is one
pass over the labeled batches; after each epoch the known-class dev accuracy decides which
state is kept, and ``patience`` epochs without improvement stop training.

The trained backbone is cached under ``cache_dir()/pretrained/<key>/``. The key is the sha256
of what the result depends on — dataset, split hash, starting weights, mode, precision,
seed and the pre-training parameters — and not the method name, so ``mtp``, ``no-llm`` and
GLEAN/Loop on one split train it once.

Head mode freezes the whole backbone: there is nothing for MLM to train and the classifier
is thrown away afterwards, so pre-training would leave the features unchanged. It is
skipped (recorded as such); head-mode methods start from the frozen backbone.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gcdbench import paths
from gcdbench.api.progress import Reporter
from gcdbench.api.spec import canonical_json, sha256_hex
from gcdbench.api.task import GCDTask
from gcdbench.training.backbone import TextBackbone
from gcdbench.training.heads import KnownClassifier
from gcdbench.training.mode_base import TrainingMode
from gcdbench.training.modes import make_mode
from gcdbench.training.optim import cycling_batches, make_optimisation, steps_per_epoch
from gcdbench.training.params import PretrainParams
from gcdbench.training.seeding import generator_for
from gcdbench.util.files import atomic_dir, write_json

MANIFEST = "manifest.json"
BACKBONE_DIR = "backbone"
#: bump when a code change alters what pre-training produces
PRETRAIN_VERSION = "1"


@dataclass
class PretrainOutcome:
    """The backbone to continue from, the mode built on it when training just happened
    (its caches are still valid), and what to record."""

    backbone: TextBackbone
    mode: TrainingMode | None
    key: str
    cache_hit: bool
    manifest: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"cache_key": self.key, "cache_hit": self.cache_hit, **self.manifest}


def pretrain_key_inputs(
    task: GCDTask, backbone: TextBackbone, params: PretrainParams, *, seed: int
) -> dict[str, Any]:
    """Everything the pre-trained weights depend on (and nothing about the method)."""
    return {
        "version": PRETRAIN_VERSION,
        "dataset": task.dataset,
        "split_hash": task.split_hash,
        "backbone": backbone.fingerprint,
        "seed": seed,
        "params": _pretrain_fields(params),
    }


#: parameters that only shape what happens after pre-training, so not part of its key
NOT_PRETRAINING = frozenset({"normalize"})


def _pretrain_fields(params: PretrainParams) -> dict[str, Any]:
    names = set(PretrainParams.__dataclass_fields__) - NOT_PRETRAINING
    return {k: v for k, v in asdict(params).items() if k in names}


def pretrain_key(inputs: dict[str, Any]) -> str:
    return sha256_hex(canonical_json(inputs))


def pretrain(
    task: GCDTask,
    backbone: TextBackbone,
    params: PretrainParams,
    *,
    seed: int,
    rng: np.random.Generator,
    reporter: Reporter | None = None,
    cache_root: Path | None = None,
) -> PretrainOutcome:
    """MTP on ``backbone`` (loaded with its MLM head), or its cached result."""
    reporter = reporter or Reporter()
    inputs = pretrain_key_inputs(task, backbone, params, seed=seed)
    key = pretrain_key(inputs)
    folder = (cache_root or paths.cache_dir()) / "pretrained" / key
    if params.mode == "head":
        return PretrainOutcome(backbone, None, key, False, {"skipped": "head mode"})
    cached = _load_cached(folder, backbone.device)
    if cached is not None:
        reporter.message(f"pre-trained backbone found in cache ({key[:12]})")
        backbone, manifest = cached
        return PretrainOutcome(backbone, None, key, True, manifest)

    started = time.perf_counter()
    mode = make_mode(params.mode, backbone, task.train.texts, precision=params.precision)
    history = _train(task, backbone, mode, params, rng, reporter)
    manifest = {
        "key_inputs": inputs,
        **history,
        "duration_s": round(time.perf_counter() - started, 3),
        "deviations": list(backbone.deviations),
    }
    _store(folder, backbone, manifest)
    return PretrainOutcome(backbone, mode, key, False, manifest)


def _train(
    task: GCDTask,
    backbone: TextBackbone,
    mode: TrainingMode,
    params: PretrainParams,
    rng: np.random.Generator,
    reporter: Reporter,
) -> dict[str, Any]:
    device = backbone.device
    classifier = KnownClassifier(backbone.hidden_size, task.num_known).to(device)
    labeled_y = torch.as_tensor(task.labeled_y, dtype=torch.long, device=device)
    batch = params.pretrain_batch_size
    per_epoch = steps_per_epoch(task.num_labeled, batch)
    optimisation = make_optimisation(
        [backbone, classifier],
        [*mode.trainable_parameters(), *classifier.parameters()],
        lr=params.pretrain_lr,
        total_steps=per_epoch * params.pretrain_epochs,
    )
    generator = generator_for(rng, device)
    pool_batches = cycling_batches(len(task.train), batch, rng)
    dev_acc: list[float] = []
    best_acc, best_epoch, best_state = -1.0, -1, _snapshot(mode)
    with reporter.task("MTP pre-training", total=params.pretrain_epochs) as advance:
        for epoch in range(params.pretrain_epochs):
            mode.train()
            classifier.train()
            order = rng.permutation(task.num_labeled)
            for start in range(0, task.num_labeled, batch):
                idx = order[start : start + batch]
                pooled = mode.embed(idx, augment=False, generator=generator).float()
                loss = torch.nn.functional.cross_entropy(classifier(pooled), labeled_y[idx])
                if params.pretrain_mlm:
                    mlm = mode.mlm_loss(next(pool_batches), generator)
                    if mlm is not None:
                        loss = loss + mlm.float()
                optimisation.step(loss)
            acc = _dev_accuracy(task, mode, classifier)
            dev_acc.append(round(acc, 4))
            advance(1)
            if acc > best_acc:
                best_acc, best_epoch, best_state = acc, epoch, _snapshot(mode)
            elif epoch - best_epoch >= params.pretrain_patience:
                break
    _restore(mode, best_state)
    mode.eval()
    return {
        "best_epoch": best_epoch,
        "best_dev_acc": round(best_acc, 4),
        "dev_acc": dev_acc,
        "epochs_run": len(dev_acc),
        "steps_per_epoch": per_epoch,
        "optimizer_steps": optimisation.steps_taken,
        "scheduled_steps": optimisation.total_steps,
    }


@torch.no_grad()
def _dev_accuracy(task: GCDTask, mode: TrainingMode, classifier: KnownClassifier) -> float:
    if len(task.dev) == 0:
        return 0.0
    mode.eval()
    classifier.eval()
    device = next(classifier.parameters()).device
    features = torch.as_tensor(mode.encode_texts(task.dev.texts), device=device).float()
    predicted = classifier(features).argmax(1).cpu().numpy()
    return float((predicted == np.asarray(task.dev_y)).mean())


def _snapshot(mode: TrainingMode) -> list[torch.Tensor]:
    # Only trainable tensors change during training, so only they need a copy.
    return [p.detach().clone() for p in mode.trainable_parameters()]


@torch.no_grad()
def _restore(mode: TrainingMode, state: list[torch.Tensor]) -> None:
    for param, saved in zip(mode.trainable_parameters(), state, strict=True):
        param.copy_(saved)


def _load_cached(folder: Path, device: torch.device) -> tuple[TextBackbone, dict] | None:
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():  # written last: without it the folder is incomplete
        return None
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    return TextBackbone.load(folder / BACKBONE_DIR, device=device), manifest


def _store(folder: Path, backbone: TextBackbone, manifest: dict[str, Any]) -> None:
    """Publish atomically; if another process got there first its (equivalent) result
    stays and ours is dropped."""
    with atomic_dir(folder, MANIFEST) as tmp:
        backbone.save(tmp / BACKBONE_DIR)
        write_json(tmp / MANIFEST, manifest)
