"""Methods: the unit a user runs, compares and ablates."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gcdbench.api.feedback_log import FeedbackLog
from gcdbench.errors import GcdbenchError, UnknownNameError

if TYPE_CHECKING:
    from gcdbench.api.task import GCDTask
    from gcdbench.runner.context import RunContext


@dataclass(frozen=True)
class Component:
    """A part of a method that ``--ablate NAME`` can switch off.

    A group component (``includes`` non-empty) switches off each part it names.
    """

    name: str
    description: str
    includes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClusterInfo:
    """What a method says about one of its clusters (LLM methods name them)."""

    name: str
    description: str = ""


@dataclass
class MethodOutput:
    """A method's answer: one cluster id per test text, plus anything it wants recorded.

    Feedback methods return the questions they asked in ``feedback_log``; the runner scores
    it against gold into ``diagnostics["feedback_quality"]``.
    """

    test_assignments: np.ndarray
    clusters: dict[int, ClusterInfo] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    feedback_log: FeedbackLog | None = None


@dataclass(frozen=True)
class NoParams:
    """For methods without hyper-parameters."""


class Method(ABC):
    """Base class of every method plugin.

    A subclass sets ``name``, a ``Params`` dataclass whose defaults are the method's
    defaults, optional ``presets`` (preset name -> parameter overrides), the component
    kinds it ``uses`` (shown by ``gcdbench list methods``) and its ablatable
    ``components``; then implements :meth:`run`. Bump ``version`` whenever a change
    alters results: it is part of the run's hash, so old results are not mistaken for new.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    uses: ClassVar[tuple[str, ...]] = ("encoder",)
    components: ClassVar[tuple[Component, ...]] = ()
    Params: ClassVar[type] = NoParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, params: Any, ablations: frozenset[str] = frozenset()) -> None:
        self.params = params
        self.ablations = ablations

    def enabled(self, component: str) -> bool:
        return component not in self.ablations

    @abstractmethod
    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput: ...

    # -- resolution helpers used by the runner ------------------------------------------

    @classmethod
    def component_names(cls) -> list[str]:
        return [c.name for c in cls.components]

    @classmethod
    def expand_ablations(cls, names: tuple[str, ...] | list[str]) -> frozenset[str]:
        """Validate ``--ablate`` names and expand group components into their parts."""
        known = {c.name: c for c in cls.components}
        if names and not known:
            raise GcdbenchError(
                f"method {cls.name!r} declares no components, so there is nothing to ablate; "
                "drop --ablate."
            )
        out: set[str] = set()
        for name in names:
            if name not in known:
                raise UnknownNameError(f"component of method {cls.name!r}", name, known)
            out.add(name)
            out.update(known[name].includes)
        return frozenset(out)

    @classmethod
    def resolve_params(cls, preset: str | None, overrides: Mapping[str, str]) -> Any:
        """Defaults, then the preset, then explicit overrides (strings from the CLI)."""
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        values: dict[str, Any] = {}
        if preset is not None:
            if not cls.presets:
                raise GcdbenchError(f"method {cls.name!r} declares no presets; drop --preset.")
            if preset not in cls.presets:
                raise UnknownNameError(f"preset of method {cls.name!r}", preset, cls.presets)
            values.update(cls.presets[preset])
        for key, raw in overrides.items():
            if key not in fields:
                raise UnknownNameError(f"parameter of method {cls.name!r}", key, fields)
            values[key] = coerce(raw, fields[key], cls.name)
        return cls.Params(**values)


def coerce(raw: Any, fld: dataclasses.Field[Any], method: str) -> Any:
    """Turn a CLI string into the type the Params field declares."""
    if not isinstance(raw, str):
        return raw
    kind = fld.type if isinstance(fld.type, str) else getattr(fld.type, "__name__", str(fld.type))
    try:
        if kind.startswith("bool"):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise GcdbenchError(
            f"parameter {fld.name!r} of method {method!r} must be {kind}, got {raw!r}; "
            f"pass e.g. --param {fld.name}=<{kind}>."
        ) from None
    return raw


def params_dict(params: Any) -> dict[str, Any]:
    return dataclasses.asdict(params) if dataclasses.is_dataclass(params) else dict(params)
