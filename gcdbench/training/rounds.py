"""The round loop shared by ``no-llm``, GLEAN and Loop (docs/methods/glean.md §3).

Every ``update_per_epoch`` epochs a round begins: pool features are extracted, clustered
(:func:`gcdbench.training.mining.cluster_state`, K = number of classes, k neighbours) and the
**round hook** is called once with the whole round's state. It may return a
:class:`RoundPlan` — positive overrides, alignment targets, cluster descriptions — which the
next ``update_per_epoch`` epochs train with. Nothing in here talks to an LLM: a method that
wants feedback asks for it, for the whole round at once, inside its hook.

Per step: B pool samples (shuffled by an explicit generator); each one's positive is the
plan's override or a uniformly random member of its top-(k+1) list (itself included, as in
the official code), re-drawn every epoch (§3.2); both get an augmented view, go through the
projection head, and the NCL term contrasts them under the kNN/label adjacency. CE runs on a
separate labeled batch through a classifier on the head's output; ``align`` runs when the
plan gives targets. The total is Σ weight · hook over the terms the method's ``losses``
parameter names, each hook built from the loss registry
(:mod:`gcdbench.training.loss_terms`): a step computes only the inputs those terms read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gcdbench import registry
from gcdbench.api.loss import LossHook
from gcdbench.api.miner import ClusterState
from gcdbench.api.progress import Reporter
from gcdbench.api.task import GCDTask
from gcdbench.api.toolkit import l2_normalise
from gcdbench.errors import GcdbenchError
from gcdbench.training.checkpoint import (
    ResumableBatches,
    RoundCheckpoints,
    RoundParts,
    RoundProgress,
)
from gcdbench.training.heads import KnownClassifier, ProjectionHead
from gcdbench.training.loss_terms import DEFAULT_LOSSES, LossTerm, resolve_terms
from gcdbench.training.losses import neighbour_adjacency, weighted_sum
from gcdbench.training.mining import cluster_state
from gcdbench.training.mode_base import TrainingMode
from gcdbench.training.optim import make_optimisation, steps_per_epoch
from gcdbench.training.params import RoundParams
from gcdbench.training.plan import RoundHook, RoundPlan
from gcdbench.training.seeding import generator_for


@dataclass
class LoopResult:
    head: ProjectionHead
    rounds: list[dict[str, Any]]
    last_state: ClusterState | None


def run_rounds(
    task: GCDTask,
    mode: TrainingMode,
    params: RoundParams,
    *,
    k: int,
    seed: int,
    rng: np.random.Generator,
    hook: RoundHook | None = None,
    ce: bool = True,
    align_weight: float | None = None,
    reporter: Reporter | None = None,
    checkpoints: RoundCheckpoints | None = None,
) -> LoopResult:
    """Train ``mode``'s trainable part (plus a new head and classifier) for ``params.epochs``
    epochs, re-clustering every ``params.update_per_epoch`` epochs.

    The loss is the sum of ``params.losses`` (``"ncl,ce"`` when the params have no such
    field); ``ce=False`` leaves ``ce`` out and ``align_weight`` sets the weight of
    ``align``, adding it when ``losses`` does not list it (see
    :func:`gcdbench.training.loss_terms.resolve_terms`).

    With ``checkpoints`` the loop saves itself after every round and, when a checkpoint of
    this loop exists, continues from it: the result is the uninterrupted one
    (:mod:`gcdbench.training.checkpoint`).
    """
    reporter = reporter or Reporter()
    all_terms = resolve_terms(
        getattr(params, "losses", DEFAULT_LOSSES), params, ce=ce, align_weight=align_weight
    )
    hooks = {term.name: _build_hook(term.name, params) for term in all_terms}
    backbone = mode.backbone
    device = backbone.device
    pool_size = len(task.train)
    head = ProjectionHead(backbone.hidden_size, params.feat_dim).to(device)
    classes = task.num_classes if params.classifier == "all" else task.num_known
    classifier = KnownClassifier(params.feat_dim, classes).to(device)
    per_epoch = steps_per_epoch(pool_size, params.batch_size)
    if params.max_steps_per_epoch > 0:
        per_epoch = min(per_epoch, params.max_steps_per_epoch)
    optimisation = make_optimisation(
        [backbone, head, classifier],
        [*mode.trainable_parameters(), *head.parameters(), *classifier.parameters()],
        lr=params.lr,
        total_steps=per_epoch * params.epochs,
    )
    generator = generator_for(rng, device)
    labeled_y = torch.as_tensor(task.labeled_y, dtype=torch.long)
    # The official code sizes the labeled CE batches with the pre-training batch size (§11.20).
    labeled_batches = ResumableBatches(task.num_labeled, params.pretrain_batch_size, rng)
    n_rounds = math.ceil(params.epochs / params.update_per_epoch)
    parts = RoundParts(
        mode, head, classifier, optimisation, rng, generator, labeled_batches, hooks, hook
    )
    progress = (checkpoints.restore(parts, n_rounds) if checkpoints else None) or RoundProgress(
        [], None, 0
    )
    rounds, state = progress.rounds, progress.state
    plan = RoundPlan()
    # The open round's progress stages ("round i/n: train" and its steps) close when the
    # next round begins, or when the loop ends.
    with ExitStack() as round_scope:
        for epoch in range(progress.next_epoch, params.epochs):
            if epoch % params.update_per_epoch == 0:
                round_scope.close()
                round_scope.enter_context(reporter.stage(f"round {len(rounds) + 1}/{n_rounds}"))
                state, plan, stats = _begin_round(
                    task, mode, params, k, seed, len(rounds), hook, reporter
                )
                rounds.append(stats)
                neighbour_lists = torch.as_tensor(state.neighbours, dtype=torch.long)
                # A round whose feedback gave no usable category answer (all filtered, or no
                # anchors) has nothing to align: leave those terms out rather than feed them
                # nothing.
                active = _active_terms(all_terms, aligned=bool(plan.align_targets))
                if not active:
                    raise GcdbenchError(
                        f"round {len(rounds)}: every loss in {[t.name for t in all_terms]} reads "
                        "alignment inputs, which this round's plan does not give; add a term "
                        "every round has, e.g. -p losses=ncl,align."
                    )
                terms = [(hooks[term.name], term.weight) for term in active]
                classify = any(term.needs_classifier for term in active)
                align = any(term.needs_alignment for term in active)
                steps = per_epoch * min(params.update_per_epoch, params.epochs - epoch)
                round_scope.enter_context(reporter.stage("train"))
                advance = round_scope.enter_context(reporter.task("steps", total=steps))
            assert state is not None
            started = time.perf_counter()
            positives = _draw_positives(state.neighbours, plan.positives, rng)
            order = rng.permutation(pool_size)
            sums: dict[str, float] = {}
            mode.train()
            head.train()
            classifier.train()
            for step in range(per_epoch):
                idx = order[step * params.batch_size : (step + 1) * params.batch_size]
                anchor = mode.embed(idx, augment=True, generator=generator)
                positive = mode.embed(positives[idx], augment=True, generator=generator)
                features = torch.stack([head.normalised(anchor), head.normalised(positive)], dim=1)
                batch: dict[str, Any] = {
                    "adjacency": neighbour_adjacency(
                        torch.as_tensor(idx), neighbour_lists, task.num_labeled, labeled_y
                    ).to(device)
                }
                outputs: dict[str, Any] = {"features": features}
                if classify and task.num_labeled:
                    lab = next(labeled_batches)
                    pooled = mode.embed(lab, augment=False, generator=generator)
                    outputs["logits"] = classifier(head(pooled))
                    batch["labels"] = labeled_y[lab].to(device)
                if align:
                    _fill_alignment(
                        batch, outputs, plan, idx, features[:, 0], mode, head, generator
                    )
                total, values = weighted_sum(terms, batch, outputs)
                optimisation.step(total)
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
                advance(1)
            rounds[-1]["epochs"].append(
                {
                    "epoch": epoch,
                    "steps": per_epoch,
                    "loss": {name: round(v / per_epoch, 5) for name, v in sums.items()},
                    "lr_end": optimisation.learning_rate,
                    "duration_s": round(time.perf_counter() - started, 3),
                }
            )
            reporter.message(
                f"epoch {epoch + 1}/{params.epochs}: {rounds[-1]['epochs'][-1]['loss']}"
            )
            if checkpoints is not None and _round_ends(epoch, params):
                checkpoints.save(parts, RoundProgress(rounds, state, epoch + 1))
    if checkpoints is not None:
        checkpoints.finish(epochs_trained=params.epochs - progress.next_epoch)
    mode.eval()
    return LoopResult(head.eval(), rounds, state)


def _round_ends(epoch: int, params: RoundParams) -> bool:
    """Whether ``epoch`` is the last of its round (the next one re-clusters, or none is left)."""
    return (epoch + 1) % params.update_per_epoch == 0 or epoch + 1 == params.epochs


def _begin_round(
    task: GCDTask,
    mode: TrainingMode,
    params: RoundParams,
    k: int,
    seed: int,
    index: int,
    hook: RoundHook | None,
    reporter: Reporter,
) -> tuple[ClusterState, RoundPlan, dict[str, Any]]:
    clock = time.perf_counter()
    with reporter.stage("mine"):
        features = mode.extract()
        if params.normalize:
            features = l2_normalise(features)
        extracted = time.perf_counter()
        state = cluster_state(
            features,
            task.num_classes,
            k,
            seed,
            params.variant,
            kmeans_n_init=params.round_kmeans_n_init,
            num_labeled=task.num_labeled,
        )
    clustered = time.perf_counter()
    with reporter.stage("ask") if hook else nullcontext():
        plan = (hook(state, index, task.train.texts) if hook else None) or RoundPlan()
    _check_plan(plan, len(task.train), task.num_classes)
    done = time.perf_counter()
    sizes = np.bincount(state.assignments, minlength=task.num_classes)
    stats = {
        "round": index,
        "positives_overridden": len(plan.positives),
        "align_targets": len(plan.align_targets),
        "cluster_sizes": {"min": int(sizes.min()), "max": int(sizes.max())},
        "durations_s": {
            "extract": round(extracted - clock, 3),
            "cluster": round(clustered - extracted, 3),
            "hook": round(done - clustered, 3),
        },
        "plan": dict(plan.info),
        "epochs": [],
    }
    return state, plan, stats


def _check_plan(plan: RoundPlan, pool_size: int, num_clusters: int) -> None:
    for anchor, positive in plan.positives.items():
        if not (0 <= anchor < pool_size and 0 <= positive < pool_size):
            raise GcdbenchError(
                f"round hook returned positive {anchor}->{positive} outside the pool of "
                f"{pool_size}; return pool indices."
            )
    if plan.align_targets and len(plan.descriptions) != num_clusters:
        raise GcdbenchError(
            f"round hook gave alignment targets with {len(plan.descriptions)} descriptions; "
            f"give one per cluster ({num_clusters})."
        )


def _draw_positives(
    neighbours: np.ndarray, overrides: Mapping[int, int], rng: np.random.Generator
) -> np.ndarray:
    """One positive per pool sample: the override, else a uniform pick from itself + its kNN."""
    n, k = neighbours.shape
    choice = rng.integers(0, k + 1, size=n)
    candidates = np.concatenate([np.arange(n)[:, None], neighbours], axis=1)
    positives = candidates[np.arange(n), choice]
    for anchor, positive in overrides.items():
        positives[anchor] = positive
    return positives


def _build_hook(name: str, params: RoundParams) -> LossHook:
    """The registered loss ``name``, configured from the method's params."""
    hook_class = registry.get("loss", name)
    from_params = getattr(hook_class, "from_params", None)
    hook = from_params(params) if from_params is not None else hook_class()
    if not callable(hook):
        raise GcdbenchError(
            f"loss {name!r} built a {type(hook).__name__}, which cannot be called; register a "
            "gcdbench.api.LossHook subclass."
        )
    return hook


