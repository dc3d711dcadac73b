"""Bad input as a tested promise, checked over generated inputs (hypothesis).

For any input, gcdbench either handles it correctly or prints one line ``error: ...`` on
stderr and exits with code 2: never a traceback, and after an exit 2 nothing is written,
neither to the results store nor to the run-related folders of the cache (features,
pre-trained models, feedback banks, the ledger).

The properties cover a user's own dataset files, the arguments of ``gcdbench run`` and
``gcdbench feedback eval``, the filters of the ``gcdbench llm ledger`` subcommands, and sweep
plan files (tests/test_sweep_plan.py holds one property over parsed plans; the ones here go
through the file and the command line). Inputs that would start real work are stopped by
design after every check has passed: a results folder that cannot be created (``gcdbench
run``), a data root whose dataset folders are empty (the run and the feedback bank stop
when they look for the files), ``gcdbench sweep --dry-run``. The error line then says which
stop was reached, so a property also asserts that valid input is accepted and that input
that is surely wrong is refused by the checks, not by the stop.

``HYPOTHESIS_PROFILE=soak`` multiplies every property's examples by 20 (benchmarks).
The inputs that used to crash (found by these properties, now fixed) keep a regression test
each at the end.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from collections.abc import Iterator, Sequence
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import click
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st
from llm_servers import SuiteSummary

from gcdbench import hookimpl, paths, registry
from gcdbench.api.dataset import DatasetDefinition, RemoteFile
from gcdbench.api.feedback import COMBINES, LAYOUTS, SCORINGS, AskingPolicy
from gcdbench.api.method import Method, param_rule
from gcdbench.cli import cli
from gcdbench.cli.common import MAX_SEED
from gcdbench.cli.run import run as run_command
from gcdbench.data.checks import check_dataset
from gcdbench.data.split import build_task, make_split
from gcdbench.errors import GcdbenchError
from gcdbench.feedback import kinds
from gcdbench.feedback.asking import LLMOptions
from gcdbench.feedback.bank import KINDS as BANK_KINDS
from gcdbench.feedback.ledger import COLUMNS, Entry, Ledger
from gcdbench.feedback.resolve import parse_llm_spec, resolve_llm

T = TypeVar("T")

# -- profiles ---------------------------------------------------------------------------------

settings.register_profile(
    "bad-input",
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile("soak", settings.get_profile("bad-input"))
SOAK = os.environ.get("HYPOTHESIS_PROFILE") == "soak"
SOAK_FACTOR = 20


def examples(n: int) -> settings:
    """``n`` examples (the default profile), or ``SOAK_FACTOR`` times as many (soak)."""
    profile = settings.get_profile("soak" if SOAK else "bad-input")
    return settings(profile, max_examples=n * SOAK_FACTOR if SOAK else n)


# -- what every command must do ------------------------------------------------------------

#: The cache folders a run or a feedback evaluation writes results-shaping state to. Data
#: downloads, model assemblies and fingerprint memos only save time and are left out.
RUN_CACHE = ("features", "pretrained", "banks", "ledger.sqlite")
#: The error a fully valid ``gcdbench run`` reaches: its results folder cannot be created.
NOT_WRITABLE = "is not writable"
#: The error a fully valid run or bank reaches in a data root whose dataset folders are empty.
LACKS = " lacks "


def invoke(args: Sequence[str]) -> Result:
    return CliRunner().invoke(cli, list(args))


def handled(result: Result, args: Sequence[str], *, known_bug: bool = False) -> str | None:
    """None on success; the error line on exit 2. Anything else fails the test, showing the
    traceback the user would have seen (counted apart for the pinned known bugs)."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        shown = "".join(traceback.format_exception(exc))
        SUMMARY.add(**{"known_bug_tracebacks" if known_bug else "tracebacks": 1})
        pytest.fail(f"traceback for gcdbench {_quoted(args)}:\n{shown}")
    assert "Traceback" not in result.output, result.output
    if result.exit_code == 0:
        return None
    assert result.exit_code == 2, (args, result.exit_code, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    return lines[0]


def failed_with_one_line(result: Result, args: Sequence[str], *, known_bug: bool = False) -> str:
    line = handled(result, args, known_bug=known_bug)
    assert line is not None, (args, result.output)
    return line


def _gist(message: str) -> str:
    """A message without its paths and quoted values, to count kinds of stops."""
    words = [w for w in message.split() if "/" not in w and "'" not in w and '"' not in w]
    return " ".join(words[:6])


def _quoted(args: Sequence[str]) -> str:
    return " ".join(repr(a) if not a or any(c in a for c in " '\"") else a for a in args)


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and mtime: what 'unchanged' compares."""
    if root.is_file():
        stat = root.stat()
        return {root.name: (stat.st_size, stat.st_mtime_ns)}
    if not root.is_dir():
        return {}
    out = {}
    for path in root.rglob("*"):
        if path.is_file():
            stat = path.stat()
            out[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return out


def run_cache() -> dict[str, dict[str, tuple[int, int]]]:
    cache = paths.cache_dir()
    found = {name: files_under(cache / name) for name in RUN_CACHE}
    for suffix in ("-wal", "-shm", "-journal"):
        found["ledger.sqlite" + suffix] = files_under(cache / f"ledger.sqlite{suffix}")
    return found


def nothing_written(cache_before: dict[str, Any], *stores: Path) -> None:
    """After an exit 2: no file under ``stores`` (results folders, ledgers, exports) and the
    run-related cache folders as they were."""
    written = {str(store): files_under(store) for store in stores if files_under(store)}
    changed = run_cache() != cache_before
    SUMMARY.add(partial_writes=int(bool(written) or changed))
    assert not written, written
    assert not changed, "the cache's run folders changed"


def fresh_dir(base: Path, prefix: str) -> Path:
    """A new folder per example (hypothesis runs many examples in one test call)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


#: What the module tried, printed as one line when it ends (docs/reliability.md): inputs per
#: property, and the tracebacks and partial writes, which the assertions keep at zero.
SUMMARY = SuiteSummary("bad-input", zero=("tracebacks", "partial_writes"), positive=("inputs",))


def tried(prop: str) -> None:
    SUMMARY.add(inputs=1, **{prop: 1})


@pytest.fixture(scope="module", autouse=True)
def _summary() -> Iterator[None]:
    yield
    SUMMARY.publish()


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-input")


@pytest.fixture(scope="module")
def stub_data(work: Path) -> Path:
    """A data root whose dataset folders exist and are empty: a run or bank that passed
    every check stops here, naming the missing file."""
    root = work / "stub-data"
    for name in registry.names("dataset"):
        (root / name).mkdir(parents=True)
    return root


@pytest.fixture(scope="module")
def blocked_results(work: Path) -> Path:
    """A results folder that cannot be created (a file stands where its parent would be)."""
    (work / "a-file").write_text("not a folder\n", encoding="utf-8")
    return work / "a-file" / "results"


# -- values -----------------------------------------------------------------------------------

#: Text a shell can pass: no NUL (argv cannot hold one), no lone surrogates (a real process
#: gets those only from bytes that are not UTF-8; one end-to-end test covers that).
ARG_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
#: Values a user could type by mistake, or that have tripped parsers: empty, separators,
#: non-numbers Python reads as numbers, digits of other scripts, numbers past a float or
#: past what int() reads quickly, names longer than a file name may be.
ODD_VALUES = [
    "", " ", ",", "-", "=", ":", ";", "nan", "-nan", "inf", "-inf", "1e400", "-0", "0x10",
    "1_000", "１", "٣", "none", "true", "../x", "~", "a" * 300, "9" * 400, "1" + "0" * 400,
    "é", "\t", "a,b", "0-", "-0-1",
]  # fmt: skip
JUNK = st.one_of(st.text(ARG_CHARS, max_size=12), st.sampled_from(ODD_VALUES))
NUMBER_TEXT = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
)
FREE = st.one_of(JUNK, NUMBER_TEXT)


