"""``gcdbench sweep PLAN.toml`` runs a plan file; ``gcdbench status PLAN.toml`` reports on it.

A plan (gcdbench/runner/plan_file.py, docs/sweeps.md) holds the axes of ``gcdbench run``
and per-method parameters, presets and ablation sets. Its specs are built by the code
``gcdbench run`` uses (:func:`gcdbench.cli.run.resolve_specs`), so a plan's run has the run
id the same ``gcdbench run`` command would give, and every problem with a plan stops with
one line naming the file, the key and the fix before anything is written.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
from rich import box
from rich.markup import escape
from rich.table import Table

from gcdbench import paths, registry
from gcdbench.api.executor import Outcome, check_workers
from gcdbench.api.k_estimator import ESTIMATE_PREFIX, parse_k
from gcdbench.api.spec import RunSpec
from gcdbench.cli.common import (
    console,
    count_ints,
    data_dir_option,
    expand_ints,
    parse_floats,
    parse_int_ranges,
    parse_names,
    ray_no_shared_disk_option,
    ray_resources_option,
    require_text,
    results_dir_option,
)
from gcdbench.cli.progress import make_reporter
from gcdbench.cli.run import resolve_specs, resumed_note, with_variant
from gcdbench.data.store import user_data_root
from gcdbench.errors import GcdbenchError
from gcdbench.runner.plan_file import AxisValue, MethodEntry, Plan, load_plan
from gcdbench.runner.sweep_status import (
    BUSY,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    STALE,
    STATES,
    FailureLog,
    SpecStatus,
    StatusReader,
    describe,
    summary,
)

T = TypeVar("T")

#: States a sweep runs; failed ones too with --retry-failed.
TO_RUN = (PENDING, STALE)
#: ``gcdbench run`` flags, as the plan keys that say the same (messages of the shared checks).
PLAN_WORDS = {
    "--known-ratio": "known_ratios",
    "--labeled-ratio": "labeled_ratio",
    "--seed": "seeds",
    "--dataset": "datasets",
    "--preset": "preset",
    "--ablate": "ablate",
    "--encoder": "encoder",
    "--variant": "variant",
    "--llm": "llm",
    "--llm-option": "llm_options",
    "--llm-budget": "llm_budget",
    "--refine": "refine",
    "--refine-param": "refine_params",
    "--k": "k",
    "--param": "params",
    "-p": "params",
    "--data-dir": "data_dir",
}
_FLAG = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)(?![\w-])")
#: How many stale specs ``status`` explains one by one.
SHOWN_STALE = 10
STYLES = {DONE: "green", RUNNING: "cyan", FAILED: "red", STALE: "yellow", PENDING: "default"}


@dataclass(frozen=True)
class PlannedRun:
    """A spec and the plan row it belongs to (``status`` counts per row)."""

    spec: RunSpec
    label: str  # the method as the plan's tables show it

    @property
    def row(self) -> tuple[str, str, float]:
        return self.label, self.spec.dataset, self.spec.known_ratio


plan_argument = click.argument("plan_file", metavar="PLAN.toml")


@click.command()
@plan_argument
@click.option("--executor", default="local", show_default=True, help="How to run the plan.")
@click.option("--workers", type=int, default=None, help="Workers for parallel executors (>= 1).")
@results_dir_option
@data_dir_option
@click.option("--retry-failed", is_flag=True, help="Also re-run specs whose last run failed.")
@click.option("--dry-run", is_flag=True, help="Print every spec and its state; run nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display; the summary still prints.")
@click.option("--no-download", is_flag=True, help="Never download data; fail if it is missing.")
@ray_resources_option
@ray_no_shared_disk_option
def sweep(
    plan_file: str,
    executor: str,
    workers: int | None,
    results_dir: str | None,
    data_dir: str | None,
    retry_failed: bool,
    dry_run: bool,
    quiet: bool,
    no_download: bool,
    ray_resources: tuple[str, ...],
    ray_no_shared_disk: bool,
) -> None:
    """Run every spec of PLAN.toml that has no current record (docs/sweeps.md).

    Done specs are skipped, stale ones re-run; failed ones are listed and skipped unless
    --retry-failed. A bad plan stops with one line and exit code 2, before anything is
    written; exit code 1 when specs of the plan are left failed."""
    require_text(executor, "--executor", "pass local, processes or ray (gcdbench list executors)")
    check_workers(workers)
    plan = load_plan(Path(plan_file))
    planned = expand(plan)
    executor_cls = registry.get("executor", executor)
    from gcdbench.runner.ray_support import executor_options

    ray_settings = executor_options(
        executor, ray_resources, ray_no_shared_disk, sorted({p.spec.method for p in planned})
    )
    where = _locations(plan, results_dir, data_dir)
    reader = StatusReader(where.results, where.data)
    statuses = reader.statuses([p.spec for p in planned])
    if dry_run:
        _print_dry_run(planned, statuses, retry_failed)
        return
    _forget_failures(where.results, [s.spec for s in statuses if s.state == DONE])
    to_run = [s.spec for s in statuses if _runs(s, retry_failed)]
    _print_start(plan, statuses, to_run, retry_failed)
    if to_run:
        _run(plan, where, executor_cls, workers, to_run, quiet, no_download, ray_settings)
    final = reader.statuses([p.spec for p in planned])
    _print_table(planned, final)
    _print_lists(final, reader.notes)
    if any(s.state == FAILED for s in final):
        sys.exit(1)


@click.command()
@plan_argument
@results_dir_option
@data_dir_option
def status(plan_file: str, results_dir: str | None, data_dir: str | None) -> None:
    """Done / running / failed / stale / pending specs of PLAN.toml, per method, dataset and
    known ratio, with the reason of each failure (docs/sweeps.md says what each state
    detects). Reads the store and the data; writes nothing."""
    plan = load_plan(Path(plan_file))
    planned = expand(plan)
    where = _locations(plan, results_dir, data_dir)
    reader = StatusReader(where.results, where.data)
    statuses = reader.statuses([p.spec for p in planned])
    _print_table(planned, statuses)
    _print_lists(statuses, reader.notes)


# -- plan -> specs ---------------------------------------------------------------------------


def expand(plan: Plan) -> list[PlannedRun]:
    """Every spec of the plan, checked as ``gcdbench run`` checks its flags, in plan order
    (method entries, their ablation sets, then datasets x known ratios x seeds)."""
    axes = [_axes(plan, entry) for entry in plan.methods]
    _check_size(plan, axes)
    repeated = _repeated_names(plan)
    planned: list[PlannedRun] = []
    seen: dict[str, str] = {}
    for entry, (names, ratios, seeds) in zip(plan.methods, axes, strict=True):
        for ablation, specs in _entry_specs(plan, entry, names, ratios, seeds):
            where = _ablation_key(entry, ablation)
            for spec in specs:
                if spec.hash in seen:
                    raise plan.error(
                        where,
                        f"{describe(spec)} is already planned by {seen[spec.hash]}; "
                        "drop one of them",
                    )
                seen[spec.hash] = where
                label = spec.label + (f" [{spec.preset}]" if spec.preset else "")
                label += f" [{parse_k(spec.k).label}]" if spec.k else ""
                if entry.name in repeated:
                    label += f" #{entry.index}"
                planned.append(PlannedRun(spec, label))
    return planned


def _in_plan_words(message: str) -> str:
    """A shared check's message with the flags it names said as plan keys."""
    return _FLAG.sub(lambda m: PLAN_WORDS.get(m.group(1), m.group(1)), message)


