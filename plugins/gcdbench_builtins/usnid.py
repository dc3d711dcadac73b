"""``usnid``: USNID (Zhang, Xu, Wang, Long, Gao, TKDE 2023, arXiv 2304.07699), the
semi-supervised variant its authors release in TEXTOIR (thuiar/TEXTOIR @82212b0,
``open_intent_discovery/methods/semi_supervised/USNID``), as docs/methods/usnid.md describes it.

Model: backbone -> mean pooling -> Linear(h, h) = the feature ``z`` that is clustered; the
heads read ``dropout(tanh(z))`` (the ``official`` variant: ``dropout(z)``, usnid.md §6): a
classifier and a one-layer contrastive head, both with as many outputs as classes.

Stage 1 (usnid.md §1.3): only the top layer trains; each step is CE on a labeled batch plus
SupCon over a labeled + unlabeled batch seen twice (two dropout views; positives = the other
view and same-label labeled texts); early stopping on known-class dev accuracy.
Stage 2 (§1.4): every epoch a SupCon step on the labeled texts, K-means of the pool (epoch 0
k-means++, later epochs started from the previous centroids), a stop when fewer than ``tol``
of the assignments changed, then a pseudo-label epoch (CE on two token-erasure views +
SupCon with the pseudo-labels). Test: K-means started from the last training centroids.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gcdbench.api import (
    Component,
    GcdbenchError,
    GCDTask,
    Method,
    MethodOutput,
    RunContext,
    hookimpl,
    param,
    training,
)

if TYPE_CHECKING:
    import torch

#: τ of stage 2 per dataset in the official config (configs/SemiUSNID.py); other datasets
#: take banking's value, the intent set closest to them.
OFFICIAL_TEMPERATURE: Mapping[str, float] = {"banking": 0.05, "clinc": 0.1, "stackoverflow": 0.05}
DEFAULT_TEMPERATURE = 0.05
#: stage-2 learning rate per dataset in the official config
OFFICIAL_LR: Mapping[str, float] = {"stackoverflow": 2e-5}
DEFAULT_LR = 1e-5
#: dropout between z and the heads (BERT's hidden_dropout_prob in the official model)
HEAD_DROPOUT = 0.1
#: stage-1 modes: anything but head would train lower layers the paper keeps frozen
STAGE1_MODE_PATTERN = r"head|top-0*[1-9][0-9]*"


@dataclass(frozen=True)
class USNIDParams(training.PretrainParams):
    """Defaults = the cpu preset. ``mode`` is stage 2's (the paper fine-tunes everything);
    ``pretrain_mode`` is stage 1's (the paper trains only the last layer)."""

    # Inherited fields re-declared for their USNID meaning and cpu defaults.
    mode: str = param(
        "top-2",
        pattern=training.MODE_PATTERN,
        allowed=training.MODES_HINT,
        help="what trains in stage 2 (paper: full); top-N/head replace token erasure",
    )
    pretrain_epochs: int = param(2, ge=0, help="stage-1 epochs at most (0 = no stage-1 steps)")
    pretrain_patience: int = param(
        2, ge=0, help="stage 1 stops after this many epochs without a better dev accuracy"
    )
    pretrain_lr: float = param(5e-4, gt=0, help="stage-1 learning rate")
    pretrain_batch_size: int = param(
        48, ge=1, help="stage 1: labeled texts per step, and as many unlabeled ones"
    )
    normalize: bool = param(
        True, help="L2-normalise z before every K-means (the official code clusters raw z)"
    )
    pretrain_mode: str = param(
        "top-1",
        pattern=STAGE1_MODE_PATTERN,
        allowed="top-N or head",
        help="what trains in stage 1 (paper: the last layer only, top-1)",
    )
    pretrain_max_steps: int = param(
        30, ge=0, help="cap on stage-1 steps per epoch; 0 = a full pass over the unlabeled texts"
    )
    pretrain_temperature: float = param(0.07, gt=0, help="SupCon τ of stage 1")
    epochs: int = param(4, ge=1, help="stage-2 epochs at most (it may stop early at tol)")
    batch_size: int = param(64, ge=1, help="texts per stage-2 step (labeled and pool)")
    lr: float = param(
        1e-4, ge=0, help="stage-2 learning rate; 0 = official per dataset (1e-5, SO 2e-5)"
    )
    temperature: float = param(
        0.0,
        ge=0,
        help="stage-2 SupCon τ; 0 = official per dataset (banking 0.05, clinc 0.1, SO 0.05)",
    )
    erase_prob: float = param(
        0.4, ge=0, lt=1, help="share of tokens a token-erasure view deletes (mode full)"
    )
    tol: float = param(
        0.0005, ge=0, help="stop stage 2 when fewer than this share of assignments change"
    )
    grad_clip: float = param(1.0, ge=0, help="clip gradients by value (0 = no clipping)")
    max_steps_per_epoch: int = param(
        30, ge=0, help="cap on pseudo-label steps per stage-2 epoch; 0 = a full pass"
    )
    kmeans_n_init: int = param(3, ge=1, help="k-means++ restarts of the epoch-0 clustering")
    variant: str = param(
        "paper",
        choices=training.VARIANTS,
        help="paper: tanh before the heads; official: the released code's linear heads",
    )
    pretrain_mlm: bool = param(False, help="must stay false: USNID's stage 1 has no MLM term")


