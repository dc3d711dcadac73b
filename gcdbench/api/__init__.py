"""The interfaces every plugin implements, and the small value types they exchange.

Nothing here imports torch, transformers or any backend: importing ``gcdbench.api`` is cheap.
"""

from __future__ import annotations

from gcdbench.api.context import RunContext
from gcdbench.api.dataset import DataFile, DatasetDefinition, DatasetParts, Part
from gcdbench.api.encoder import Encoder, EncoderFactory
from gcdbench.api.executor import Executor
from gcdbench.api.method import Component, Method, MethodOutput, param
from gcdbench.api.record import SCHEMA_VERSION, ResultRecord
from gcdbench.api.spec import RunSpec
from gcdbench.api.task import GCDSplit, GCDTask, Gold, TaskPart

__all__ = [
    "SCHEMA_VERSION",
    "Component",
    "DataFile",
    "DatasetDefinition",
    "DatasetParts",
    "Encoder",
    "EncoderFactory",
    "Executor",
    "GCDSplit",
    "GCDTask",
    "Gold",
    "Method",
    "MethodOutput",
    "Part",
    "ResultRecord",
    "RunContext",
    "RunSpec",
    "TaskPart",
    "param",
]
