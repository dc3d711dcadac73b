"""A sweep plan file (TOML): what ``gcdbench sweep`` runs and ``gcdbench status`` reports.

This module reads the file and checks its shape: every key known, every value of a type
the key takes. It turns each value into what a user would have typed for the matching
``gcdbench run`` flag (``seeds = [0, 1]`` becomes ``--seeds 0,1``, ``params = { k = 10 }``
becomes ``-p k=10``), so that the specs are then built and checked by exactly the code
``gcdbench run`` uses (gcdbench/cli/sweep.py) and a plan's run has the run id the same
``gcdbench run`` command would give. docs/sweeps.md describes every key.

Every problem is a :class:`~gcdbench.errors.GcdbenchError` of one line naming the file, the
key and the fix; no input, however malformed, raises anything else.
"""

from __future__ import annotations

import difflib
import math
import reprlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gcdbench.errors import GcdbenchError

#: The largest plan ``gcdbench sweep`` starts without ``max_runs`` (as ``gcdbench run``).
DEFAULT_MAX_RUNS = 1000
VARIANTS = ("paper", "official")

#: Keys that may stand in [axes] and, overriding it, in a [[methods]] entry.
AXIS_KEYS = ("datasets", "known_ratios", "seeds", "labeled_ratio")
#: Keys that set a default for every run (a [[methods]] entry may override each).
DEFAULT_KEYS = ("encoder", "llm", "llm_options", "llm_budget", "k")
TOP_KEYS = (
    "results_dir",
    "data_dir",
    "ledger",
    "llm_offline",
    "max_runs",
    *DEFAULT_KEYS,
    "axes",
    "methods",
)
METHOD_KEYS = (
    "name",
    "preset",
    "params",
    "ablate",
    "variant",
    "refine",
    "refine_params",
    *DEFAULT_KEYS,
    *AXIS_KEYS,
)


@dataclass(frozen=True)
class AxisValue:
    """One axis as ``gcdbench run`` flag values, and the plan key it came from."""

    values: tuple[str, ...]
    key: str


@dataclass(frozen=True)
class MethodEntry:
    """One ``[[methods]]`` table, with the plan's defaults and axes filled in."""

    index: int  # 1-based, as a reader counts the tables
    name: str
    datasets: AxisValue
    known_ratios: AxisValue
    seeds: AxisValue
    labeled_ratio: float
    preset: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    ablate: tuple[tuple[str, ...], ...] = ((),)
    variant: str | None = None
    refine: str | None = None
    refine_params: Mapping[str, str] = field(default_factory=dict)
    encoder: str | None = None
    llm: str | None = None
    llm_options: Mapping[str, str] = field(default_factory=dict)
    llm_budget: str | None = None
    k: str | None = None  # as --k: "true", "50" or "estimate:NAME"
    #: The DEFAULT_KEYS this entry set itself (a top-level default applies only where the
    #: method can use it; an explicit value must fit the method).
    explicit: frozenset[str] = frozenset()

    @property
    def where(self) -> str:
        return f"[[methods]] #{self.index} ({self.name!r})"


@dataclass(frozen=True)
class Plan:
    path: Path
    methods: tuple[MethodEntry, ...]
    results_dir: str | None = None
    data_dir: str | None = None
    ledger: str | None = None
    llm_offline: bool = False
    max_runs: int = DEFAULT_MAX_RUNS

    def error(self, key: str, problem: str) -> GcdbenchError:
        """The one-line error for ``key`` of this plan; ``problem`` says what and the fix."""
        return plan_error(self.path, key, problem)


def plan_error(path: Path, key: str, problem: str) -> GcdbenchError:
    where = f"{path}: {key}: " if key else f"{path}: "
    # One line whatever a value held: TOML strings may carry newlines.
    return GcdbenchError(" ".join((where + problem).split()))


def load_plan(path: Path) -> Plan:
    """Read and shape-check the plan at ``path``."""
    return parse_plan(_read_toml(path), path)