def show(value: Any) -> str:
    """A value as a user types it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    return repr(value) if isinstance(value, float) else str(value)


def _default(fld: dataclasses.Field[Any]) -> Any:
    if fld.default is not dataclasses.MISSING:
        return fld.default
    if fld.default_factory is not dataclasses.MISSING:
        return fld.default_factory()
    return None


def param_values(fld: dataclasses.Field[Any]) -> st.SearchStrategy[str]:
    """Values near what a parameter takes: its default, its choices, its bounds and just
    past them, names of the registered components it names, and anything at all."""
    rule = param_rule(fld)
    near: list[str] = [show(_default(fld))]
    if rule.choices:
        near += [show(c) for c in rule.choices]
    for bound in (rule.ge, rule.gt, rule.le, rule.lt):
        if bound is not None:
            near += [show(bound), show(bound - 1), show(bound + 1), show(bound + 0.5)]
    if rule.registered:
        near += registry.names(rule.registered)
    return st.integers(0, 4).flatmap(lambda i: FREE if i == 4 else st.sampled_from(near))


def fields_of(cls: type[Method]) -> list[dataclasses.Field[Any]]:
    return list(dataclasses.fields(cls.Params))


METHODS = registry.names("method")
DATASETS = registry.names("dataset")
FEEDBACK_KINDS = sorted(
    {k for m in METHODS for k in registry.get("method", m).asks} | set(BANK_KINDS)
)
BACKEND_OPTIONS = {
    name: list(getattr(f, "OPTIONS", None) or getattr(f, "ENGINE_ARGS", None) or ())
    for name, f in ((n, registry.get("llm", n)) for n in registry.names("llm"))
}
PROVIDER_OPTIONS = [f.name for f in dataclasses.fields(LLMOptions)]


def accuracy() -> st.SearchStrategy[str]:
    """``noisy-oracle:`` arguments: a probability, per-kind ones, or anything."""
    p = st.one_of(st.floats(0, 1).map(repr), st.sampled_from(["0", "1", "0.5"]), FREE)
    per_kind = st.tuples(st.sampled_from([*FEEDBACK_KINDS, "*", "nosuch"]), p).map("=".join)
    return st.one_of(p, st.lists(st.one_of(p, per_kind), min_size=1, max_size=3).map(",".join))


LLM_SPECS = st.one_of(
    st.sampled_from(
        [
            "oracle",
            "noisy-oracle:0.8",
            "llamacpp:smollm2-135m",
            "openai:gpt-4o-mini",
            "llm:openai:gpt-4o-mini",
            "vllm:org/model",
            "transformers:org/model",
            "oracle:",
            "noisy-oracle:",
            "llm:",
            "openai:",
            ":",
            "gpt4",
            "",
        ]
    ),
    accuracy().map(lambda a: f"noisy-oracle:{a}"),
    st.tuples(st.sampled_from(["oracle", "openai:gpt-4o-mini", "noisy-oracle:0.9"]), FREE).map(
        ";".join
    ),
    JUNK,
)
OPTION_KEYS = st.sampled_from(
    [*PROVIDER_OPTIONS, *{k for keys in BACKEND_OPTIONS.values() for k in keys}, "budget"]
)
LLM_OPTIONS = st.integers(0, 4).flatmap(
    lambda i: (
        JUNK
        if i == 4
        else st.tuples(
            OPTION_KEYS, st.one_of(st.sampled_from(["0.7", "true", "2", "0"]), FREE)
        ).map("=".join)
    )
)
BUDGETS = st.one_of(
    st.sampled_from(["2000", "0.50usd", "$0.5", "2000,0.5usd", "0", "0usd", "-1", "1e3", ""]),
    st.integers(0, 10**9).map(str),
    st.decimals(0, 1000, allow_nan=False, places=2).map(lambda d: f"{d}usd"),
    st.integers(0, 10**9).map(lambda n: f"{n},{n / 1000}usd"),
    st.sampled_from(["9" * 5000, "0.00001usd", "9" * 400 + "usd", "1,2"]),
    JUNK,
)


# -- gcdbench run -----------------------------------------------------------------------------


def _often(strategy: st.SearchStrategy[T], junk: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``strategy`` nine times in ten, else ``junk``: an input of ten values then holds one
    wrong value or none about as often as several, so the deep checks are reached too."""
    return st.integers(0, 9).flatmap(lambda i: junk if i == 9 else strategy)


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _bad_ratio(text: str) -> bool:
    number = _float_or_none(text.strip())
    return number is None or not 0 < number <= 1


def _bad_seed(text: str) -> bool:
    """Surely not a seed, a seed list or a seed range (conservative: False when unsure)."""
    piece = text.strip()
    if not piece or any(c.isascii() and c.isalpha() for c in piece):
        return True
    if piece.startswith("-") and piece[1:].isascii() and piece[1:].isdigit():
        return True  # negative
    return piece.isascii() and piece.isdigit() and int(piece) > MAX_SEED


def _llm_name(spec: str) -> str:
    head = spec.strip().split(";")[0].strip()
    head = head.removeprefix("llm:")
    return head.partition(":")[0]


def _bad_count(text: str) -> bool:
    try:
        return int(text) < 1
    except ValueError:
        return True


class Argv:
    """Command-line arguments being drawn, and why they are surely wrong (if they are)."""

    def __init__(self) -> None:
        self.args: list[str] = []
        self.poison: list[str] = []

    def add(self, flag: str, value: str, bad: bool = False) -> None:
        self.args += [flag, value]
        if bad:
            self.poison.append(f"{flag} {value!r}")


def _items(draw: Any, good: st.SearchStrategy[str], most: int) -> list[str]:
    return draw(st.lists(_often(good, FREE), min_size=1, max_size=most))


