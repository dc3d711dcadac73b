"""``mtp``: MTP pre-training (CE on labeled texts + MLM on the pool, glean-spec §2.1), then
K-means on the trained backbone's features of the test split.

Also home of the setup every training method shares: load the run's ``--encoder`` as a
trainable backbone, pre-train it (or take the cached result) and build the training mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from gcdbench import hookimpl
from gcdbench.api import GCDTask, Method, MethodOutput
from gcdbench.errors import GcdbenchError
from gcdbench.runner.context import RunContext
from gcdbench.training.backbone import TextBackbone
from gcdbench.training.modes import TrainingMode, make_mode
from gcdbench.training.presets import (
    PretrainParams,
    backbone_ref,
    check_params,
    isolated_torch_rng,
    l2_normalise,
    presets_for,
    torch_seed,
)
from gcdbench.training.pretrain import pretrain


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
    ref = backbone_ref(ctx.spec.encoder, method)
    wants_mlm = with_mtp and params.pretrain_mlm and params.mode != "head"
    with ctx.timed("load_backbone"):
        backbone = TextBackbone.from_ref(
            ref, pooling=params.pooling, with_mlm_head=wants_mlm, max_length=params.max_length
        )
    diagnostics: dict[str, Any] = {"backbone": backbone.source}
    mode: TrainingMode | None = None
    if with_mtp:
        with ctx.timed("pretrain"):
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
    if mode is None:
        with ctx.timed("prepare_mode"):
            mode = make_mode(
                params.mode,
                backbone,
                task.train.texts,
                precision=params.precision,
                reporter=ctx.reporter,
                seed=torch_seed(ctx.rng("mode")),
            )
    diagnostics.update(mode.describe())
    diagnostics["deviations"] = list(backbone.deviations)
    return TrainingSetup(backbone, mode, diagnostics)


def cluster_test(
    features: np.ndarray, num_classes: int, seed: int, *, normalize: bool = False
) -> np.ndarray:
    """K-means with the true K, n_init pinned, random_state = the run seed (glean-spec §7)."""
    if normalize:
        features = l2_normalise(features)
    model = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit(features)
    return model.labels_.astype(np.int64)


class MTP(Method):
    name = "mtp"
    description = (
        "MTP pre-training of the --encoder (CE on labeled texts + MLM on the pool, dev early "
        "stopping; cached and shared across methods), then K-means on test features. "
        "Defaults = the cpu preset; presets: cpu, paper (GPU), smoke"
    )
    version = "1"
    uses = ("encoder",)
    Params = PretrainParams
    presets = presets_for(PretrainParams)

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        params: PretrainParams = self.params
        if params.mode == "head":
            raise GcdbenchError(
                "method 'mtp' with mode=head trains nothing (the backbone is frozen and the "
                "classifier is discarded); pass -p mode=top-2 or -p mode=full."
            )
        with isolated_torch_rng(ctx.rng("torch")):
            setup = prepare_training(task, ctx, params, self.name)
            with ctx.timed("encode_test"):
                features = setup.mode.encode_texts(task.test.texts)
        with ctx.timed("kmeans"):
            assignments = cluster_test(
                features, task.num_classes, ctx.seed, normalize=params.normalize
            )
        return MethodOutput(
            test_assignments=assignments, diagnostics={"training": setup.diagnostics}
        )


@hookimpl
def register_methods(register):
    register(MTP)