def parse_plan(raw: dict[str, Any], path: Path) -> Plan:
    """Shape-check a plan already read from TOML (``path`` names it in messages)."""
    return _Reader(path).plan(raw)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise plan_error(path, "", "no such file; pass the path of a plan (.toml)") from None
    except IsADirectoryError:
        raise plan_error(path, "", "is a folder; pass the path of a plan file (.toml)") from None
    except UnicodeDecodeError as exc:
        raise plan_error(
            path, "", f"is not UTF-8 text (byte {exc.start}); save the plan as UTF-8"
        ) from None
    except OSError as exc:
        raise plan_error(
            path, "", f"cannot be read ({exc.strerror or exc}); check its permissions"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise plan_error(path, "", f"is not valid TOML ({exc}); fix the syntax there") from None
    except RecursionError:
        raise plan_error(
            path, "", "nests arrays or tables too deeply to read; a plan needs two levels"
        ) from None
    except ValueError as exc:
        # Not a TOMLDecodeError: int() refuses a number of more than 4300 digits. Its own
        # message ends with advice for programmers (sys.set_int_max_str_digits); drop it.
        reason = str(exc).split(";")[0]
        raise plan_error(
            path, "", f"holds a value too long to read ({reason}); shorten it"
        ) from None


@dataclass(frozen=True)
class _Reader:
    path: Path

    def fail(self, key: str, problem: str) -> GcdbenchError:
        return plan_error(self.path, key, problem)

    # -- the file ------------------------------------------------------------------------

    def plan(self, raw: dict[str, Any]) -> Plan:
        self.known_keys(raw, TOP_KEYS, "the top level")
        axes = self.table(raw.get("axes", {}), "[axes]")
        self.known_keys(axes, AXIS_KEYS, "[axes]")
        defaults = {key: raw[key] for key in DEFAULT_KEYS if key in raw}
        methods = raw.get("methods")
        if not isinstance(methods, list) or not methods:
            raise self.fail(
                "[[methods]]",
                "the plan runs no method; add at least one [[methods]] table with a name, "
                'e.g. [[methods]] name = "kmeans"',
            )
        entries = tuple(
            self.method(i, entry, axes, defaults) for i, entry in enumerate(methods, start=1)
        )
        max_runs = raw.get("max_runs", DEFAULT_MAX_RUNS)
        if isinstance(max_runs, bool) or not isinstance(max_runs, int) or max_runs < 1:
            raise self.fail(
                "max_runs", f"must be an integer >= 1, got {_show(max_runs)}; e.g. 1000"
            )
        offline = raw.get("llm_offline", False)
        if not isinstance(offline, bool):
            raise self.fail("llm_offline", f"must be true or false, got {_show(offline)}")
        return Plan(
            path=self.path,
            methods=entries,
            results_dir=self.optional_text(raw.get("results_dir"), "results_dir"),
            data_dir=self.optional_text(raw.get("data_dir"), "data_dir"),
            ledger=self.optional_text(raw.get("ledger"), "ledger"),
            llm_offline=offline,
            max_runs=max_runs,
        )

    def method(
        self, index: int, raw: Any, axes: dict[str, Any], defaults: dict[str, Any]
    ) -> MethodEntry:
        where = f"[[methods]] #{index}"
        entry = self.table(raw, where)
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise self.fail(
                f"{where} name",
                f"every [[methods]] table needs a method name, got {_show(name)}; "
                'e.g. name = "kmeans" (gcdbench list methods)',
            )
        where = f"[[methods]] #{index} ({name!r})"
        self.known_keys(entry, METHOD_KEYS, where)
        prefix = f"{where} "
        return MethodEntry(
            index=index,
            name=name,
            datasets=self.axis(entry, axes, "datasets", where, self.names),
            known_ratios=self.axis(entry, axes, "known_ratios", where, self.numbers),
            seeds=self.axis(entry, axes, "seeds", where, self.seeds),
            labeled_ratio=self.labeled_ratio(entry, axes, where),
            preset=self.optional_text(entry.get("preset"), prefix + "preset"),
            params=self.pairs(entry.get("params", {}), prefix + "params"),
            ablate=self.ablate(entry.get("ablate", [[]]), prefix + "ablate"),
            variant=self.variant(entry.get("variant"), prefix + "variant"),
            refine=self.optional_text(entry.get("refine"), prefix + "refine"),
            refine_params=self.pairs(entry.get("refine_params", {}), prefix + "refine_params"),
            encoder=self.optional_text(*self.default(entry, defaults, "encoder", prefix)),
            llm=self.optional_text(*self.default(entry, defaults, "llm", prefix)),
            llm_options=self.pairs(*self.default(entry, defaults, "llm_options", prefix, {})),
            llm_budget=self.budget(*self.default(entry, defaults, "llm_budget", prefix)),
            k=self.k_value(*self.default(entry, defaults, "k", prefix)),
            explicit=frozenset(k for k in DEFAULT_KEYS if k in entry),
        )

    @staticmethod
    def default(
        entry: dict[str, Any], defaults: dict[str, Any], key: str, prefix: str, empty: Any = None
    ) -> tuple[Any, str]:
        """A DEFAULT_KEYS value and the key it came from: the entry's, else the top level's."""
        if key in entry:
            return entry[key], prefix + key
        return defaults.get(key, empty), key

    # -- value shapes --------------------------------------------------------------------

    def known_keys(self, table: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(
                    f"{where} {key!r}" if where != "the top level" else repr(key),
                    f"unknown key; {hint}allowed here: {', '.join(allowed)}",
                )

    def table(self, value: Any, key: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a table, got {_kind(value)}; see docs/sweeps.md")
        return value

    def optional_text(self, value: Any, key: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(
                key, f"must be a non-empty string, got {_show(value)}; give a value or drop the key"
            )
        return value

    def budget(self, value: Any, key: str) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # llm_budget = 2000, as --llm-budget 2000
        return self.optional_text(value, key)

    def k_value(self, value: Any, key: str) -> str | None:
        """``k = 50`` as ``--k 50``; a string as typed (``"estimate:silhouette"``)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is None or isinstance(value, str):
            return self.optional_text(value, key)
        raise self.fail(
            key,
            f"must be a string or an integer, got {_kind(value)}; e.g. "
            'k = "estimate:silhouette" or k = 50',
        )

    def variant(self, value: Any, key: str) -> str | None:
        if value is None or value in VARIANTS:
            return value
        raise self.fail(key, f"must be one of {', '.join(VARIANTS)}, got {_show(value)}")

    def pairs(self, value: Any, key: str) -> dict[str, str]:
        """A table of parameters as ``KEY=VALUE`` flag values would give them."""
        table = self.table(value, key)
        out: dict[str, str] = {}
        for name, item in table.items():
            if not name.strip():
                raise self.fail(key, "has an empty key; name the parameter")
            out[name.strip()] = self.flag_text(item, f"{key}.{name}")
        return out

    def flag_text(self, value: Any, key: str) -> str:
        """A scalar as it would be typed on the command line; ``repr`` of a float is exact,
        so ``1e-05`` parses back to the same number."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return repr(value)
        if isinstance(value, str):
            return value
        raise self.fail(
            key, f"must be a string, number or boolean, got {_kind(value)}; e.g. {key} = 10"
        )

    def names(self, value: Any, key: str) -> tuple[str, ...]:
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise self.fail(
                key,
                f'must be a list of names, got {_show(value)}; e.g. {key} = ["banking", "clinc"]',
            )
        return tuple(items)

    def numbers(self, value: Any, key: str) -> tuple[str, ...]:
        """As ``--known-ratio`` values: the range is checked where the flag's is."""
        items = value if isinstance(value, list) else [value]
        if not items or not all(_is_number(v) for v in items):
            raise self.fail(
                key, f"must be a list of numbers, got {_show(value)}; e.g. {key} = [0.25]"
            )
        return tuple(repr(v) for v in items)

    def seeds(self, value: Any, key: str) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)  # "0-4" / "0,1,2", as --seeds takes it
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            raise self.fail(
                key,
                f'must be integers or a range, got {_show(value)}; e.g. {key} = "0-2" or [0, 1]',
            )
        return tuple(str(v) for v in items)

    def axis(
        self, entry: dict[str, Any], axes: dict[str, Any], key: str, where: str, shape: Any
    ) -> AxisValue:
        if key in entry:
            full = f"{where} {key}"
            return AxisValue(shape(entry[key], full), full)
        if key in axes:
            full = f"[axes] {key}"
            return AxisValue(shape(axes[key], full), full)
        raise self.fail(
            f"{where} {key}",
            f"no {key} for this method; set {key} in [axes] (for every method) or in its "
            "[[methods]] table",
        )

    def labeled_ratio(self, entry: dict[str, Any], axes: dict[str, Any], where: str) -> float:
        key, value = (
            (f"{where} labeled_ratio", entry["labeled_ratio"])
            if "labeled_ratio" in entry
            else ("[axes] labeled_ratio", axes.get("labeled_ratio", 0.1))
        )
        try:
            # A float, as --labeled-ratio gives it: 1 and 1.0 must be the same spec.
            number = float(value) if _is_number(value) else math.nan
        except OverflowError:
            number = math.nan
        if not 0 < number <= 1:
            raise self.fail(key, f"must be a number in (0, 1], got {_show(value)}; e.g. 0.1")
        return number

    def ablate(self, value: Any, key: str) -> tuple[tuple[str, ...], ...]:
        ok = (
            isinstance(value, list)
            and value
            and all(isinstance(s, list) and all(isinstance(c, str) for c in s) for s in value)
        )
        if not ok:
            raise self.fail(
                key,
                f"must be a list of component lists, one run per list, got {_show(value)}; e.g. "
                'ablate = [[], ["demo"]] for the full method and one without demo',
            )
        return tuple(tuple(s) for s in value)


def _show(value: Any) -> str:
    """A value as a message shows it: short, however long or deeply nested it is."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """A TOML type's name, as a plan author knows it."""
    names = {dict: "a table", list: "an array", str: "a string", bool: "a boolean"}
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"