@st.composite
def run_args(draw: Any, *, single: bool = False) -> tuple[list[str], list[str]]:
    """Arguments after ``gcdbench run``: real names and values near the valid ones, mixed
    with anything at all. ``single``: one dataset, known ratio and seed, local executor."""
    argv = Argv()
    method = draw(_often(st.sampled_from(METHODS), JUNK.filter(lambda s: not s.startswith("-"))))
    argv.args.append(method)
    known = method in METHODS
    if not known:
        argv.poison.append(f"method {method!r}")
    cls: type[Method] | None = registry.get("method", method) if known else None
    asks = cls is not None and "feedback" in cls.uses
    most = 1 if single else 3
    names = _items(draw, st.sampled_from(DATASETS), most)
    if draw(st.booleans()):
        argv.add("-d", ",".join(names), any(n.strip() not in DATASETS for n in names))
    ratios = _items(draw, st.sampled_from(["0.25", "0.5", "1", "0.1", "0.01"]), most)
    if draw(st.booleans()):
        bad = any(_bad_ratio(r) for r in ratios)
        chosen = [n.strip() for n in names] if "-d" in argv.args else ["banking"]
        for r in ratios:  # a ratio that rounds to no known class of a dataset in the plan
            number = _float_or_none(r.strip())
            if number is not None and not bad:
                k = [registry.get("dataset", n).num_classes for n in chosen if n in DATASETS]
                bad = any(round(n * number) == 0 for n in k)
        argv.add("--known-ratio", ",".join(ratios), bad)
    if draw(st.booleans()):
        value = draw(_often(st.sampled_from(["0.1", "1", "0.5", "0.001"]), FREE))
        argv.add("--labeled-ratio", value, _bad_ratio(value))
    seed_good = st.one_of(
        st.integers(0, MAX_SEED).map(str),
        st.tuples(st.integers(0, 5), st.integers(0, 2)).map(lambda t: f"{t[0]}-{t[0] + t[1]}"),
    )
    if draw(st.booleans()):
        seeds = _items(draw, st.integers(0, MAX_SEED).map(str) if single else seed_good, most)
        argv.add("--seeds", ",".join(seeds), any(_bad_seed(s) for s in seeds))
    if draw(st.booleans()):
        encoders = ["bag-of-words", "all-MiniLM-L6-v2", "sentence-transformers:all-MiniLM-L6-v2"]
        value = draw(_often(st.sampled_from([*encoders, "/no/such/model", "org/name"]), JUNK))
        argv.add("--encoder", value, not value.strip())
    if cls is not None and draw(st.booleans()):
        value = draw(_often(st.sampled_from(sorted(cls.presets) or ["smoke"]), JUNK))
        argv.add("--preset", value, value not in cls.presets)
    for _ in range(draw(st.integers(0, 4))):
        _draw_param(draw, argv, cls, "-p")
    if cls is not None and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 2))):
            names_ = [c.name for c in cls.components] or ["llm"]
            value = draw(_often(st.sampled_from(names_), JUNK))
            argv.add("--ablate", value, value not in names_)
    no_variant = cls is not None and "variant" not in {f.name for f in fields_of(cls)}
    if draw(st.integers(0, 12 if no_variant else 3)) == 0:
        value = draw(_often(st.sampled_from(["paper", "official"]), JUNK))
        argv.add("--variant", value, value not in ("paper", "official") or no_variant)
    if draw(st.integers(0, 3 if cls is not None and cls.pseudo_labels else 12)) == 0:
        value = draw(_often(st.just("silr"), JUNK))
        wrong = value != "silr" or (cls is not None and not cls.pseudo_labels)
        argv.add("--refine", value, wrong)
        if draw(st.booleans()):
            silr = registry.get("refiner", "silr")
            _draw_param(draw, argv, silr, "--refine-param")
    rarely = 2 if asks else 12  # --llm and its options are for methods that ask
    for flag, values in (("--llm", LLM_SPECS), ("--llm-option", LLM_OPTIONS)):
        if draw(st.integers(0, rarely)) == 0:
            value = draw(values)
            unknown = flag == "--llm" and _llm_name(value) not in _PROVIDER_NAMES
            empty_key = flag == "--llm-option" and not value.partition("=")[0].strip()
            no_sep = flag == "--llm-option" and "=" not in value
            argv.add(flag, value, unknown or empty_key or no_sep or (cls is not None and not asks))
    if draw(st.integers(0, rarely + 1)) == 0:
        argv.add("--llm-budget", draw(BUDGETS), cls is not None and not asks)
    if not single and draw(st.integers(0, 3)) == 0:
        value = draw(_often(st.sampled_from(registry.names("executor")), JUNK))
        argv.add("--executor", value, value not in registry.names("executor"))
    if draw(st.integers(0, 3)) == 0:
        value = draw(_often(st.integers(1, 8).map(str), st.one_of(FREE, st.just("0"))))
        argv.add("--workers", value, _bad_count(value))
    if draw(st.integers(0, 3)) == 0:
        value = draw(_often(st.integers(1, 2000).map(str), st.one_of(FREE, st.just("0"))))
        argv.add("--max-runs", value, _bad_count(value))
    flags = []
    for other in draw(st.lists(st.sampled_from(OTHER_RUN_OPTIONS), max_size=2, unique=True)):
        if other.is_flag:
            flags.append(other.opts[0])
        else:
            argv.add(other.opts[0], draw(_often(st.sampled_from(["1", "2", "77", "auto"]), FREE)))
    options = argv.args[1:]
    pairs = [options[i : i + 2] for i in range(0, len(options), 2)]
    shuffled = draw(st.permutations(pairs))
    return [argv.args[0], *(x for pair in shuffled for x in pair), *flags], argv.poison


_PROVIDER_NAMES = {*registry.names("feedback"), *registry.names("llm")}
#: The options of ``gcdbench run`` drawn above, and the folders the properties pin.
_DRAWN_RUN_OPTIONS = {
    "method", "ablations", "datasets", "known_ratios", "labeled_ratio", "seeds", "encoder",
    "preset", "params", "variant", "refine", "refine_params", "llm", "llm_options",
    "llm_budget", "executor", "workers", "max_runs", "ledger", "data_dir", "results_dir",
    "quiet", "no_download",
}  # fmt: skip
#: Every other option (added since, or a flag): drawn with small numbers, words or anything.
OTHER_RUN_OPTIONS = [
    p
    for p in run_command.params
    if isinstance(p, click.Option) and p.name not in _DRAWN_RUN_OPTIONS
]


def _draw_param(draw: Any, argv: Argv, cls: Any, flag: str) -> None:
    """One ``KEY=VALUE``: a declared parameter with a value near its rule, an unknown key,
    or anything at all."""
    fields = fields_of(cls) if cls is not None else []
    choice = draw(st.integers(0, 9))
    if fields and choice < 8:
        fld = draw(st.sampled_from(fields))
        argv.add(flag, f"{fld.name}={draw(param_values(fld))}")
    elif choice < 9:
        key = draw(JUNK)
        bad = cls is not None and key.strip() not in {f.name for f in fields}
        argv.add(flag, f"{key}={draw(FREE)}", bad or not key.strip())
    else:
        value = draw(JUNK)
        argv.add(flag, value, "=" not in value or not value.partition("=")[0].strip())


@examples(150)
@given(drawn=run_args())
@example(drawn=(["kmeans", "-p", "n_init=1" + "0" * 400], []))  # was an OverflowError
@example(drawn=(["alup", "-p", "max_length=" + "9" * 400], []))
def test_any_run_arguments_stop_with_one_line_and_write_nothing(
    drawn: tuple[list[str], list[str]], blocked_results: Path, stub_data: Path
) -> None:
    tried("run_arguments")
    args, poison = drawn
    argv = ["run", *args, "--results-dir", str(blocked_results), "--data-dir", str(stub_data)]
    argv += ["--no-download", "-q"]
    note(f"poison: {poison}")
    before = run_cache()
    line = failed_with_one_line(invoke(argv), argv)
    if poison:  # refused by a check, never by the results folder the plan could not write
        assert NOT_WRITABLE not in line, (poison, line)
    nothing_written(before)


@examples(60)
@given(drawn=run_args(single=True))
def test_one_run_stops_before_the_store_and_the_cache_change(
    drawn: tuple[list[str], list[str]], work: Path, stub_data: Path
) -> None:
    """Through the real store: a spec that passes every check reaches the data, whose
    folder is empty, and stops there; none leaves a file in the store or the cache."""
    tried("run_one_spec_through_the_store")
    args, poison = drawn
    results = fresh_dir(work, "results-")
    argv = ["run", *args, "--results-dir", str(results), "--data-dir", str(stub_data), "-q"]
    note(f"poison: {poison}")
    before = run_cache()
    line = failed_with_one_line(invoke(argv), argv)
    if poison:
        assert LACKS not in line and NOT_WRITABLE not in line, (poison, line)
    nothing_written(before, results)
    shutil.rmtree(results)


@st.composite
def valid_run_args(draw: Any) -> list[str]:
    """Arguments that are all valid: real names, values every rule allows (parameters at
    their defaults, typed as a user would), LLM specs and options a method that asks takes."""
    method = draw(st.sampled_from(METHODS))
    cls = registry.get("method", method)
    args = [
        method,
        "-d",
        ",".join(draw(st.lists(st.sampled_from(DATASETS), min_size=1, max_size=2, unique=True))),
    ]
    ratios = draw(st.lists(st.sampled_from(["0.25", "0.5", "0.75", "1", "1.0"]), min_size=1))
    args += ["--known-ratio", ",".join(ratios)]
    args += ["--labeled-ratio", repr(draw(st.floats(0.01, 1)))]
    low = draw(st.integers(0, MAX_SEED - 3))
    args += ["--seeds", draw(st.sampled_from([str(low), f"{low}-{low + 2}", f"{low},{low + 1}"]))]
    if draw(st.booleans()):  # not bag-of-words: methods that fine-tune need weights
        args += ["--encoder", draw(st.sampled_from(["all-MiniLM-L6-v2", "all-mpnet-base-v2"]))]
    preset = draw(st.sampled_from([None, *sorted(cls.presets)]))
    if preset is not None:
        args += ["--preset", preset]
    for fld in draw(st.lists(st.sampled_from(fields_of(cls)), max_size=4, unique_by=id)):
        if fld.name == "variant" or (preset and fld.name in cls.presets[preset]):
            continue  # a preset's own value, not the default, is what its checks assume
        args += ["-p", f"{fld.name}={show(_default(fld))}"]
    components = [c.name for c in cls.components]
    for name in draw(st.lists(st.sampled_from(components), max_size=1)) if components else []:
        args += ["--ablate", name]
    if "feedback" in cls.uses:
        args += _valid_llm(draw)
    if cls.pseudo_labels and draw(st.booleans()):
        args += ["--refine", "silr"]
    if draw(st.booleans()):
        args += ["--executor", "processes", "--workers", str(draw(st.integers(1, 4)))]
    return args


