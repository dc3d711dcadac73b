"""Methods: the unit a user runs, compares and ablates."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from gcdbench.api.feedback_log import FeedbackLog
from gcdbench.api.values import NONE_WORDS, parse_value
from gcdbench.errors import GcdbenchError, UnknownNameError

if TYPE_CHECKING:
    from gcdbench.api.context import RunContext
    from gcdbench.api.task import GCDTask


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
    #: A pseudo-labelling method's labels for the labeled texts (``task.train.texts[:
    #: task.num_labeled]``), in the id space of ``test_assignments``, -1 for a text it did not
    #: label (a budget cut): what a refiner such as SILR estimates the labeller's reliability
    #: from, without gold labels of unlabeled texts.
    labeled_assignments: np.ndarray | None = None


@dataclass(frozen=True)
class Resources:
    """What one run of a method needs from the machine that runs it: ``--executor ray`` asks
    Ray for it (``num_cpus``, ``num_gpus``, ``memory``); other executors ignore it. A class
    declaration, so a preset or ``--param`` never changes it; ``--ray-resources`` overrides it
    per sweep (docs/cluster.md). Never part of a run's identity: where a run runs does not
    change its result. ``memory_gb`` None reserves no memory (Ray's own default)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        checks = (
            ("cpus", self.cpus, "a number > 0", False),
            ("gpus", self.gpus, "a number >= 0", True),
            ("memory_gb", self.memory_gb, "a number > 0 or None", False),
        )
        for name, value, wanted, zero_ok in checks:
            if value is None and name == "memory_gb":
                continue
            if not _amount(value, zero_ok):
                raise GcdbenchError(f"resources: {name} must be {wanted}, got {value!r}.")


def _amount(value: object, zero_ok: bool) -> bool:
    """A finite number above zero (or at zero, where ``zero_ok``); never a bool."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= 0 if zero_ok else value > 0


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
    #: The query kinds the method asks (``gcdbench list methods`` shows them; each must be
    #: registered, by the method's own plugin or another).
    asks: ClassVar[tuple[str, ...]] = ()
    #: True for a method whose clusters are labels it assigned text by text (an LLM
    #: classifier): it fills ``MethodOutput.labeled_assignments`` and ``--refine`` applies.
    pseudo_labels: ClassVar[bool] = False
    #: True for a method that fine-tunes the run's encoder (``ctx.load_backbone``): the runner
    #: then refuses an encoder without weights (a bag of words) before anything is written.
    trains_encoder: ClassVar[bool] = False
    components: ClassVar[tuple[Component, ...]] = ()
    Params: ClassVar[type] = NoParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: What one run needs (CPUs, GPUs, memory): what ``--executor ray`` reserves per run.
    resources: ClassVar[Resources] = Resources()

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
    def fine_tunes_encoder(cls, ablations: frozenset[str]) -> bool:
        """Whether a run with ``ablations`` fine-tunes the encoder: ``trains_encoder``, unless
        the method overrides this because an ablation leaves its encoder frozen."""
        return cls.trains_encoder

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
    def resolve_params(cls, preset: str | None, overrides: Mapping[str, Any]) -> Any:
        """Defaults, then the preset, then explicit overrides (strings from the CLI), every
        resolved value checked against the schema :func:`param` declares."""
        fields = {f.name: f for f in dataclasses.fields(cls.Params)}
        # A refiner's parameters go through here too (gcdbench.api.refiner), named as such.
        owner, flag = getattr(cls, "param_owner", "method"), getattr(cls, "param_flag", "-p")
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        if preset is not None:
            if not preset.strip():
                raise GcdbenchError(
                    f"--preset is empty; name one of method {cls.name!r}'s presets or drop it."
                )
            if not cls.presets:
                raise GcdbenchError(f"method {cls.name!r} declares no presets; drop --preset.")
            if preset not in cls.presets:
                raise UnknownNameError(f"preset of method {cls.name!r}", preset, cls.presets)
            for key, value in cls.presets[preset].items():
                if key not in fields:
                    raise GcdbenchError(
                        f"preset {preset!r} of method {cls.name!r} sets unknown parameter "
                        f"{key!r}; the plugin must declare it in its Params."
                    )
                values[key] = value
                sources[key] = f"preset {preset!r}"
        for key, raw in overrides.items():
            if key not in fields:
                raise UnknownNameError(f"parameter of {owner} {cls.name!r}", key, fields)
            values[key] = coerce(raw, fields[key], cls.name, owner=owner, flag=flag)
            sources[key] = "--param"
        for name, fld in fields.items():
            value = values[name] if name in values else _default(fld)
            check_value(fld, value, cls.name, sources.get(name, "default"), owner=owner, flag=flag)
        params = cls.Params(**values)
        cls.cross_check(params)
        return params

    @classmethod  # noqa: B027 - optional: most methods have no cross-field rule
    def cross_check(cls, params: Any, num_classes: int | None = None) -> None:
        """Rules :func:`param` cannot state per field: ones that span several parameters,
        and (when ``num_classes`` is given) ones that depend on the dataset's K. Raise
        :class:`GcdbenchError`; the CLI calls this before anything is written."""


# -- the parameter schema ---------------------------------------------------------------------

#: The metadata key under which :func:`param` stores a field's :class:`ParamRule`.
PARAM_KEY = "gcdbench"
#: Field types the CLI converts ``--param`` strings to and checks values against.
_SCALARS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}


@dataclass(frozen=True)
class ParamRule:
    """What values a parameter takes: numeric bounds, a fixed set, a pattern for strings
    (described by ``allowed``), the name of a registered component of kind ``registered``,
    or whatever ``check`` says: a function of the value returning what is wrong with it (one
    line) or None, for a rule none of the others can state."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[Any, ...] | None = None
    pattern: str | None = None
    allowed: str = ""
    registered: str | None = None
    help: str = ""
    check: Callable[[Any], str | None] | None = None


