"""The training engine as a method plugin sees it: parameters and presets, the round loop's
plan, and the engine entry points (pre-training, the rounds, the final K-means, the
candidate and mining helpers GLEAN and Loop build their questions from).

Importing this module is cheap: the parameters, presets, constants and :class:`RoundPlan`
are torch-free and bound at import, while every engine function and class is looked up on
first use (a module ``__getattr__``), which is when torch, transformers and scikit-learn
load. So a method module writes, at its top::

    from gcdbench.api import training

    @dataclass(frozen=True)
    class MyParams(training.RoundParams):
        ...

and calls ``training.train_and_cluster(task, ctx, self.params, self.name)`` inside
``run()``. ``gcdbench list methods`` and ``gcdbench plugins`` then never load torch.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any

from gcdbench.api.toolkit import l2_normalise
from gcdbench.training.loss_terms import (
    DEFAULT_LOSSES,
    ROUND_BATCH_KEYS,
    ROUND_OUTPUT_KEYS,
    LossChoice,
    parse_losses,
)
from gcdbench.training.params import (
    CLASSIFIERS,
    DEFAULT_TOPK,
    MODE_PATTERN,
    MODES_HINT,
    PAPER_TOPK,
    POOLINGS,
    PRECISIONS,
    VARIANTS,
    PretrainParams,
    RoundParams,
    check_params,
    presets_for,
    resolve_topk,
)
from gcdbench.training.plan import RoundHook, RoundPlan

if TYPE_CHECKING:  # the real types for type checkers; at run time __getattr__ binds them
    from gcdbench.training.calibration import (
        CalibrationQuestion,
        CalibrationSet,
        calibration_questions,
    )
    from gcdbench.training.candidates import (
        NO_QUERY,
        category_candidates,
        cluster_centers,
        cluster_choice,
        cluster_members,
        cluster_similarities,
        encoder_choice,
        encoder_similarities,
        instance_candidates,
        loop_candidates,
        representatives,
    )
    from gcdbench.training.checkpoint import round_checkpoints, rounds_inputs
    from gcdbench.training.fusion import coefficients, fit_fusion, fused_choices
    from gcdbench.training.heads import KnownClassifier, ProjectionHead
    from gcdbench.training.losses import (
        alignment_loss,
        cross_entropy_loss,
        neighbour_adjacency,
        sinkhorn,
        supcon_loss,
        two_view_info_nce,
        weighted_sum,
    )
    from gcdbench.training.mining import (
        assignment_entropy,
        cluster_state,
        dec_target,
        knn,
        local_inconsistency,
        nearest_to_centers,
        squared_distances,
        student_t,
        top_clusters,
    )
    from gcdbench.training.mode_base import TrainingMode
    from gcdbench.training.modes import make_mode
    from gcdbench.training.optim import (
        Optimisation,
        cycling_batches,
        make_optimisation,
        steps_per_epoch,
    )
    from gcdbench.training.pipeline import (
        TrainedRun,
        TrainingSetup,
        cluster_test,
        prepare_training,
        test_features,
        train_and_cluster,
    )
    from gcdbench.training.questions import (
        Asker,
        AskingStyle,
        description_text,
        known_class_demonstrations,
    )
    from gcdbench.training.rounds import LoopResult, run_rounds
    from gcdbench.training.seeding import generator_for, isolated_torch_rng, torch_seed

#: engine module (under gcdbench.training) -> the names bound from it on first use
_LAZY_MODULES: dict[str, tuple[str, ...]] = {
    "candidates": (
        "NO_QUERY",
        "category_candidates",
        "cluster_centers",
        "cluster_choice",
        "cluster_members",
        "cluster_similarities",
        "encoder_choice",
        "encoder_similarities",
        "instance_candidates",
        "loop_candidates",
        "representatives",
    ),
    "losses": (
        "alignment_loss",
        "cross_entropy_loss",
        "neighbour_adjacency",
        "sinkhorn",
        "supcon_loss",
        "two_view_info_nce",
        "weighted_sum",
    ),
    "calibration": ("CalibrationQuestion", "CalibrationSet", "calibration_questions"),
    "checkpoint": ("round_checkpoints", "rounds_inputs"),
    "fusion": ("coefficients", "fit_fusion", "fused_choices"),
    "heads": ("KnownClassifier", "ProjectionHead"),
    "mining": (
        "assignment_entropy",
        "cluster_state",
        "dec_target",
        "knn",
        "local_inconsistency",
        "nearest_to_centers",
        "squared_distances",
        "student_t",
        "top_clusters",
    ),
    "mode_base": ("TrainingMode",),
    "modes": ("make_mode",),
    "optim": ("Optimisation", "cycling_batches", "make_optimisation", "steps_per_epoch"),
    "pipeline": (
        "TrainedRun",
        "TrainingSetup",
        "cluster_test",
        "prepare_training",
        "test_features",
        "train_and_cluster",
    ),
    "questions": ("Asker", "AskingStyle", "description_text", "known_class_demonstrations"),
    "rounds": ("LoopResult", "run_rounds"),
    "seeding": ("generator_for", "isolated_torch_rng", "torch_seed"),
}
_LAZY: dict[str, str] = {name: module for module, names in _LAZY_MODULES.items() for name in names}


def _engine_module(module: str) -> ModuleType:
    # Spelled-out imports rather than importlib, so readers, type checkers and
    # tests/test_import_graph.py see every module this facade can load.
    if module == "candidates":
        from gcdbench.training import candidates

        return candidates
    if module == "calibration":
        from gcdbench.training import calibration

        return calibration
    if module == "checkpoint":
        from gcdbench.training import checkpoint

        return checkpoint
    if module == "fusion":
        from gcdbench.training import fusion

        return fusion
    if module == "losses":
        from gcdbench.training import losses

        return losses
    if module == "heads":
        from gcdbench.training import heads

        return heads
    if module == "mining":
        from gcdbench.training import mining

        return mining
    if module == "mode_base":
        from gcdbench.training import mode_base

        return mode_base
    if module == "modes":
        from gcdbench.training import modes

        return modes
    if module == "optim":
        from gcdbench.training import optim

        return optim
    if module == "pipeline":
        from gcdbench.training import pipeline

        return pipeline
    if module == "questions":
        from gcdbench.training import questions

        return questions
    if module == "rounds":
        from gcdbench.training import rounds

        return rounds
    if module == "seeding":
        from gcdbench.training import seeding

        return seeding
    raise AssertionError(f"no engine module {module!r}")  # pragma: no cover - kept in step


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_engine_module(module), name)
    globals()[name] = value  # bound once: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "CLASSIFIERS",
    "DEFAULT_LOSSES",
    "DEFAULT_TOPK",
    "MODES_HINT",
    "MODE_PATTERN",
    "NO_QUERY",
    "PAPER_TOPK",
    "POOLINGS",
    "PRECISIONS",
    "ROUND_BATCH_KEYS",
    "ROUND_OUTPUT_KEYS",
    "VARIANTS",
    "Asker",
    "AskingStyle",
    "CalibrationQuestion",
    "CalibrationSet",
    "KnownClassifier",
    "LoopResult",
    "LossChoice",
    "Optimisation",
    "PretrainParams",
    "ProjectionHead",
    "RoundHook",
    "RoundParams",
    "RoundPlan",
    "TrainedRun",
    "TrainingMode",
    "TrainingSetup",
    "alignment_loss",
    "assignment_entropy",
    "calibration_questions",
    "category_candidates",
    "check_params",
    "cluster_centers",
    "cluster_choice",
    "cluster_members",
    "cluster_similarities",
    "cluster_state",
    "cluster_test",
    "coefficients",
    "cross_entropy_loss",
    "cycling_batches",
    "dec_target",
    "description_text",
    "encoder_choice",
    "encoder_similarities",
    "fit_fusion",
    "fused_choices",
    "generator_for",
    "instance_candidates",
    "isolated_torch_rng",
    "knn",
    "known_class_demonstrations",
    "l2_normalise",
    "local_inconsistency",
    "loop_candidates",
    "make_mode",
    "make_optimisation",
    "nearest_to_centers",
    "neighbour_adjacency",
    "parse_losses",
    "prepare_training",
    "presets_for",
    "representatives",
    "resolve_topk",
    "round_checkpoints",
    "rounds_inputs",
    "run_rounds",
    "sinkhorn",
    "squared_distances",
    "steps_per_epoch",
    "student_t",
    "supcon_loss",
    "test_features",
    "top_clusters",
    "torch_seed",
    "train_and_cluster",
    "two_view_info_nce",
    "weighted_sum",
]