def _valid_llm(draw: Any) -> list[str]:
    kind = st.sampled_from(FEEDBACK_KINDS)
    p = st.floats(0, 1).map(repr)
    simulated = st.one_of(
        st.just("oracle"),
        p.map(lambda x: f"noisy-oracle:{x}"),
        st.lists(st.tuples(kind, p).map("=".join), min_size=1, max_size=3, unique=True).map(
            lambda pairs: "noisy-oracle:" + ",".join(pairs)
        ),
    )
    backend = st.sampled_from(["llamacpp:smollm2-135m", "openai:gpt-4o-mini", "llm:openai:o1"])
    spec = draw(st.one_of(simulated, backend))
    args = ["--llm", spec]
    if spec.startswith(("oracle", "noisy-oracle")):
        return args
    options = {
        "temperature": st.floats(0, 2).map(repr),
        "constrained": st.sampled_from(["true", "false", "yes", "no", "1", "0", "on", "off"]),
        "sample_seed": st.integers(0, 2**31).map(str),
    }
    for key in draw(st.lists(st.sampled_from(sorted(options)), unique=True)):
        args += ["--llm-option", f"{key}={draw(options[key])}"]
    if draw(st.booleans()):
        requests = st.integers(0, 10**6).map(str)
        dollars = st.decimals(Decimal("0.01"), 1000, places=2).map(lambda d: f"{d}usd")
        args += ["--llm-budget", draw(st.one_of(requests, dollars))]
    return args


@examples(60)
@given(args=valid_run_args())
def test_valid_run_arguments_pass_every_check(
    args: list[str], blocked_results: Path, stub_data: Path
) -> None:
    """Valid input is accepted: the only stop is the results folder that cannot be made."""
    tried("run_valid_arguments")
    argv = ["run", *args, "--results-dir", str(blocked_results), "--data-dir", str(stub_data)]
    line = failed_with_one_line(invoke([*argv, "-q"]), argv)
    assert NOT_WRITABLE in line, line


# -- gcdbench feedback eval -------------------------------------------------------------------


def _templates(kind: str) -> list[str]:
    return kinds.get_kind(kind).templates()


POLICY_FIELDS = {f.name: f for f in dataclasses.fields(AskingPolicy)}
TEMPLATES = sorted({v for k in (*BANK_KINDS, "characterize-cluster") for v in _templates(k)})


def _ask_value(key: str) -> st.SearchStrategy[str]:
    near = {
        "orderings": ["1", "2", "3", "0", "-1", "1.5"],
        "min_confidence": ["0", "0.8", "1", "none", "1.5", "-0.1", "nan"],
        "layout": [*LAYOUTS, "other"],
        "template": [*TEMPLATES, "nosuch", "none"],
        "scoring": [*SCORINGS, "other"],
        "combine": [*COMBINES, "other"],
    }.get(key, ["1"])
    return _often(st.sampled_from(near), FREE)


@st.composite
def feedback_args(draw: Any) -> tuple[list[str], list[str]]:
    """Arguments after ``gcdbench feedback eval``, and why they are surely wrong."""
    argv = Argv()
    name = draw(_often(st.sampled_from(DATASETS), JUNK))
    argv.add("-d", name, name not in DATASETS)
    for flag in ("--known-ratio", "--labeled-ratio"):
        if draw(st.booleans()):
            value = draw(_often(st.sampled_from(["0.25", "0.5", "1", "0.1"]), FREE))
            argv.add(flag, value, _bad_ratio(value))
    if draw(st.booleans()):
        argv.add("--seed", draw(_often(st.integers(0, MAX_SEED).map(str), FREE)))
    if draw(st.booleans()):
        value = draw(LLM_SPECS)
        argv.add("--llm", value, _llm_name(value) not in _PROVIDER_NAMES)
    if draw(st.integers(0, 3)) == 0:
        argv.add("--llm-option", draw(LLM_OPTIONS))
    asked: dict[str, str] = {}  # as --ask reads them: stripped, the last value of a key wins
    for _ in range(draw(st.integers(0, 3))):
        key = draw(_often(st.sampled_from(sorted(POLICY_FIELDS)), JUNK))
        text = f"{key}={draw(_ask_value(key))}"
        key, _, value = text.partition("=")
        argv.add("--ask", text, key.strip() not in POLICY_FIELDS)
        asked[key.strip()] = value.strip()
    template = asked.get("template")
    if template is not None and template.lower() not in ("none", "null", *TEMPLATES):
        argv.poison.append(f"--ask template={template!r}")  # an empty one too
    for _ in range(draw(st.integers(0, 2))):
        value = draw(_often(st.sampled_from(BANK_KINDS), JUNK))
        argv.add("--kind", value, value not in BANK_KINDS)
    if draw(st.booleans()):
        value = draw(_often(st.sampled_from(["provider", "texts"]), JUNK))
        argv.add("--describe", value)
    if draw(st.booleans()):
        value = draw(_often(st.integers(1, 500).map(str), st.one_of(FREE, st.just("0"))))
        argv.add("--size", value, _bad_count(value))
    if draw(st.booleans()):
        value = draw(_often(st.sampled_from(["bag-of-words", "all-MiniLM-L6-v2"]), JUNK))
        argv.add("--encoder", value, not value.strip())
    if draw(st.booleans()):
        value = draw(_often(st.sampled_from(["cpu", "smoke"]), JUNK))
        argv.add("--preset", value, value not in ("cpu", "smoke"))
    if draw(st.booleans()):
        argv.args.append("--fusion")
    return argv.args, argv.poison


@examples(80)
@given(drawn=feedback_args())
@example(drawn=(["-d", "banking", "--encoder", ""], ["--encoder ''"]))  # mined with the default
@example(drawn=(["-d", "banking", "--ask", "template=nosuch"], ["--ask template=nosuch"]))
@example(drawn=(["-d", "clinc", "--ask", "template=" + "a" * 300], ["--ask template=a…"]))
@example(drawn=(["-d", "clinc", "--ask", "0\x1e0=1"], ["--ask '0\\x1e0=1'"]))  # a line break
@example(drawn=(["-d", "clinc", "--ask", "template=a\x85b"], ["--ask template='a\\x85b'"]))
def test_feedback_eval_arguments_stop_before_the_bank_is_built(
    drawn: tuple[list[str], list[str]], work: Path, stub_data: Path
) -> None:
    """Every argument is checked before a bank is mined or anything asked: the first stop
    a valid request meets is the data root's empty dataset folder."""
    tried("feedback_eval_arguments")
    args, poison = drawn
    results = fresh_dir(work, "feedback-")
    ledger = results / "ledger.sqlite"
    argv = ["feedback", "eval", *args, "--results-dir", str(results / "store")]
    argv += ["--data-dir", str(stub_data), "--ledger", str(ledger), "-q"]
    note(f"poison: {poison}")
    before = run_cache()
    line = failed_with_one_line(invoke(argv), argv)
    if poison:
        assert LACKS not in line, (poison, line)
    nothing_written(before, results)
    shutil.rmtree(results)


# -- gcdbench llm ledger ------------------------------------------------------------------------