def _axes(plan: Plan, entry: MethodEntry) -> tuple[list[str], list[float], list[tuple[int, int]]]:
    """The entry's axes, parsed by ``gcdbench run``'s own flag parsers."""
    return (
        _parsed(plan, entry.datasets, partial(parse_names, example='["banking"]')),
        _parsed(plan, entry.known_ratios, parse_floats),
        _parsed(plan, entry.seeds, parse_int_ranges),
    )


def _parsed(plan: Plan, axis: AxisValue, parse: Callable[[tuple[str, ...], str], T]) -> T:
    try:
        return parse(axis.values, axis.key.split()[-1])
    except GcdbenchError as exc:
        raise plan.error(axis.key, _in_plan_words(str(exc))) from None


def _check_size(plan: Plan, axes: Sequence[tuple[list[str], list[float], Any]]) -> None:
    """Counted from the ranges, before a seed list is built: seeds = "0-100000000" stops
    here, as ``--seeds`` does."""
    runs = sum(
        len(entry.ablate) * len(names) * len(ratios) * count_ints(seeds)
        for entry, (names, ratios, seeds) in zip(plan.methods, axes, strict=True)
    )
    if runs > plan.max_runs:
        raise plan.error(
            "max_runs",
            f"the plan has {runs} runs, more than max_runs = {plan.max_runs}; narrow the "
            f"axes or set max_runs = {runs} to run them all",
        )


