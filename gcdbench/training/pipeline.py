"""What every training method shares, start to end: load the run's ``--encoder`` as a
trainable backbone, MTP-pre-train it (or take the cached result), build the training mode;
after the rounds, features of the test split and K-means with the true K (docs/methods/glean.md §7).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gcdbench.api.task import GCDTask
from gcdbench.api.toolkit import kmeans
from gcdbench.training.backbone import TextBackbone
from gcdbench.training.checkpoint import round_checkpoints, rounds_inputs
from gcdbench.training.heads import ProjectionHead
from gcdbench.training.mode_base import TrainingMode
from gcdbench.training.modes import make_mode
from gcdbench.training.params import PretrainParams, RoundParams, check_params, resolve_topk
from gcdbench.training.plan import RoundHook
from gcdbench.training.pretrain import pretrain
from gcdbench.training.rounds import LoopResult, run_rounds
from gcdbench.training.seeding import isolated_torch_rng, torch_seed

if TYPE_CHECKING:  # the protocol the runner implements; the engine never imports the runner
    from gcdbench.api.context import RunContext


@dataclass
class TrainingSetup:
    backbone: TextBackbone
    mode: TrainingMode
    diagnostics: dict[str, Any] = field(default_factory=dict)


def prepare_training(
    task: GCDTask, ctx: RunContext, params: PretrainParams, method: str, *, with_mtp: bool = True
) -> TrainingSetup:
    """The backbone the run's ``--encoder`` names, MTP-pre-trained unless ``with_mtp`` is
    off, and the training mode over the pool. Call inside :func:`isolated_torch_rng`."""
    check_params(params, method)
    wants_mlm = with_mtp and params.pretrain_mlm and params.mode != "head"
    with ctx.timed("load_backbone"):
        # The run's --encoder, whatever form it takes; the context records what it loaded.
        backbone = ctx.load_backbone(
            pooling=params.pooling, with_mlm_head=wants_mlm, max_length=params.max_length
        )
    diagnostics: dict[str, Any] = {"backbone": backbone.source}
    mode: TrainingMode | None = None
    if with_mtp:
        with ctx.timed("pretrain"), ctx.reporter.stage("pre-train"):
            outcome = pretrain(
                task,
                backbone,
                params,
                seed=ctx.seed,
                rng=ctx.rng("pretrain"),
                reporter=ctx.reporter,
            )
        backbone, mode = outcome.backbone, outcome.mode
        diagnostics["pretrain"] = outcome.describe()
    else:
        diagnostics["pretrain"] = {"skipped": "ablated"}
    # One seed for the mode whether pre-training just ran (its mode, caches still valid) or
    # came from the cache (a fresh mode): a cache hit must never change a result.
    mode_seed = torch_seed(ctx.rng("mode"))
    if mode is None:
        with ctx.timed("prepare_mode"):
            mode = make_mode(
                params.mode,
                backbone,
                task.train.texts,
                precision=params.precision,
                reporter=ctx.reporter,
                seed=mode_seed,
            )
    else:
        mode.reseed(mode_seed)
    diagnostics.update(mode.describe())
    diagnostics["deviations"] = list(backbone.deviations)
    return TrainingSetup(backbone, mode, diagnostics)


def cluster_test(
    features: np.ndarray, num_classes: int, seed: int, *, normalize: bool = False
) -> np.ndarray:
    """K-means with the true K, n_init pinned, random_state = the run seed (§7)."""
    return kmeans(features, num_classes, seed, n_init=10, normalize=normalize)


def test_features(
    setup: TrainingSetup, texts: list[str], head: ProjectionHead | None = None
) -> np.ndarray:
    """Features the final K-means clusters: the backbone's, or in ``head`` mode (the frozen
    backbone's features never change) the L2-normalised projection-head output."""
    with torch.no_grad():
        features = setup.mode.encode_texts(texts)
        if setup.mode.name == "head" and head is not None:
            device = setup.backbone.device
            projected = head.normalised(torch.as_tensor(features, device=device))
            features = projected.float().cpu().numpy()
    return features


HEAD_MODE_DEVIATION = (
    "head mode: test features are the L2-normalised projection-head output, "
    "since the frozen backbone's own features never change"
)


@dataclass
class TrainedRun:
    """A training method's result: the trained setup, the round log, the test features
    and their K-means clusters, and the ``training`` diagnostics."""

    setup: TrainingSetup
    rounds: LoopResult
    features: np.ndarray
    assignments: np.ndarray
    training: dict[str, Any]


def train_and_cluster(
    task: GCDTask,
    ctx: RunContext,
    params: RoundParams,
    method: str,
    *,
    hook: RoundHook | None = None,
    ce: bool = True,
    align_weight: float | None = None,
    with_mtp: bool = True,
) -> TrainedRun:
    """Pre-train, run the rounds (with ``hook`` asking feedback, if any), then K-means on the
    test features — the whole of ``no-llm``, and everything GLEAN and Loop do besides asking.

    The rounds sum ``params.losses``; ``ce`` and ``align_weight`` are passed on to
    :func:`gcdbench.training.rounds.run_rounds` (``ce=False`` drops ``ce``, ``align_weight``
    weighs ``align`` and adds it when ``losses`` does not list it)."""
    k = resolve_topk(params.k, task.dataset, len(task.train))
    with isolated_torch_rng(ctx.rng("torch")):
        setup = prepare_training(task, ctx, params, method, with_mtp=with_mtp)
    # After every round, when the run keeps checkpoints (docs/resume.md).
    checkpoints = round_checkpoints(
        ctx, hook, rounds_inputs(task, params, method, k=k, ce=ce, align_weight=align_weight)
    )
    # The rounds get torch's global generator (head and classifier initialisation, dropout)
    # seeded from their own stage: pre-training draws from it on a cache miss and not on a
    # hit, and neither may shift what the rounds draw.
    with isolated_torch_rng(ctx.rng("rounds-torch")):
        with ctx.timed("rounds"):
            result = run_rounds(
                task,
                setup.mode,
                params,
                k=k,
                seed=ctx.seed,
                rng=ctx.rng("rounds"),
                hook=hook,
                ce=ce,
                align_weight=align_weight,
                reporter=ctx.reporter,
                checkpoints=checkpoints,
            )
        with ctx.timed("encode_test"), ctx.reporter.stage("encode test"):
            features = test_features(setup, task.test.texts, result.head)
    with ctx.timed("kmeans"):
        assignments = cluster_test(features, task.num_classes, ctx.seed, normalize=params.normalize)
    training = {**setup.diagnostics, "k": k}
    if params.mode == "head":
        training["deviations"] = [*training["deviations"], HEAD_MODE_DEVIATION]
    return TrainedRun(setup, result, features, assignments, training)