QWEN = {"backend": "llamacpp", "model": "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "sha256": "q"}
GPT = {"backend": "openai", "model": "gpt-4o-mini"}
LEDGER_KINDS = ("select-similar-instance", "select-category")
LEDGER_STATUSES = ("ok", "parse-failure")
DAY = 86400.0


@pytest.fixture(scope="module")
def ledger_file(work: Path) -> Path:
    """A real ledger of 24 answers: two models, two kinds, two statuses, a third of them
    40 days old (so --older-than selects some and not others)."""
    import time

    path = work / "ledger.sqlite"
    ledger = Ledger(path)
    rows = []
    for n in range(24):
        identity = QWEN if n % 2 else GPT
        kind = LEDGER_KINDS[n % 4 // 2]
        entry = Entry(
            key=hashlib.sha256(f"answer {n}".encode()).hexdigest(),
            kind=kind,
            identity=identity,
            template_id=f"{kind}/glean-v{1 + n % 3 // 2}",
            template_sha256="t" * 64,
            raw_text=f"Choice {n % 3 + 1}",
            value=n % 3,
            status=LEDGER_STATUSES[n % 5 == 0],
            confidence=0.5,
            option_logprobs=None,
            prompt_tokens=100,
            completion_tokens=3,
            latency_s=0.25,
            cost_usd=None if n % 2 else 0.001,
            run_hash="r",
        )
        rows.append(_row_of(entry, time.time() - (40 * DAY if n % 3 == 0 else 0)))
    assert ledger.insert_rows(rows) == 24
    ledger.close()
    return path


def _row_of(entry: Entry, created_at: float) -> tuple[Any, ...]:
    """An entry as a row in COLUMNS order, as an export file or another ledger holds it."""
    values = {
        "key": entry.key,
        "kind": entry.kind,
        "identity": json.dumps(dict(entry.identity), sort_keys=True, separators=(",", ":")),
        "template_id": entry.template_id,
        "template_sha256": entry.template_sha256,
        "raw_text": entry.raw_text,
        "value_json": json.dumps(entry.value),
        "status": entry.status,
        "confidence": entry.confidence,
        "option_logprobs_json": None,
        "prompt_tokens": entry.prompt_tokens,
        "completion_tokens": entry.completion_tokens,
        "latency_s": entry.latency_s,
        "cost_usd": entry.cost_usd,
        "created_at": created_at,
        "run_hash": entry.run_hash,
    }
    return tuple(values[c] for c in COLUMNS)


def _answers(path: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return sorted(db.execute(f"SELECT {','.join(COLUMNS)} FROM answers"))


DURATIONS = st.one_of(
    st.sampled_from(["30d", "1h", "90s", "2w", "45m", "0s", "-1d", "1.5h", "1e3s", "10y"]),
    st.sampled_from(["30 d", "30D", " 12h ", "99999999999999999999w", "0.0001s", "d", "30"]),
    st.tuples(st.integers(0, 10**6), st.sampled_from("smhdwy")).map(lambda t: f"{t[0]}{t[1]}"),
    JUNK,
)
FILTERS = {
    "--model": st.sampled_from(
        [
            "openai:gpt-4o-mini",
            "gpt-4o-mini",
            "llamacpp:Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF",
            "llamacpp:smollm2-135m",
        ]
    ),
    "--kind": st.sampled_from([*LEDGER_KINDS, "characterize-cluster"]),
    "--template": st.sampled_from([f"{k}/glean-v{v}" for k in LEDGER_KINDS for v in (1, 2, 3)]),
    "--older-than": DURATIONS,
    "--status": st.sampled_from([*LEDGER_STATUSES, "no-correct-option"]),
}


@st.composite
def ledger_filters(draw: Any) -> list[str]:
    chosen = draw(st.lists(st.sampled_from(sorted(FILTERS)), max_size=3, unique=True))
    return [x for flag in chosen for x in (flag, draw(_often(FILTERS[flag], JUNK)))]


def _ledger_argv(draw_before: bool, path: Path, command: list[str]) -> list[str]:
    """``--ledger`` before the subcommand or after it: both forms are documented."""
    if draw_before:
        return ["llm", "ledger", "--ledger", str(path), *command]
    return ["llm", "ledger", *command, "--ledger", str(path)]


@examples(80)
@given(filters=ledger_filters(), before=st.booleans())
def test_ledger_prune_filters_select_exactly_what_a_dry_run_counts(
    filters: list[str], before: bool, ledger_file: Path, work: Path
) -> None:
    """A dry run names how many answers the filters select and changes nothing; the prune
    then deletes exactly those, or both stop with the same line and the file is untouched."""
    tried("ledger_prune_filters")
    path = fresh_dir(work, "ledger-") / "ledger.sqlite"
    shutil.copy(ledger_file, path)
    held = _answers(path)
    dry_argv = _ledger_argv(before, path, ["prune", "--dry-run", *filters])
    dry = invoke(dry_argv)
    dry_line = handled(dry, dry_argv)
    assert _answers(path) == held
    argv = _ledger_argv(before, path, ["prune", *filters])
    line = handled(invoke(argv), argv)
    if dry_line is not None:
        assert line == dry_line and _answers(path) == held
        return
    assert line is None
    [would] = [w for w in dry.output.split("\n") if w.startswith("would delete ")]
    selected = int(would.split()[2])
    assert len(_answers(path)) == len(held) - selected
    shutil.rmtree(path.parent)


@examples(60)
@given(filters=ledger_filters(), before=st.booleans())
def test_ledger_export_writes_the_selection_or_nothing(
    filters: list[str], before: bool, ledger_file: Path, work: Path
) -> None:
    tried("ledger_export_filters")
    folder = fresh_dir(work, "export-")
    out = folder / "answers.jsonl"
    held = _answers(ledger_file)
    argv = _ledger_argv(before, ledger_file, ["export", str(out), *filters])
    line = handled(invoke(argv), argv)
    assert _answers(ledger_file) == held
    if line is not None:
        assert not out.exists()
        return
    rows = [json.loads(text) for text in out.read_text(encoding="utf-8").splitlines()]
    if not filters:
        assert len(rows) == len(held)
    else:  # the same filters select the same answers for prune
        dry_argv = _ledger_argv(before, ledger_file, ["prune", "--dry-run", *filters])
        dry = invoke(dry_argv)
        assert handled(dry, dry_argv) is None
        assert f"would delete {len(rows)} answers" in dry.output
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def exported(ledger_file: Path, work: Path) -> list[dict[str, Any]]:
    """The ledger's answers as `gcdbench llm ledger export` writes them."""
    out = work / "exported.jsonl"
    argv = ["llm", "ledger", "export", str(out), "--ledger", str(ledger_file)]
    assert handled(invoke(argv), argv) is None
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


@st.composite
def export_files(draw: Any, rows: list[dict[str, Any]]) -> bytes:
    """An export with some rows changed (a column set to anything, or dropped), some lines
    replaced by malformed ones, or any bytes at all."""
    if draw(st.integers(0, 9)) == 9:
        return draw(st.binary(max_size=200))
    lines: list[bytes] = []
    for row in draw(st.lists(st.sampled_from(rows), max_size=6)):
        row = dict(row)
        change = draw(st.integers(0, 5))
        column = draw(st.sampled_from(COLUMNS))
        if change == 4:
            row[column] = draw(PLAN_VALUES)
        elif change == 5:
            row.pop(column)
        text = json.dumps(row, ensure_ascii=draw(st.booleans())).encode()
        lines.append(draw(BAD_LINES) if draw(st.integers(0, 9)) == 9 else text)
    return b"\n".join(lines) + b"\n"


@examples(40)
@given(data=st.data(), fresh=st.booleans())
def test_ledger_import_adds_checked_rows_or_nothing(
    data: st.DataObject,
    fresh: bool,
    exported: list[dict[str, Any]],
    ledger_file: Path,
    work: Path,
) -> None:
    """Every line is checked before anything is written: an import adds the rows it counts,
    or stops with one line leaving the ledger as it was (and creating none)."""
    tried("ledger_import_files")
    folder = fresh_dir(work, "import-")
    file = folder / "answers.jsonl"
    file.write_bytes(data.draw(export_files(exported)))
    target = folder / "target.sqlite"
    if not fresh:
        shutil.copy(ledger_file, target)
    held = _answers(target) if target.exists() else None
    argv = ["llm", "ledger", "import", str(file), "--ledger", str(target)]
    result = invoke(argv)
    line = handled(result, argv)
    event("imported" if line is None else "stopped: " + _gist(line.removeprefix("error: ")))
    if line is not None:
        assert (_answers(target) if target.exists() else None) == held
        return
    found = re.search(r": (\d+) added, \d+ already present", " ".join(result.output.split()))
    assert found is not None, result.output
    added = int(found.group(1))
    assert len(_answers(target)) == len(held or []) + added
    shutil.rmtree(folder)


# -- sweep plan files ---------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """``value`` as TOML (inline tables and arrays), for plans written by the properties."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):
        # JSON escapes every control character TOML forbids in a string except DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"no TOML for {value!r}")


def toml_document(plan: dict[str, Any]) -> str:
    return "".join(f"{toml_value(str(k))} = {toml_value(v)}\n" for k, v in plan.items())


PLAN_SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["", " ", "oracle", "0-2", "smoke", "merge", "0.5usd", "\x00", "a" * 300]),
)
PLAN_VALUES = st.recursive(
    PLAN_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=2)
    ),
    max_leaves=4,
)
FIELD_NAMES = sorted({f.name for m in METHODS for f in fields_of(registry.get("method", m))})
NEAR: dict[str, st.SearchStrategy[Any]] = {
    "results_dir": st.sampled_from(["", " ", "results/x", "/no/such/folder"]),
    "data_dir": st.sampled_from(["", "/no/such/folder", "."]),
    "ledger": st.sampled_from(["", "ledger.sqlite", "/no/such/ledger.sqlite"]),
    "llm_offline": st.booleans(),
    "max_runs": st.integers(-1, 5000),
    "encoder": st.sampled_from(
        ["bag-of-words", "all-MiniLM-L6-v2", "", "nosuch", "\x00", "a" * 300]
    ),
    "llm": st.one_of(LLM_SPECS, st.just("oracle")),
    "llm_options": st.dictionaries(
        OPTION_KEYS, st.one_of(st.just("0.7"), PLAN_SCALARS), max_size=2
    ),
    "llm_budget": st.one_of(BUDGETS, st.integers(-5, 10**6), st.booleans()),
    "datasets": st.one_of(
        st.lists(st.sampled_from(["massive_scenario", "banking", "nosuch", ""]), max_size=2),
        st.sampled_from(DATASETS),
    ),
    "known_ratios": st.one_of(
        st.lists(st.sampled_from([0.25, 0.5, 1, 0, 1.5, 1e-9, math.nan, "0.5"]), max_size=2),
        st.floats(),
    ),
    "seeds": st.one_of(
        st.sampled_from(["0", "0-2", "2-0", "", "-1", "0,1", "x"]),
        st.lists(st.integers(-2, 2**33), max_size=3),
        st.integers(),
    ),
    "labeled_ratio": st.one_of(st.sampled_from([0.1, 1, 0, 1.5, "0.1", math.nan]), st.floats()),
    "name": _often(st.sampled_from(METHODS), JUNK),
    "preset": st.sampled_from(["smoke", "cpu", "paper", "fast", ""]),
    "params": st.dictionaries(st.sampled_from([*FIELD_NAMES, "nosuch"]), PLAN_SCALARS, max_size=3),
    "ablate": st.one_of(
        st.sampled_from([[[]], [["merge"]], [[], ["merge"]], [["x"]], ["merge"], [], [[1]]]),
        st.lists(st.lists(st.sampled_from(["merge", "seeds", "demo", "llm", ""]))),
    ),
    "variant": st.sampled_from(["paper", "official", "", "other"]),
    "refine": st.sampled_from(["silr", "", "nosuch"]),
    "refine_params": st.dictionaries(st.text(max_size=6), PLAN_SCALARS, max_size=2),
}
TOP_PLAN_KEYS = [
    "results_dir", "data_dir", "ledger", "llm_offline", "max_runs", "encoder", "llm",
    "llm_options", "llm_budget", "nosuch",
]  # fmt: skip
AXIS_PLAN_KEYS = ["datasets", "known_ratios", "seeds", "labeled_ratio", "nosuch"]
METHOD_PLAN_KEYS = [
    "name", "preset", "params", "ablate", "variant", "refine", "refine_params", "encoder",
    "llm", "llm_options", "llm_budget", "datasets", "known_ratios", "seeds", "labeled_ratio",
    "nosuch",
]  # fmt: skip