_PAPER: dict[str, Any] = {
    "mode": "full",
    "pretrain_mode": "top-1",
    "precision": "fp32",
    "pooling": "mean",
    "max_length": 64,
    "pretrain_epochs": 100,
    "pretrain_patience": 10,
    "pretrain_lr": 5e-5,
    "pretrain_batch_size": 128,
    "pretrain_max_steps": 0,
    "pretrain_temperature": 0.07,
    "pretrain_mlm": False,
    "normalize": False,
    "epochs": 100,
    "batch_size": 128,
    "lr": 0.0,
    "temperature": 0.0,
    "erase_prob": 0.4,
    "tol": 0.0005,
    "grad_clip": 1.0,
    "max_steps_per_epoch": 0,
    "kmeans_n_init": 10,
}
_SMOKE: dict[str, Any] = {
    "mode": "top-1",
    "precision": "fp32",
    "max_length": 24,
    "pretrain_epochs": 2,
    "pretrain_patience": 1,
    "pretrain_batch_size": 8,
    "pretrain_max_steps": 2,
    "epochs": 2,
    "batch_size": 8,
    "max_steps_per_epoch": 2,
    "kmeans_n_init": 1,
}

#: what each parameter means when the cpu (or any) preset cuts it below the paper's value
_CUT_TEXT: Mapping[str, str] = {
    "mode": "stage 2 trains {v} (paper: full fine-tuning)",
    "precision": "{v} autocast (paper: fp32)",
    "pretrain_epochs": "stage 1: at most {v} epochs (paper: 100)",
    "pretrain_patience": "stage 1: patience {v} (paper: 10)",
    "pretrain_batch_size": "stage 1: {v} labeled + {v} unlabeled texts per step (paper: 128 + 128)",
    "pretrain_max_steps": (
        "stage 1: at most {v} steps per epoch (paper: a full pass over the unlabeled texts)"
    ),
    "pretrain_lr": "stage 1: lr {v} (paper: 5e-5)",
    "epochs": "stage 2: at most {v} epochs (paper: 100, or until tol)",
    "batch_size": "stage 2: {v} texts per step (paper: 128)",
    "lr": "stage 2: lr {v} (paper: 1e-5, stackoverflow 2e-5)",
    "max_steps_per_epoch": (
        "stage 2: at most {v} pseudo-label steps per epoch, a fresh random part of the pool "
        "each epoch (paper: a full pass over the pool)"
    ),
    "kmeans_n_init": "epoch-0 k-means++ with {v} restarts (paper: 10)",
    "max_length": "texts cut at {v} tokens (paper: 64 here; official 30-55 per dataset)",
}