def param(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[Any, ...] | list[Any] | None = None,
    pattern: str | None = None,
    allowed: str = "",
    registered: str | None = None,
    help: str = "",
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """A ``Params`` field with its range and one-line help, e.g.
    ``n_init: int = param(10, ge=1, help="K-means restarts")``. ``resolve_params`` checks
    every value against it; ``gcdbench list methods --params`` shows it. ``check`` is a last
    resort for a rule the keywords cannot state (give ``allowed`` to describe it)."""
    rule = ParamRule(
        ge,
        gt,
        le,
        lt,
        tuple(choices) if choices is not None else None,
        pattern,
        allowed,
        registered,
        help,
        check,
    )
    return field(default=default, metadata={PARAM_KEY: rule})


def param_rule(fld: dataclasses.Field[Any]) -> ParamRule:
    rule = fld.metadata.get(PARAM_KEY)
    return rule if isinstance(rule, ParamRule) else ParamRule()


def param_schema(params_cls: type) -> list[dict[str, Any]]:
    """The schema of a ``Params`` dataclass as data, one dict per field, for display."""
    if not dataclasses.is_dataclass(params_cls):
        return []
    out = []
    for fld in dataclasses.fields(params_cls):
        rule = param_rule(fld)
        bounds = {
            k: getattr(rule, k) for k in ("ge", "gt", "le", "lt") if getattr(rule, k) is not None
        }
        out.append(
            {
                "name": fld.name,
                "type": _type_text(fld),
                "default": _default(fld),
                "range": bounds or None,
                "choices": list(rule.choices) if rule.choices is not None else None,
                "allowed": describe_allowed(rule),
                "help": rule.help,
            }
        )
    return out


def describe_allowed(rule: ParamRule) -> str:
    """``>= 1``, ``[0, 1]``, ``one of paper, official``, … (empty when anything goes)."""
    if rule.allowed:
        return rule.allowed
    if rule.choices is not None:
        return "one of " + ", ".join(_show(c) for c in rule.choices)
    if rule.registered:
        return f"a registered {rule.registered}"
    low = ("[", rule.ge) if rule.ge is not None else ("(", rule.gt)
    high = ("]", rule.le) if rule.le is not None else (")", rule.lt)
    if low[1] is not None and high[1] is not None:
        return f"{low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
    if low[1] is not None:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]:g}"
    if high[1] is not None:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]:g}"
    return ""


def check_value(
    fld: dataclasses.Field[Any],
    value: Any,
    method: str,
    source: str,
    *,
    owner: str = "method",
    flag: str = "-p",
) -> None:
    """One line naming the parameter, the bad value, what it takes and an example fix."""
    problem = _problem(fld, value)
    if problem is None:
        return
    where = "" if source == "--param" else f" (from {_source_text(source)})"
    example = _example(fld)
    fix = (
        f"e.g. {flag} {fld.name}={_show(example)}"
        if example is not None
        else "see gcdbench list methods --params"
    )
    raise GcdbenchError(f"{owner} {method!r}: {problem}{where}; {fix}.")