def _plan_value(key: str) -> st.SearchStrategy[Any]:
    near = NEAR.get(key, PLAN_VALUES)
    return st.integers(0, 3).flatmap(lambda i: PLAN_VALUES if i == 3 else near)


@st.composite
def plans(draw: Any) -> dict[str, Any]:
    """A small valid plan (K-means and LLM clustering on MASSIVE scenario) with one to four
    keys set to values near what they take, or to anything TOML holds."""
    plan: dict[str, Any] = {
        "llm": "oracle",
        "axes": {"datasets": ["massive_scenario"], "known_ratios": [0.5], "seeds": "0"},
        "methods": [{"name": "kmeans"}, {"name": "llm-cluster", "preset": "smoke"}],
    }
    if draw(st.booleans()):
        plan["methods"].append({"name": draw(st.sampled_from(METHODS))})
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.sampled_from(["top", "axes", "method"]))
        if where == "top":
            key = draw(st.sampled_from(TOP_PLAN_KEYS))
            plan[key] = draw(_plan_value(key))
        elif where == "axes":
            key = draw(st.sampled_from(AXIS_PLAN_KEYS))
            plan["axes"][key] = draw(_plan_value(key))
        else:
            entry = draw(st.sampled_from(plan["methods"]))
            key = draw(st.sampled_from(METHOD_PLAN_KEYS))
            entry[key] = draw(_plan_value(key))
    return plan


def _plan_commands(path: Path, results: Path, stub_data: Path, *, known_bug: bool = False) -> None:
    """``sweep --dry-run`` and ``status`` on ``path``: both succeed or both stop with the same
    one line; neither writes a results folder or to the cache."""
    before = run_cache()
    lines = []
    for command in (["sweep", str(path), "--dry-run"], ["status", str(path)]):
        argv = [*command, "--results-dir", str(results), "--data-dir", str(stub_data)]
        result = invoke(argv)
        line = handled(result, argv, known_bug=known_bug)
        if line is None and command[0] == "sweep":
            assert " specs: " in result.output, result.output
        lines.append(line)
    assert lines[0] == lines[1], lines
    nothing_written(before, results)  # a dry run and a status write nothing, ever
    assert not results.exists()


@examples(80)
@given(plan=plans())
def test_any_plan_file_dry_runs_or_stops_with_one_line(
    plan: dict[str, Any], work: Path, stub_data: Path
) -> None:
    tried("plan_files")
    folder = fresh_dir(work, "plan-")
    path = folder / "plan.toml"
    path.write_text(toml_document(plan), encoding="utf-8")
    _plan_commands(path, folder / "results", stub_data)
    shutil.rmtree(folder)


EXAMPLE_PLAN = (Path(__file__).resolve().parents[1] / "examples" / "sweep-smoke.toml").read_bytes()


@st.composite
def mangled_plans(draw: Any) -> bytes:
    """The shipped example plan with bytes cut, inserted or replaced, or any bytes at all."""
    data = EXAMPLE_PLAN
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=200))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        end = min(len(data), at + draw(st.integers(0, 40)))
        insert = draw(
            st.one_of(
                st.binary(max_size=8),
                st.text(max_size=8).map(lambda t: t.encode("utf-8")),
                st.sampled_from([b"[", b"]", b"=", b'"', b"\n", b"[[methods]]\n", b"\xff", b"#"]),
            )
        )
        data = data[:at] + insert + data[end:]
    return data


@examples(60)
@given(data=mangled_plans())
def test_a_mangled_plan_file_dry_runs_or_stops_with_one_line(
    data: bytes, work: Path, stub_data: Path
) -> None:
    tried("plan_files_mangled")
    folder = fresh_dir(work, "mangled-")
    path = folder / "plan.toml"
    path.write_bytes(data)
    _plan_commands(path, folder / "results", stub_data)
    shutil.rmtree(folder)


# -- a user's own dataset files ---------------------------------------------------------------

USER_PLUGIN = "test-bad-input-user-data"
USER_CLASSES = range(1, 7)
JSONL_FILE = "rows.jsonl"
TSV_FILES = ("train.tsv", "dev.tsv", "test.tsv")


def user_dataset_name(layout: str, k: int) -> str:
    return f"user_{'jsonl' if layout == 'single-jsonl' else 'tsv'}_k{k}"


def _user_definitions() -> list[DatasetDefinition]:
    """A definition per layout and class count, as a user's plugin declares one for their
    own files: no published sha256, no download URL, files found under --data-dir."""
    out = []
    for k in USER_CLASSES:
        jsonl = (RemoteFile(JSONL_FILE, "", ""),)
        tsv = tuple(RemoteFile(n, "", "", required=n != "dev.tsv") for n in TSV_FILES)
        for layout, files in (("single-jsonl", jsonl), ("gcd-tsv", tsv)):
            name = user_dataset_name(layout, k)
            out.append(DatasetDefinition(name, "a user's own data", layout, files, k))
    return out