class USNID(Method):
    name = "usnid"
    description = (
        "USNID (Zhang et al., TKDE 2023; TEXTOIR semi-supervised): CE + dropout-view SupCon "
        "pre-training of the top layer, then centroid-guided K-means with pseudo-label CE + "
        "SupCon on token-erasure views; K-means from the training centroids on test features. "
        "Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder",)
    trains_encoder = True
    components = (
        Component("pretrain", "stage 1 (CE + SupCon pre-training); stage 2 starts untrained"),
        Component("labeled-supcon", "the per-epoch SupCon step on labeled texts (wo_sup)"),
        Component("pseudo-ce", "the CE term of the pseudo-label epoch (wo_ce)"),
        Component("pseudo-supcon", "the SupCon term of the pseudo-label epoch (wo_con)"),
    )
    Params = USNIDParams
    presets = training.presets_for(USNIDParams, paper=_PAPER, smoke=_SMOKE)

    @classmethod
    def cross_check(cls, params: USNIDParams, num_classes: int | None = None) -> None:
        if params.pretrain_mlm:
            raise GcdbenchError(
                "method 'usnid' has no MLM term in its pre-training (CE + SupCon only); drop "
                "-p pretrain_mlm=true."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: USNIDParams = self.params
        self.cross_check(params, task.num_classes)
        diagnostics: dict[str, Any] = {}
        with training.isolated_torch_rng(ctx.rng("torch")):
            # The engine builds stage 1's mode; USNID's stage 1 is not MTP, so it is skipped.
            # Without stage 1 its mode would be built for nothing: start in stage 2's.
            stage1_mode = params.pretrain_mode if self.enabled("pretrain") else params.mode
            stage1_params = dataclasses.replace(params, mode=stage1_mode)
            setup = training.prepare_training(task, ctx, stage1_params, self.name, with_mtp=False)
            net = _build_net(setup.mode.backbone.hidden_size, task.num_known, params)
            if self.enabled("pretrain"):
                with ctx.timed("pretrain"), ctx.reporter.stage("pre-train (CE + SupCon)"):
                    diagnostics["pretrain"] = _pretrain(task, ctx, setup.mode, net, params)
            else:
                diagnostics["pretrain"] = {"skipped": "ablated"}
        with training.isolated_torch_rng(ctx.rng("train-torch")):
            mode = setup.mode
            if params.mode != stage1_mode:
                with ctx.timed("prepare_mode"):
                    # Built after stage 1: a cached mode stores states of layers stage 1 kept
                    # frozen, so its cache is still right.
                    mode = training.make_mode(
                        params.mode,
                        setup.backbone,
                        task.train.texts,
                        precision=params.precision,
                        reporter=ctx.reporter,
                        seed=training.torch_seed(ctx.rng("usnid-mode")),
                    )
            net.reset_heads(task.num_classes)
            with ctx.timed("train"), ctx.reporter.stage("centroid-guided clustering"):
                trainer = _Stage2(task, ctx, mode, net, params, self.enabled)
                diagnostics["train"] = trainer.run()
            with ctx.timed("encode_test"), ctx.reporter.stage("encode test"):
                features = net.features(mode.encode_texts(task.test.texts))
        with ctx.timed("kmeans"):
            assignments = _kmeans(
                _maybe_normalise(features, params.normalize),
                task.num_classes,
                ctx.seed,
                init=trainer.centroids,
            ).labels
        # The engine's own "pretrain" entry would only say MTP was skipped: stage 1 is ours.
        engine = {k: v for k, v in setup.diagnostics.items() if k != "pretrain"}
        diagnostics["training"] = {**engine, "stage2": mode.describe()}
        diagnostics["cuts"] = _cuts(params)
        diagnostics["departures"] = _departures(params, mode.name)
        diagnostics["resolved"] = {
            "lr": _stage2_lr(params, task.dataset),
            "temperature": _stage2_temperature(params, task.dataset),
        }
        return MethodOutput(test_assignments=assignments, diagnostics=diagnostics)


# -- the model on top of the backbone (usnid.md §1.3) -----------------------------------------


class _Net:
    """dense (the feature z), dropout, classifier and contrastive head: plain torch modules
    held together, so this module imports no torch at load time."""

    def __init__(self, hidden: int, num_labels: int, params: USNIDParams) -> None:
        import torch

        self.hidden = hidden
        self.tanh = params.variant == "paper"
        self.dense = torch.nn.Linear(hidden, hidden)
        self.dropout = torch.nn.Dropout(HEAD_DROPOUT)
        self.classifier = torch.nn.Linear(hidden, max(num_labels, 1))
        self.mlp_head = torch.nn.Linear(hidden, max(num_labels, 1))

    def reset_heads(self, num_labels: int) -> None:
        """Stage 2 keeps dense and gets a fresh classifier and head over all K classes."""
        import torch

        self.classifier = torch.nn.Linear(self.hidden, num_labels)
        self.mlp_head = torch.nn.Linear(self.hidden, num_labels)

    def modules(self) -> list[torch.nn.Module]:
        return [self.dense, self.dropout, self.classifier, self.mlp_head]

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules() for p in m.parameters()]

    def to(self, device: torch.device) -> _Net:
        for m in self.modules():
            m.to(device)
        return self

    def train(self, on: bool = True) -> None:
        for m in self.modules():
            m.train(on)

    def forward(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z, contrastive projection, logits) of pooled backbone features."""
        z = self.dense(pooled)
        # The official code computes tanh(z) and then discards it (usnid.md §6).
        hidden = self.dropout(z.tanh() if self.tanh else z)
        return z, self.mlp_head(hidden), self.classifier(hidden)

    def features(self, pooled: np.ndarray) -> np.ndarray:
        """z of eval features (no grad), as float32 numpy."""
        import torch

        device = self.dense.weight.device
        with torch.no_grad():
            z = self.dense(torch.as_tensor(pooled, device=device).float())
        return z.cpu().numpy().astype(np.float32)


def _build_net(hidden: int, num_known: int, params: USNIDParams) -> _Net:
    return _Net(hidden, num_known, params)


# -- stage 1: CE + SupCon with dropout views (usnid.md §1.3) ----------------------------------


def _pretrain(
    task: GCDTask,
    ctx: RunContext,
    mode: training.TrainingMode,
    net: _Net,
    params: USNIDParams,
) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    device = mode.backbone.device
    net.to(device)
    rng = ctx.rng("usnid-pretrain")
    generator = training.generator_for(rng, device)
    batch = params.pretrain_batch_size
    labeled_y = torch.as_tensor(task.labeled_y, dtype=torch.long, device=device)
    unlabeled = np.arange(task.num_labeled, len(task.train))
    # One epoch is one pass over the unlabeled texts, zipped with cycled labeled batches.
    per_epoch = training.steps_per_epoch(len(unlabeled) or task.num_labeled, batch)
    if params.pretrain_max_steps > 0:
        per_epoch = min(per_epoch, params.pretrain_max_steps)
    optimisation = training.make_optimisation(
        [mode.backbone, *net.modules()],
        [*mode.trainable_parameters(), *net.parameters()],
        lr=params.pretrain_lr,
        total_steps=per_epoch * params.pretrain_epochs,
    )
    labeled_batches = training.cycling_batches(task.num_labeled, batch, rng)
    dev_acc: list[float] = []
    losses: list[dict[str, float]] = []
    best_acc, best_epoch, best_state = -1.0, -1, _snapshot(mode, net)
    with ctx.reporter.task("stage-1 epochs", total=params.pretrain_epochs) as advance:
        for epoch in range(params.pretrain_epochs):
            started = time.perf_counter()
            mode.train()
            net.train()
            order = unlabeled[rng.permutation(len(unlabeled))]
            sums = {"ce": 0.0, "supcon": 0.0}
            for step in range(per_epoch):
                lab = next(labeled_batches)
                unl = order[step * batch : (step + 1) * batch]
                loss = torch.zeros((), device=device)
                if len(lab):
                    _, _, logits = net.forward(mode.embed(lab, augment=False, generator=generator))
                    ce = F.cross_entropy(logits, labeled_y[lab])
                    loss = loss + ce
                    sums["ce"] += float(ce.detach())
                both = np.concatenate([lab, unl])
                # Two passes of the same texts: dropout makes them two views.
                _, proj_a, _ = net.forward(mode.embed(both, augment=False, generator=generator))
                _, proj_b, _ = net.forward(mode.embed(both, augment=False, generator=generator))
                labels = torch.cat(
                    [labeled_y[lab], torch.full((len(unl),), -1, device=device, dtype=torch.long)]
                )
                supcon = _supcon_at(
                    proj_a, proj_b, _known_label_mask(labels), params.pretrain_temperature
                )
                loss = loss + supcon
                sums["supcon"] += float(supcon.detach())
                _step(optimisation, loss, params.grad_clip)
            acc = _dev_accuracy(task, mode, net)
            dev_acc.append(round(acc, 4))
            losses.append(
                {
                    "epoch": epoch,
                    **{k: round(v / per_epoch, 5) for k, v in sums.items()},
                    "dev_acc": round(acc, 4),
                    "duration_s": round(time.perf_counter() - started, 3),
                }
            )
            advance(1)
            ctx.reporter.message(f"stage 1 epoch {epoch + 1}: {losses[-1]}")
            if acc > best_acc:
                best_acc, best_epoch, best_state = acc, epoch, _snapshot(mode, net)
            elif epoch - best_epoch >= params.pretrain_patience:
                break
    _restore(mode, net, best_state)
    mode.eval()
    net.train(False)
    return {
        "best_epoch": best_epoch,
        "best_dev_acc": round(best_acc, 4),
        "epochs": losses,
        "epochs_run": len(dev_acc),
        "steps_per_epoch": per_epoch,
        "optimizer_steps": optimisation.steps_taken,
    }


def _known_label_mask(labels: torch.Tensor) -> torch.Tensor:
    """Positives of stage 1: the text itself (its other view) and, for a labeled text, every
    labeled text of the same class; unlabeled texts (label -1) only themselves."""
    import torch

    same = (labels.unsqueeze(1) == labels.unsqueeze(0)) & (labels.unsqueeze(1) >= 0)
    return same | torch.eye(len(labels), dtype=torch.bool, device=labels.device)


def _supcon_at(
    proj_a: torch.Tensor, proj_b: torch.Tensor, positives: torch.Tensor, temperature: float
) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    features = torch.stack([F.normalize(proj_a, dim=-1), F.normalize(proj_b, dim=-1)], dim=1)
    # TEXTOIR's SupConLoss has no τ/τ_base factor: base_temperature = temperature drops it.
    return training.supcon_loss(
        features, positives, temperature=temperature, base_temperature=temperature
    )


def _dev_accuracy(task: GCDTask, mode: training.TrainingMode, net: _Net) -> float:
    import torch

    if len(task.dev) == 0 or task.num_known == 0:
        return 0.0
    mode.eval()
    net.train(False)
    device = net.dense.weight.device
    with torch.no_grad():
        pooled = torch.as_tensor(mode.encode_texts(task.dev.texts), device=device).float()
        predicted = net.forward(pooled)[2].argmax(1).cpu().numpy()
    return float((predicted == np.asarray(task.dev_y)).mean())


def _snapshot(mode: training.TrainingMode, net: _Net) -> list[torch.Tensor]:
    return [p.detach().clone() for p in [*mode.trainable_parameters(), *net.parameters()]]


def _restore(mode: training.TrainingMode, net: _Net, state: list[torch.Tensor]) -> None:
    import torch

    with torch.no_grad():
        current = [*mode.trainable_parameters(), *net.parameters()]
        for p, saved in zip(current, state, strict=True):
            p.copy_(saved)


def _step(optimisation: training.Optimisation, loss: torch.Tensor, clip_value: float) -> None:
    """Backward, clip by value (the official code's rule, not the engine's norm clip), step,
    schedule."""
    import torch

    optimisation.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_value > 0:
        torch.nn.utils.clip_grad_value_(optimisation.parameters, clip_value)
    optimisation.optimizer.step()
    optimisation.scheduler.step()
    optimisation.steps_taken += 1


# -- stage 2: centroid-guided clustering (usnid.md §1.4) ---------------------------------------


class _Stage2:
    def __init__(
        self,
        task: GCDTask,
        ctx: RunContext,
        mode: training.TrainingMode,
        net: _Net,
        params: USNIDParams,
        enabled: Callable[[str], bool],
    ) -> None:
        import torch

        self.task, self.ctx, self.mode, self.net, self.params = task, ctx, mode, net, params
        self.device = mode.backbone.device
        net.to(self.device)
        self.rng = ctx.rng("usnid-train")
        self.generator = training.generator_for(self.rng, self.device)
        self.temperature = _stage2_temperature(params, task.dataset)
        self.labeled_y = torch.as_tensor(task.labeled_y, dtype=torch.long, device=self.device)
        self.use_labeled = enabled("labeled-supcon") and task.num_labeled > 0
        self.use_ce = enabled("pseudo-ce")
        self.use_con = enabled("pseudo-supcon")
        self.centroids: np.ndarray | None = None
        batch = params.batch_size
        pool = len(task.train)
        self.pool_steps = training.steps_per_epoch(pool, batch)
        if params.max_steps_per_epoch > 0:
            self.pool_steps = min(self.pool_steps, params.max_steps_per_epoch)
        self.labeled_steps = training.steps_per_epoch(task.num_labeled, batch)
        trainable = [*mode.trainable_parameters(), *net.parameters()]
        modules = [mode.backbone, *net.modules()]
        lr = _stage2_lr(params, task.dataset)
        # Two optimisers over the same weights, as in the official code: one for the
        # labeled SupCon steps, one for the pseudo-label epochs.
        self.labeled_opt = training.make_optimisation(
            modules, trainable, lr=lr, total_steps=self.labeled_steps * params.epochs
        )
        self.pool_opt = training.make_optimisation(
            modules, trainable, lr=lr, total_steps=self.pool_steps * params.epochs
        )

    def run(self) -> dict[str, Any]:
        params, task = self.params, self.task
        epochs: list[dict[str, Any]] = []
        previous: np.ndarray | None = None
        stopped = "max epochs"
        with self.ctx.reporter.task("stage-2 epochs", total=params.epochs) as advance:
            for epoch in range(params.epochs):
                started = time.perf_counter()
                record: dict[str, Any] = {"epoch": epoch}
                if self.use_labeled:
                    record["labeled_supcon"] = self._labeled_epoch()
                labels = self._cluster()
                record["kmeans_init"] = "k-means++" if epoch == 0 else "previous centroids"
                if previous is not None:
                    delta = float((labels != previous).mean())
                    record["changed"] = round(delta, 5)
                    if delta < params.tol:
                        stopped = f"tol at epoch {epoch}"
                        record["duration_s"] = round(time.perf_counter() - started, 3)
                        epochs.append(record)
                        advance(1)
                        break
                previous = labels
                if self.use_ce or self.use_con:
                    record.update(self._pseudo_epoch(labels))
                record["duration_s"] = round(time.perf_counter() - started, 3)
                epochs.append(record)
                self.ctx.reporter.message(f"stage 2 epoch {epoch + 1}: {record}")
                advance(1)
        self.mode.eval()
        self.net.train(False)
        sizes = (
            np.bincount(previous, minlength=task.num_classes)
            if previous is not None
            else np.zeros(0, dtype=np.int64)
        )
        return {
            "epochs": epochs,
            "epochs_run": len(epochs),
            "stopped": stopped,
            "pool_steps_per_epoch": self.pool_steps,
            "labeled_steps_per_epoch": self.labeled_steps if self.use_labeled else 0,
            "temperature": self.temperature,
            "last_cluster_sizes": (
                {"min": int(np.min(sizes)), "max": int(np.max(sizes))} if len(sizes) else {}
            ),
        }

    def _labeled_epoch(self) -> float:
        """One pass over the labeled texts: SupCon with gold labels on two dropout views."""
        self.mode.train()
        self.net.train()
        order = self.rng.permutation(self.task.num_labeled)
        total = 0.0
        for idx in _chunks(order, self.params.batch_size):
            _, proj_a, _ = self.net.forward(self._view(idx, erase=False))
            _, proj_b, _ = self.net.forward(self._view(idx, erase=False))
            y = self.labeled_y[idx]
            positives = y.unsqueeze(1) == y.unsqueeze(0)
            loss = _supcon_at(proj_a, proj_b, positives, self.temperature)
            # The official labeled step clips nothing.
            _step(self.labeled_opt, loss, 0.0)
            total += float(loss.detach())
        return round(total / max(1, math.ceil(self.task.num_labeled / self.params.batch_size)), 5)

    def _cluster(self) -> np.ndarray:
        """K-means of the pool's z: k-means++ the first time, then from the last centroids."""
        features = _maybe_normalise(self.net.features(self.mode.extract()), self.params.normalize)
        fit = _kmeans(
            features,
            self.task.num_classes,
            self.ctx.seed,
            init=self.centroids,
            n_init=self.params.kmeans_n_init,
        )
        self.centroids = fit.centers
        return fit.labels

    def _pseudo_epoch(self, pseudo: np.ndarray) -> dict[str, float]:
        import torch
        import torch.nn.functional as F

        self.mode.train()
        self.net.train()
        targets = torch.as_tensor(pseudo, dtype=torch.long, device=self.device)
        order = self.rng.permutation(len(self.task.train))
        sums = {"ce": 0.0, "supcon": 0.0}
        batch = self.params.batch_size
        for step in range(self.pool_steps):
            idx = order[step * batch : (step + 1) * batch]
            _, proj_a, logits_a = self.net.forward(self._view(idx, erase=True))
            _, proj_b, logits_b = self.net.forward(self._view(idx, erase=True))
            y = targets[idx]
            loss = torch.zeros((), device=self.device)
            if self.use_ce:
                ce = 0.5 * (F.cross_entropy(logits_a, y) + F.cross_entropy(logits_b, y))
                loss = loss + ce
                sums["ce"] += float(ce.detach())
            if self.use_con:
                con = _supcon_at(proj_a, proj_b, y.unsqueeze(1) == y.unsqueeze(0), self.temperature)
                loss = loss + con
                sums["supcon"] += float(con.detach())
            _step(self.pool_opt, loss, self.params.grad_clip)
        return {f"pseudo_{k}": round(v / self.pool_steps, 5) for k, v in sums.items()}

    def _view(self, idx: np.ndarray, *, erase: bool) -> torch.Tensor:
        """Pooled features with grad: plain (dropout is the only noise) or a token-erasure
        view; cached modes cannot delete tokens below their cut and use their own
        augmented view instead (usnid.md §6)."""
        if not erase:
            return self.mode.embed(idx, augment=False, generator=self.generator)
        if self.mode.name != "full":
            return self.mode.embed(idx, augment=True, generator=self.generator)
        ids, mask, special = self.mode.batch(idx)
        pad = self.mode.backbone.tokenizer.pad_token_id or 0
        ids, mask = erase_tokens(ids, mask, special, self.params.erase_prob, self.generator, pad)
        ids, mask = self.mode.to_device(ids, mask)
        with self.mode.autocast(), self.mode.dropout_rng(self.generator):
            return self.mode.backbone(ids, mask).float()