def _entry_specs(
    plan: Plan,
    entry: MethodEntry,
    names: list[str],
    ratios: list[float],
    seed_ranges: list[tuple[int, int]],
) -> list[tuple[tuple[str, ...], list[RunSpec]]]:
    try:
        method_cls = registry.get("method", entry.name)
    except GcdbenchError as exc:
        raise plan.error(f"[[methods]] #{entry.index} name", str(exc)) from None
    try:
        overrides = with_variant(
            method_cls,
            dict(entry.params),
            entry.variant,
            variant_key="variant",
            param_key="params.variant",
        )
    except GcdbenchError as exc:
        raise plan.error(f"{entry.where} variant", _in_plan_words(str(exc))) from None
    request = _request(entry, method_cls.uses)
    out = []
    for ablation in entry.ablate:
        try:
            specs = resolve_specs(
                entry.name,
                names,
                ratios,
                expand_ints(seed_ranges),
                ablations=ablation,
                overrides=dict(overrides),
                **request,
            )
        except GcdbenchError as exc:
            raise plan.error(_ablation_key(entry, ablation), _in_plan_words(str(exc))) from None
        out.append((ablation, specs))
    return out


def _request(entry: MethodEntry, uses: Sequence[str]) -> dict[str, Any]:
    """``resolve_spec``'s keywords for the entry. A top-level LLM default reaches only
    methods that can take it (K-means in a plan of LLM methods is no error); a value the
    entry sets itself is checked as the flag is."""
    asks = "feedback" in uses
    takes_llm = asks or "llm" in uses
    own = entry.explicit
    return {
        "labeled_ratio": entry.labeled_ratio,
        "encoder": entry.encoder,
        "preset": entry.preset,
        "llm": entry.llm if takes_llm or "llm" in own else None,
        "llm_options": entry.llm_options if asks or "llm_options" in own else {},
        "llm_budget": entry.llm_budget if asks or "llm_budget" in own else None,
        "refine": entry.refine,
        "refine_overrides": dict(entry.refine_params),
        "k": _k_for(entry, uses),
    }


def _k_for(entry: MethodEntry, uses: Sequence[str]) -> str | None:
    """A top-level ``k = "estimate:NAME"`` reaches only methods that embed texts (estimators
    read the encoder's features), as a top-level llm reaches only methods that ask; a fixed K
    reaches every method, and a k the entry sets itself is checked as ``--k`` is."""
    estimates = entry.k is not None and entry.k.strip().startswith(ESTIMATE_PREFIX)
    if estimates and "k" not in entry.explicit and "encoder" not in uses:
        return None
    return entry.k


def _ablation_key(entry: MethodEntry, ablation: tuple[str, ...]) -> str:
    return f"{entry.where} ablate {list(ablation)}" if ablation else entry.where


def _repeated_names(plan: Plan) -> set[str]:
    names = [entry.name for entry in plan.methods]
    return {name for name in names if names.count(name) > 1}


# -- where -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Where:
    results: Path
    data: str | None


def _locations(plan: Plan, results_dir: str | None, data_dir: str | None) -> _Where:
    """The flags win over the plan's keys; relative paths are taken from the current folder,
    as the flags' are. Absolute, so workers elsewhere (Ray) read and write the same places."""
    require_text(results_dir, "--results-dir", "pass a folder or leave it out")
    require_text(data_dir, "--data-dir", "pass a folder or leave it out")
    data = data_dir or plan.data_dir
    try:
        user_data_root(data)  # a missing data folder fails here, before anything is written
    except GcdbenchError as exc:
        if data_dir is None and plan.data_dir is not None:
            raise plan.error("data_dir", _in_plan_words(str(exc))) from None
        raise
    results = paths.results_dir(results_dir or plan.results_dir).resolve()
    return _Where(results, str(Path(data).resolve()) if data else None)


# -- running -----------------------------------------------------------------------------------


def _runs(status: SpecStatus, retry_failed: bool) -> bool:
    return status.state in TO_RUN or (retry_failed and status.state == FAILED)


def _run(
    plan: Plan,
    where: _Where,
    executor_cls: Any,
    workers: int | None,
    specs: list[RunSpec],
    quiet: bool,
    no_download: bool,
    ray_settings: dict[str, Any],
) -> None:
    from gcdbench.runner.run import RunOptions
    from gcdbench.runner.store import ResultsStore
    from gcdbench.runner.sweep_status import sweep_job

    options = RunOptions(
        where.results,
        where.data,
        force=False,
        download=not no_download,
        llm_offline=plan.llm_offline,
        ledger=str(Path(plan.ledger).resolve()) if plan.ledger else None,
    )
    reporter = make_reporter(quiet)
    steps: list[Callable[[int], None]] = []  # the progress bar's, once it is shown

    def report(outcome: Outcome) -> None:
        reporter.message(_outcome_line(outcome))
        for step in steps:
            step(1)

    # Before the store is touched: an executor that cannot start (Ray not installed) is a
    # one-line error with nothing written.
    pool = executor_cls(workers=workers, on_outcome=report, **ray_settings)
    ResultsStore(options.results_dir).check_writable()
    with reporter.task(f"sweep {plan.path.name}", total=len(specs)) as step:
        steps.append(step)
        try:
            pool.map(partial(sweep_job, options=options), specs)
        except Exception as exc:  # a pool whose worker was killed (out of memory, a signal)
            console.print(
                f"[red]the {pool.name} executor stopped[/red] ({type(exc).__name__}: "
                f"{escape(str(exc))}); finished runs are recorded: run the sweep again to go on."
            )
            sys.exit(1)