class _UserData:
    @hookimpl
    def register_datasets(self, register: Any) -> None:
        for definition in _user_definitions():
            register(definition)


@pytest.fixture(scope="module")
def user_datasets() -> Iterator[None]:
    registry.register_plugin(_UserData(), USER_PLUGIN)
    yield
    registry.unregister_plugin(USER_PLUGIN)


LABELS = _often(
    st.sampled_from(["a", "b", "c", "d", "B", "two words", "ü", "x_1", "1", "10", "e", "f"]),
    st.text(max_size=6),
)
CLEAN_TEXTS = st.text("abcdefgh ", min_size=1, max_size=20)
ANY_TEXTS = st.one_of(
    CLEAN_TEXTS,
    st.sampled_from(["", " ", "same", "hello world", "\t", "two\nlines", 'a "quote"', "a\tb"]),
    st.text(st.characters(codec="utf-8"), max_size=30),
)
BAD_LINES = st.sampled_from(
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"input": 1, "label": "a"}',
        b'{"label": "a"}',
        b'{"input": "x", "label": ""}',
        b'{"input": "x", "label": null}',
        b'{"input": "x\\u0000", "label": "a"}',
        b'{"input": "x", "label": "a\\u001b"}',
        b"\xff\xfe",
        b'{"input": "x", "label": "a"',
        b"a\tb\tc",
        b'"unclosed\tb',
        b"text\tlabel",
        b"\t",
        b" ",
    ]
)