def erase_tokens(
    ids: torch.Tensor,
    mask: torch.Tensor,
    special: torch.Tensor,
    prob: float,
    generator: torch.Generator,
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """USNID's random token erasure: delete ``floor(prob · n)`` of each text's n ordinary
    (non-special, non-pad) tokens, chosen uniformly without replacement, shift the rest left
    and pad; returns new (ids, attention mask), trimmed to the longest result."""
    import torch

    eligible = mask.bool() & ~special.bool()
    counts = eligible.sum(1)
    # float64, as Python's int(n * p) in the official code (0.4 · 15 = 6.000000000000001 -> 6)
    erase_n = torch.floor(counts.to(torch.float64) * prob).to(torch.long)
    draws = torch.rand(ids.shape, generator=generator, device=generator.device).to(ids.device)
    draws = draws.masked_fill(~eligible, 2.0)  # never among the smallest
    rank = draws.argsort(dim=1).argsort(dim=1)
    keep = mask.bool() & ~(eligible & (rank < erase_n.unsqueeze(1)))
    # A stable sort on "dropped" moves the kept tokens left in their original order.
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    new_mask = keep.gather(1, order)
    new_ids = ids.gather(1, order).masked_fill(~new_mask, pad_id)
    width = max(int(new_mask.sum(1).max()), 1) if len(ids) else 1
    return new_ids[:, :width], new_mask[:, :width].to(mask.dtype)


def _chunks(order: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(order), size):
        yield order[start : start + size]


# -- clustering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    labels: np.ndarray
    centers: np.ndarray


def _kmeans(
    features: np.ndarray, k: int, seed: int, *, init: np.ndarray | None, n_init: int = 10
) -> _Fit:
    """k-means++ with ``n_init`` restarts, or one run started from ``init`` (the centroid
    alignment USNID uses instead of a Hungarian match); random_state = the run seed."""
    from sklearn.cluster import KMeans

    if init is None:
        model = KMeans(n_clusters=k, init="k-means++", n_init=n_init, random_state=seed)
    else:
        model = KMeans(n_clusters=k, init=init.astype(features.dtype), n_init=1, random_state=seed)
    model.fit(features)
    return _Fit(model.labels_.astype(np.int64), model.cluster_centers_)


def _maybe_normalise(features: np.ndarray, normalize: bool) -> np.ndarray:
    return training.l2_normalise(features) if normalize else features


# -- resolved values and what the record says ------------------------------------------------


def _stage2_temperature(params: USNIDParams, dataset: str) -> float:
    if params.temperature > 0:
        return params.temperature
    return OFFICIAL_TEMPERATURE.get(dataset, DEFAULT_TEMPERATURE)


def _stage2_lr(params: USNIDParams, dataset: str) -> float:
    return params.lr if params.lr > 0 else OFFICIAL_LR.get(dataset, DEFAULT_LR)


def _cuts(params: USNIDParams) -> list[str]:
    """Every setting below the paper's, in words (empty for the paper preset)."""
    out = []
    for name, text in _CUT_TEXT.items():
        value = getattr(params, name)
        if value != _PAPER[name]:
            out.append(text.format(v=value))
    return out


def _departures(params: USNIDParams, stage2_mode: str) -> list[str]:
    out = [
        "mean pooling over real tokens (attention-masked); the official code averages "
        "padding positions too",
        "AdamW with bias correction (torch); the official code uses correct_bias=False",
        "learning-rate schedules sized by the steps that can run (capped epochs × steps)",
        "stage-1 early stopping counts every epoch without a better dev accuracy (the "
        "official code skips epochs whose accuracy is 0)",
    ]
    if stage2_mode == "full":
        out.append(
            f"token erasure per batch ({params.erase_prob:g} of ordinary tokens); the official "
            "code draws both views once per epoch and gives view b view a's mask (same length)"
        )
    else:
        out.append(
            f"stage 2 in mode {stage2_mode}: the two pseudo-label views are the mode's "
            "augmented view (token erasure cannot run below a cached cut), not token erasure"
        )
    if params.variant == "paper":
        out.append("heads read dropout(tanh(z)); the official code discards the tanh")
    else:
        out.append("variant official: heads read dropout(z), the released code's linear path")
    if params.normalize:
        out.append("features L2-normalised before every K-means (the official code: raw z)")
    return out


@hookimpl
def register_methods(register: Any) -> None:
    register(USNID)