def _problem(fld: dataclasses.Field[Any], value: Any) -> str | None:
    """What is wrong with ``value`` for ``fld``, or None."""
    types, none_ok = _types(fld)
    if value is None:
        return (
            None
            if none_ok or types is None
            else f"parameter {fld.name} must be {_type_text(fld)}, got None"
        )
    if types is not None and not any(_is_instance(value, t) for t in types):
        return f"parameter {fld.name} must be {_type_text(fld)}, got {value!r}"
    rule = param_rule(fld)
    allowed = describe_allowed(rule)
    if rule.choices is not None and value not in rule.choices:
        return f"unknown {fld.name} {value!r}; parameter {fld.name} takes {allowed}"
    if rule.pattern is not None and not (
        isinstance(value, str) and re.fullmatch(rule.pattern, value)
    ):
        return f"unknown {fld.name} {value!r}; parameter {fld.name} takes {allowed}"
    if rule.registered is not None:
        from gcdbench import registry  # the registry imports the api: import when needed

        known = registry.names(rule.registered)
        if value not in known:
            return (
                f"unknown {rule.registered} {value!r} for parameter {fld.name}; available: "
                f"{', '.join(known) or 'none registered'}"
            )
    if _is_number(value) and not _in_bounds(value, rule):
        return f"parameter {fld.name} must be {allowed}, got {_show(value)}"
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not _INT64[0] <= value <= _INT64[1]
    ):
        # NumPy, PyTorch and scikit-learn take C integers: a larger one fails mid-run.
        digits = str(value)
        shown = digits if len(digits) <= 30 else f"{digits[:12]}… ({len(digits)} digits)"
        return f"parameter {fld.name} must fit in 64 bits, got {shown}"
    if rule.check is not None:
        problem = rule.check(value)
        if problem:
            return f"parameter {fld.name}: {problem}"
    return None


#: The integers a parameter may hold: what a C ``int64`` holds.
_INT64 = (-(2**63), 2**63 - 1)


def _in_bounds(x: float, rule: ParamRule) -> bool:
    # Compared as given: float() of an int past 1e308 (-p n_init=1 and 400 zeros) raises.
    if isinstance(x, float) and math.isnan(x):
        return False
    return (
        (rule.ge is None or x >= rule.ge)
        and (rule.gt is None or x > rule.gt)
        and (rule.le is None or x <= rule.le)
        and (rule.lt is None or x < rule.lt)
    )


def _example(fld: dataclasses.Field[Any]) -> Any:
    """A value that passes: the default when it does, else one derived from the rule."""
    default = _default(fld)
    if default is not None and _problem(fld, default) is None:
        return default
    rule = param_rule(fld)
    if rule.choices:
        return rule.choices[0]
    for bound in (rule.ge, rule.le):
        if bound is not None:
            return bound
    return None


def _default(fld: dataclasses.Field[Any]) -> Any:
    if fld.default is not dataclasses.MISSING:
        return fld.default
    if fld.default_factory is not dataclasses.MISSING:
        return fld.default_factory()
    return None


def _types(fld: dataclasses.Field[Any]) -> tuple[tuple[type, ...] | None, bool]:
    """The scalar types ``fld`` declares and whether None is allowed; None for a type this
    schema does not know (lists, custom classes), which is then not checked."""
    names = _type_names(fld)
    none_ok = "None" in names
    scalars = [n for n in names if n != "None"]
    if not scalars or any(n not in _SCALARS for n in scalars):
        return None, none_ok
    return tuple(_SCALARS[n] for n in scalars), none_ok


def _type_names(fld: dataclasses.Field[Any]) -> list[str]:
    """``int | None``, ``Optional[int]`` or the type objects themselves -> ["int", "None"]."""
    kind = fld.type
    if not isinstance(kind, str):
        args = (
            typing.get_args(kind)
            if typing.get_origin(kind) in (typing.Union, types.UnionType)
            else (kind,)
        )
        return ["None" if a is type(None) else getattr(a, "__name__", str(a)) for a in args]
    text = kind.replace("typing.", "").strip()
    optional = re.fullmatch(r"Optional\[(.+)\]", text)
    if optional:
        text = f"{optional.group(1)} | None"
    if "[" in text:
        return [text]
    return [part.strip() for part in text.split("|")]


def _type_text(fld: dataclasses.Field[Any]) -> str:
    return " | ".join(_type_names(fld))


def _is_instance(value: Any, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        # an int is a fine float; NaN and infinity are not JSON, so no record could hold them
        return _is_number(value) and math.isfinite(float(value))
    return isinstance(value, kind)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _source_text(source: str) -> str:
    return "the method's default; the plugin must fix it" if source == "default" else source


def coerce(
    raw: Any,
    fld: dataclasses.Field[Any],
    method: str,
    *,
    owner: str = "method",
    flag: str = "-p",
) -> Any:
    """Turn a CLI string into the type the Params field declares (``int | None`` too:
    ``none`` gives None); a non-string passes through to :func:`check_value`."""
    if not isinstance(raw, str):
        return raw
    types_, none_ok = _types(fld)
    if types_ is None:
        return raw
    text = raw.strip()
    if none_ok and text.lower() in NONE_WORDS:
        return None
    # Most specific first, so "1" is an int for ``int | float`` and "true" a bool.
    for kind in sorted(types_, key=[bool, int, float, str].index):
        try:
            return parse_value(text, kind)
        except ValueError:
            continue
    example = _example(fld)
    hint = _show(example) if example is not None else f"<{_type_text(fld)}>"
    raise GcdbenchError(
        f"{owner} {method!r}: parameter {fld.name} must be {_type_text(fld)}, got {raw!r}; "
        f"e.g. {flag} {fld.name}={hint}."
    )


def params_dict(params: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        return dataclasses.asdict(params)
    return dict(params)
