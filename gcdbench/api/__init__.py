"""The interfaces every plugin implements, and the small value types they exchange.

A plugin imports from gcdbench only this package (and its submodules): the engine behind it
may change, this surface may not. Nothing here imports torch, transformers or any backend:
importing ``gcdbench.api`` is cheap. The training engine is reached through
:mod:`gcdbench.api.training` (``from gcdbench.api import training``), which loads torch
only when one of its engine functions is first used.
"""

from __future__ import annotations

from gcdbench.api.context import RunContext
from gcdbench.api.dataset import DataFile, DatasetDefinition, DatasetParts, Part, RemoteFile
from gcdbench.api.encoder import Encoder, EncoderFactory
from gcdbench.api.executor import Executor
from gcdbench.api.feedback import LAYOUTS, Answer, AskingPolicy, FeedbackProvider, Query
from gcdbench.api.feedback_log import AskedLog, FeedbackLog
from gcdbench.api.k_estimator import KEstimate, KEstimator
from gcdbench.api.loss import LossHook
from gcdbench.api.method import (
    ClusterInfo,
    Component,
    Method,
    MethodOutput,
    Resources,
    param,
)
from gcdbench.api.miner import ClusterState, Miner
from gcdbench.api.query_kind import ChoiceKind, Field, GoldView, QueryKind
from gcdbench.api.record import SCHEMA_VERSION, ResultRecord
from gcdbench.api.registered import registered
from gcdbench.api.spec import RunSpec
from gcdbench.api.task import GCDSplit, GCDTask, Gold, TaskPart
from gcdbench.api.values import parse_value
from gcdbench.errors import GcdbenchError, UnknownNameError
from gcdbench.hookspecs import Register, hookimpl

__all__ = [
    "LAYOUTS",
    "SCHEMA_VERSION",
    "Answer",
    "AskedLog",
    "AskingPolicy",
    "ChoiceKind",
    "ClusterInfo",
    "ClusterState",
    "Component",
    "DataFile",
    "DatasetDefinition",
    "DatasetParts",
    "Encoder",
    "EncoderFactory",
    "Executor",
    "FeedbackLog",
    "FeedbackProvider",
    "Field",
    "GCDSplit",
    "GCDTask",
    "GcdbenchError",
    "Gold",
    "GoldView",
    "KEstimate",
    "KEstimator",
    "LossHook",
    "Method",
    "MethodOutput",
    "Miner",
    "Part",
    "Query",
    "QueryKind",
    "Register",
    "RemoteFile",
    "Resources",
    "ResultRecord",
    "RunContext",
    "RunSpec",
    "TaskPart",
    "UnknownNameError",
    "hookimpl",
    "param",
    "parse_value",
    "registered",
]