def _forget_failures(results: Path, done: list[RunSpec]) -> None:
    """A failed spec that has since been run to a record (by ``gcdbench run``, say) has
    failed no longer: its failure record goes, as a successful sweep run removes it."""
    failures = FailureLog(results)
    for spec in done:
        if failures.path(spec).is_file():
            failures.clear(spec)


def _outcome_line(outcome: Outcome) -> str:
    line = f"{outcome.status} {describe(outcome.spec)}"
    if outcome.status in {"failed", "crashed", BUSY}:
        return f"{line}: {outcome.error}"
    return line + resumed_note(outcome)


# -- printing ----------------------------------------------------------------------------------


def _print_start(
    plan: Plan, statuses: list[SpecStatus], to_run: list[RunSpec], retry_failed: bool
) -> None:
    counts = summary(statuses)
    parts = [f"{len(statuses)} specs", f"{len(to_run)} to run"]
    parts += [f"{counts[DONE]} done"] if counts[DONE] else []
    if counts[FAILED] and not retry_failed:
        parts.append(f"{counts[FAILED]} failed (skipped; --retry-failed re-runs them)")
    parts += [f"{counts[RUNNING]} running elsewhere (skipped)"] if counts[RUNNING] else []
    console.print(f"[bold]{escape(str(plan.path))}[/bold]: " + ", ".join(parts), highlight=False)


def _print_table(planned: list[PlannedRun], statuses: list[SpecStatus]) -> None:
    rows: dict[tuple[str, str, float], dict[str, int]] = {}
    for run, status in zip(planned, statuses, strict=True):
        rows.setdefault(run.row, dict.fromkeys(STATES, 0))[status.state] += 1
    table = _table("sweep status")
    table.add_column("method", overflow="fold", min_width=18)
    for title in ("dataset", "known"):
        table.add_column(title, no_wrap=True)
    for state in STATES:
        table.add_column(state, justify="right", no_wrap=True, style=STYLES[state])
    for (label, dataset, known), counts in rows.items():
        cells = [str(counts[s]) if counts[s] else "[dim]·[/dim]" for s in STATES]
        table.add_row(escape(label), dataset, f"{known:g}", *cells)
    console.print(table)
    totals = summary(statuses)
    console.print(", ".join(f"{totals[s]} {s}" for s in STATES), highlight=False)


def _table(title: str) -> Table:
    """Compact, as ``gcdbench show``'s run list: two-space gaps, no outer frame."""
    return Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))


def _print_lists(statuses: list[SpecStatus], notes: dict[str, str]) -> None:
    failed = [s for s in statuses if s.state == FAILED]
    for s in failed:
        console.print(f"[red]failed[/red] {escape(describe(s.spec))}: {escape(s.detail)}")
    stale = [s for s in statuses if s.state == STALE]
    for s in stale[:SHOWN_STALE]:
        console.print(f"[yellow]stale[/yellow] {escape(describe(s.spec))}: {escape(s.detail)}")
    if len(stale) > SHOWN_STALE:
        console.print(f"[yellow]… and {len(stale) - SHOWN_STALE} more stale[/yellow]")
    for dataset, note in notes.items():
        console.print(
            f"[dim]{dataset}: run ids not computed ({escape(note)}); done and stale are "
            "judged by the records' own checks, as in gcdbench show.[/dim]"
        )
    if failed:
        console.print("[dim]gcdbench sweep PLAN --retry-failed re-runs the failed specs.[/dim]")


def _print_dry_run(
    planned: list[PlannedRun], statuses: list[SpecStatus], retry_failed: bool
) -> None:
    table = _table("sweep plan (dry run: nothing runs)")
    for title in ("#", "method", "dataset", "known", "seed", "state", "would", "detail"):
        table.add_column(title, overflow="fold", no_wrap=title not in ("method", "detail"))
    for i, (run, status) in enumerate(zip(planned, statuses, strict=True), start=1):
        spec = run.spec
        would = "run" if _runs(status, retry_failed) else "skip"
        table.add_row(
            str(i),
            escape(run.label),
            spec.dataset,
            f"{spec.known_ratio:g}",
            str(spec.seed),
            f"[{STYLES[status.state]}]{status.state}[/]",
            would,
            escape(status.detail),
        )
    console.print(table)
    totals = summary(statuses)
    runs = sum(_runs(s, retry_failed) for s in statuses)
    counts = ", ".join(f"{totals[s]} {s}" for s in STATES)
    console.print(f"{len(statuses)} specs: {counts}; a sweep would run {runs}.", highlight=False)
