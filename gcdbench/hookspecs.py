"""The hooks a plugin implements. Each receives a ``register`` callable and calls it once
per thing it provides, e.g.::

    from gcdbench import hookimpl

    @hookimpl
    def register_methods(register):
        register(MyMethod)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("gcdbench")
hookimpl = pluggy.HookimplMarker("gcdbench")

Register = Callable[[Any], None]


@hookspec
def register_methods(register: Register) -> None:
    """Register :class:`gcdbench.api.Method` subclasses."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register :class:`gcdbench.api.DatasetDefinition` instances."""


@hookspec
def register_encoders(register: Register) -> None:
    """Register :class:`gcdbench.api.EncoderFactory` instances."""


@hookspec
def register_miners(register: Register) -> None:
    """Register :class:`gcdbench.api.miner.Miner` instances."""


@hookspec
def register_feedback_providers(register: Register) -> None:
    """Register :class:`gcdbench.api.feedback.FeedbackProvider` factories."""


@hookspec
def register_query_kinds(register: Register) -> None:
    """Register :class:`gcdbench.api.QueryKind` instances: a question an LLM (or an oracle)
    answers, with its prompt templates, decoding and gold scoring."""


@hookspec
def register_refiners(register: Register) -> None:
    """Register :class:`gcdbench.api.refiner.Refiner` subclasses (``--refine NAME``)."""


@hookspec
def register_k_estimators(register: Register) -> None:
    """Register :class:`gcdbench.api.k_estimator.KEstimator` instances (``--k estimate:NAME``)."""


@hookspec
def register_loss_hooks(register: Register) -> None:
    """Register :class:`gcdbench.api.loss.LossHook` classes."""


@hookspec
def register_executors(register: Register) -> None:
    """Register :class:`gcdbench.api.Executor` classes."""


@hookspec
def register_llm_backends(register: Register) -> None:
    """Register :class:`gcdbench.llm.api.BackendFactory` instances."""