@st.composite
def rows(draw: Any, most: int = 60, of: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(text, label) rows: a few classes (mostly ``of``'s, if given) of 0 to 20 rows each,
    in any order; in one table of four, texts of any characters (controls, empty ones,
    repeats)."""
    k = draw(_often(st.integers(3, 5), st.integers(1, 2)))
    labels = LABELS if not of else _often(st.sampled_from(list(of)), LABELS)
    classes = draw(st.lists(labels, min_size=1, max_size=k, unique=True))
    texts = ANY_TEXTS if draw(st.integers(0, 3)) == 3 else CLEAN_TEXTS
    sizes = _often(st.integers(5, 20), st.integers(0, 4))
    out = [(draw(texts), c) for c in classes for _ in range(draw(sizes))]
    return draw(st.permutations(out[:most]))


def _mangle(draw: Any, lines: list[bytes]) -> list[bytes]:
    """Now and then a line replaced by, or joined with, a malformed one."""
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.integers(0, 2)) < 2 or not lines:
            continue
        at = draw(st.integers(0, len(lines)))
        lines = [*lines[:at], draw(BAD_LINES), *lines[at + 1 :]]
    return lines


def _encode(draw: Any, lines: list[bytes]) -> bytes:
    """Lines as a file: LF or CRLF, a BOM or not, a final newline or not."""
    end = b"\r\n" if draw(st.integers(0, 5)) == 5 else b"\n"
    data = end.join(lines) + (b"" if draw(st.integers(0, 5)) == 5 else end)
    return (b"\xef\xbb\xbf" if draw(st.integers(0, 5)) == 5 else b"") + data


def _jsonl(draw: Any, table: list[tuple[str, str]]) -> bytes:
    ascii_only = draw(st.booleans())
    lines = [
        json.dumps({"task": "t", "input": t, "label": y}, ensure_ascii=ascii_only).encode()
        for t, y in table
    ]
    return _encode(draw, _mangle(draw, lines))


def _tsv(draw: Any, table: list[tuple[str, str]]) -> bytes:
    buffer = io.StringIO(newline="")
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    writer = csv.writer(buffer, delimiter="\t", quoting=quoting, lineterminator="\n")
    header = draw(_often(st.just(["text", "label"]), st.sampled_from([["label", "text"], ["x"]])))
    writer.writerow(header)
    for row in table:
        writer.writerow(row)
    lines = buffer.getvalue().encode("utf-8").split(b"\n")
    return _encode(draw, _mangle(draw, [x for x in lines if x]))


@st.composite
def user_folders(draw: Any) -> tuple[str, dict[str, bytes]]:
    """A dataset name (layout and class count) and the files of its folder."""
    layout = draw(st.sampled_from(["single-jsonl", "gcd-tsv"]))
    train = draw(rows())
    labels = {y.lower() for _, y in train}
    k = len(labels) if draw(st.integers(0, 5)) < 5 else draw(st.sampled_from(USER_CLASSES))
    k = min(max(k, 1), max(USER_CLASSES))
    if layout == "single-jsonl":
        files = {JSONL_FILE: _jsonl(draw, train)}
    else:
        seen = sorted({y for _, y in train})
        files = {"train.tsv": _tsv(draw, train), "test.tsv": _tsv(draw, draw(rows(20, seen)))}
        if draw(st.booleans()):
            files["dev.tsv"] = _tsv(draw, draw(rows(10, seen)))
        if draw(st.integers(0, 9)) == 9:
            del files[draw(st.sampled_from(sorted(files)))]
    if draw(st.integers(0, 5)) == 5:
        names = b"label\tname\n" + b"".join(f"{y}\tthe {y}\n".encode() for y in sorted(labels))
        files["label_names.tsv"] = draw(st.sampled_from([names, b"label\tname\n", b"x\n"]))
    return user_dataset_name(layout, k), files


def write_user_folder(base: Path, name: str, files: dict[str, bytes]) -> Path:
    """A data root holding the one dataset folder."""
    root = fresh_dir(base, "data-")
    (root / name).mkdir()
    for file, data in files.items():
        (root / name / file).write_bytes(data)
    return root


RATIOS = _often(st.sampled_from([0.5, 1.0, 0.75, 0.25]), st.floats(0.001, 1))


@examples(150)
@given(folder=user_folders(), known=RATIOS, labeled=RATIOS, seed=st.integers(0, MAX_SEED))
def test_a_dataset_folder_loads_splits_and_checks_or_stops_with_one_line(
    folder: tuple[str, dict[str, bytes]],
    known: float,
    labeled: float,
    seed: int,
    user_datasets: None,
    work: Path,
) -> None:
    """What a run does with the files, step by step: every failure is a one-line
    GcdbenchError, every issue found a one-line message a record can hold."""
    tried("dataset_folders")
    name, files = folder
    root = write_user_folder(work, name, files)
    definition = registry.get("dataset", name)
    try:
        parts = definition.load(root / name)
        issues = check_dataset(parts, definition, known_ratio=known, labeled_ratio=labeled)
        split = make_split(parts, known_ratio=known, labeled_ratio=labeled, seed=seed)
        issues += check_dataset(parts, definition, split=split)
    except GcdbenchError as exc:
        assert "\n" not in str(exc) and str(exc).strip(), str(exc)
        event("stopped: " + _gist(str(exc)))
        return
    finally:
        shutil.rmtree(root)
    event("loaded, split and checked")
    for issue in issues:
        assert "\n" not in issue.message and issue.severity in ("error", "warning", "info")
        json.dumps(issue.to_dict(), allow_nan=False)
    assert len(parts.classes) == definition.num_classes
    task, gold = build_task(parts, split, task_word=definition.task)
    assert len(task.test) == len(parts.test) == len(gold.test_y)
    assert set(split.known_classes) <= set(parts.classes)


#: Three classes of three rows: the single-jsonl-v1 partition leaves the test part empty, and
#: K-means on no test text crashed after the split was written (now a data error).
NO_TEST_ROWS = (
    user_dataset_name("single-jsonl", 3),
    {
        JSONL_FILE: "".join(
            json.dumps({"input": f"text {i}", "label": y}) + "\n" for y in "abc" for i in range(3)
        ).encode()
    },
)


@examples(60)
@given(folder=user_folders(), known=RATIOS, labeled=RATIOS, seed=st.integers(0, 9))
@example(folder=NO_TEST_ROWS, known=0.5, labeled=0.5, seed=0)
def test_data_check_reports_or_stops_with_one_line(
    folder: tuple[str, dict[str, bytes]],
    known: float,
    labeled: float,
    seed: int,
    user_datasets: None,
    work: Path,
) -> None:
    tried("dataset_folders_data_check")
    name, files = folder
    root = write_user_folder(work, name, files)
    argv = ["data", "check", name, "--data-dir", str(root), "--no-download", "--json"]
    argv += ["--known-ratio", repr(known), "--labeled-ratio", repr(labeled), "--seed", str(seed)]
    before = run_cache()
    result = invoke(argv)
    line = handled(result, argv)
    event("reported" if line is None else "stopped: " + _gist(line.removeprefix("error: ")))
    if line is None:
        report = json.loads(result.stdout)
        assert report["classes"] == registry.get("dataset", name).num_classes
        assert all(i["severity"] != "error" for i in report["issues"])
    nothing_written(before)
    shutil.rmtree(root)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # repeated texts
@examples(25)
@given(folder=user_folders(), known=st.sampled_from([0.5, 1.0, 0.75]), seed=st.integers(0, 3))
@example(folder=NO_TEST_ROWS, known=0.5, seed=0)
def test_a_run_on_a_dataset_folder_records_whole_or_writes_nothing(
    folder: tuple[str, dict[str, bytes]],
    known: float,
    seed: int,
    user_datasets: None,
    work: Path,
) -> None:
    """K-means on the bag-of-words encoder (a fraction of a second a run): a record with its
    predictions, or one line and an untouched store and cache."""
    tried("dataset_folders_run")
    name, files = folder
    root = write_user_folder(work, name, files)
    results = fresh_dir(work, "results-")
    argv = ["run", "kmeans", "-d", name, "--data-dir", str(root), "--results-dir", str(results)]
    argv += ["--encoder", "bag-of-words", "--known-ratio", repr(known), "--seed", str(seed), "-q"]
    before = run_cache()
    line = handled(invoke(argv), argv)
    event("recorded" if line is None else "stopped: " + _gist(line.removeprefix("error: ")))
    written = files_under(results)
    if line is not None:
        nothing_written(before, results)
    else:
        [record] = [p for p in written if p.endswith("record.json")]
        assert record.replace("record.json", "predictions.csv") in written
        assert len([p for p in written if p.startswith("splits/")]) == 1
        stored = json.loads((results / record).read_text(encoding="utf-8"))
        shas = {f["name"]: f["sha256"] for f in stored["data"]["files"]}
        assert shas == {n: hashlib.sha256(b).hexdigest() for n, b in files.items() if n in shas}
    shutil.rmtree(root)
    shutil.rmtree(results)


# -- end to end: a real process, a real terminal's bytes ----------------------------------------

#: Argument bytes a shell passes that are not UTF-8 reach Python as lone surrogates.
NOT_UTF8 = b"bank\xffing"


def _e2e_cases(work: Path, stub: Path, ledger: Path) -> dict[str, list[bytes | str]]:
    plan = work / "e2e-plan.toml"
    plan.write_bytes(EXAMPLE_PLAN.replace(b"[[methods]]", b"[[methods]", 1))
    return {
        "run: a dataset name that is not UTF-8": ["run", "kmeans", "-d", NOT_UTF8],
        "feedback eval: a template no kind has": [
            "feedback", "eval", "-d", "banking", "--llm", "oracle", "--ask", "template=glean-v9",
        ],
        "llm ledger: a filter that is not UTF-8": [
            "llm", "ledger", "prune", "--kind", NOT_UTF8, "--ledger", str(ledger),
        ],
        "sweep: a plan cut mid-table": ["sweep", str(plan), "--dry-run"],
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "run: a dataset name that is not UTF-8",
        "feedback eval: a template no kind has",
        "llm ledger: a filter that is not UTF-8",
        "sweep: a plan cut mid-table",
    ],
)
def test_a_real_process_prints_one_line_and_writes_nothing(
    case: str, work: Path, stub_data: Path, ledger_file: Path
) -> None:
    folder = fresh_dir(work, "e2e-")
    ledger = folder / "ledger.sqlite"
    shutil.copy(ledger_file, ledger)
    held = _answers(ledger)
    args = _e2e_cases(folder, stub_data, ledger)[case]
    results = folder / "results"
    extra = (
        [] if args[0] == "llm" else ["--results-dir", str(results), "--data-dir", str(stub_data)]
    )
    env = {**os.environ, "PYTHONIOENCODING": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "gcdbench", *args, *extra], capture_output=True, env=env, timeout=300
    )
    stderr = proc.stderr.decode("utf-8", "backslashreplace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and b"Traceback" not in proc.stdout + proc.stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert not results.exists() and _answers(ledger) == held


def _blocked_run(blocked: Path, stub: Path, *args: str, known_bug: bool = False) -> str:
    argv = ["run", *args, "--results-dir", str(blocked), "--data-dir", str(stub), "-q"]
    return failed_with_one_line(invoke(argv), argv, known_bug=known_bug)


def test_an_llm_option_no_backend_reads_is_refused_up_front(
    blocked_results: Path, stub_data: Path
) -> None:
    """A mistyped backend option stops before the run, not when the backend opens mid-run."""
    line = _blocked_run(
        blocked_results, stub_data, "llm-cluster", "--llm", "openai:gpt-4o-mini",
        "--llm-option", "temprature=0.7", known_bug=False,
    )  # fmt: skip
    assert NOT_WRITABLE not in line and "temprature" in line


# -- regressions: inputs these properties found crashing, now refused with one line --------------


def test_a_request_budget_longer_than_int_reads(blocked_results: Path, stub_data: Path) -> None:
    line = _blocked_run(
        blocked_results, stub_data, "llm-cluster", "--llm", "openai:gpt-4o-mini",
        "--llm-budget", "9" * 5000,
    )  # fmt: skip
    assert "--llm-budget" in line


def test_a_dollar_budget_under_a_ten_thousandth_is_accepted(
    blocked_results: Path, stub_data: Path
) -> None:
    line = _blocked_run(
        blocked_results, stub_data, "llm-cluster", "--llm", "openai:gpt-4o-mini",
        "--llm-budget", "0.00001usd",
    )  # fmt: skip
    assert NOT_WRITABLE in line


def test_two_request_budgets_are_refused(blocked_results: Path, stub_data: Path) -> None:
    line = _blocked_run(
        blocked_results, stub_data, "llm-cluster", "--llm", "openai:gpt-4o-mini",
        "--llm-budget", "1,2",
    )  # fmt: skip
    assert NOT_WRITABLE not in line


def test_an_llm_option_holding_a_semicolon_is_refused() -> None:
    try:
        canonical = resolve_llm("openai:gpt-4o-mini", {"base_url": "http://h/a;b"})
    except GcdbenchError:
        return  # refused up front, with one line
    parse_llm_spec(canonical)  # what the run does with the spec it stored


def test_an_encoder_name_longer_than_a_file_name(blocked_results: Path, stub_data: Path) -> None:
    line = _blocked_run(blocked_results, stub_data, "kmeans", "--encoder", "a" * 300)
    assert "encoder" in line


def test_a_prompt_template_longer_than_a_file_name(blocked_results: Path, stub_data: Path) -> None:
    line = _blocked_run(
        blocked_results, stub_data, "glean", "--llm", "oracle", "-p", "prompt_template=" + "a" * 300
    )
    assert "prompt_template" in line or "template" in line


def test_a_method_that_fine_tunes_refuses_an_encoder_without_weights_up_front(
    blocked_results: Path, stub_data: Path
) -> None:
    line = _blocked_run(
        blocked_results, stub_data, "mtp", "--preset", "smoke", "--encoder", "bag-of-words"
    )
    assert NOT_WRITABLE not in line and "weights" in line


def test_an_encoder_folder_without_a_model_writes_nothing(shared_data: Path, work: Path) -> None:
    results = fresh_dir(work, "results-")
    empty = fresh_dir(work, "not-a-model-")
    argv = ["run", "kmeans", "-d", "massive_scenario", "--encoder", str(empty)]
    argv += ["--results-dir", str(results), "--data-dir", str(shared_data), "-q"]
    failed_with_one_line(invoke(argv), argv, known_bug=True)
    assert files_under(results) == {}


def test_a_plan_with_an_integer_longer_than_int_reads(work: Path, stub_data: Path) -> None:
    folder = fresh_dir(work, "plan-")
    path = folder / "plan.toml"
    path.write_text("max_runs = " + "9" * 5000 + "\n", encoding="utf-8")
    _plan_commands(path, folder / "results", stub_data, known_bug=True)