def _active_terms(terms: Sequence[LossTerm], *, aligned: bool) -> list[LossTerm]:
    """The terms a round trains with: those reading alignment inputs only when the round's
    plan gives alignment targets."""
    return [term for term in terms if aligned or not term.needs_alignment]


def _fill_alignment(
    batch: dict[str, Any],
    outputs: dict[str, Any],
    plan: RoundPlan,
    idx: np.ndarray,
    anchor_features: torch.Tensor,
    mode: TrainingMode,
    head: ProjectionHead,
    generator: torch.Generator,
) -> None:
    """Alignment inputs for this batch. The descriptions are re-encoded at every step with
    grad through the trainable part of the backbone and the head (docs/methods/glean.md §5.3):
    all K, or only those offered to the batch's anchors (``RoundPlan.encode_offered_only``)."""
    device = anchor_features.device
    num = len(plan.descriptions)
    targets = torch.full((len(idx),), -1, dtype=torch.long)
    candidates = torch.zeros((len(idx), num), dtype=torch.bool)
    for row, anchor in enumerate(idx.tolist()):
        if anchor in plan.align_targets:
            targets[row] = plan.align_targets[anchor]
            candidates[row, list(plan.align_candidates.get(anchor, range(num)))] = True
    batch["align_targets"] = targets.to(device)
    batch["align_candidates"] = candidates.to(device)
    outputs["anchor_features"] = anchor_features
    if not bool((targets >= 0).any()):
        # No anchor of this batch has a target: skip encoding K descriptions for nothing.
        outputs["description_features"] = torch.zeros(
            (num, anchor_features.shape[1]), device=device
        )
        return
    if not plan.encode_offered_only:
        described = mode.embed_texts(list(plan.descriptions), generator=generator)
        outputs["description_features"] = head.normalised(described)
        return
    # Rows the loss masks out stay zero: only the offered descriptions carry a graph.
    offered = torch.nonzero(candidates[targets >= 0].any(dim=0)).squeeze(1)
    texts = [plan.descriptions[i] for i in offered.tolist()]
    encoded = head.normalised(mode.embed_texts(texts, generator=generator))
    features = torch.zeros((num, encoded.shape[1]), dtype=encoded.dtype, device=device)
    outputs["description_features"] = features.index_copy(0, offered.to(device), encoded)
