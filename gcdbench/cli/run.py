"""``gcdbench run``: run a method over a plan of datasets x known ratios x seeds."""

from __future__ import annotations

import dataclasses
import itertools
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gcdbench import paths, registry
from gcdbench.api.executor import Outcome, check_workers
from gcdbench.api.method import Method
from gcdbench.api.record import METRIC_KEYS, ResultRecord
from gcdbench.api.spec import RunSpec
from gcdbench.cli.common import (
    console,
    count_ints,
    data_dir_option,
    err_console,
    expand_ints,
    parse_floats,
    parse_int_ranges,
    parse_names,
    parse_params,
    ray_no_shared_disk_option,
    ray_resources_option,
    require_text,
    results_dir_option,
)
from gcdbench.cli.progress import make_reporter
from gcdbench.cli.show import print_clusters
from gcdbench.data.store import user_data_root
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.resolve import option_pairs
from gcdbench.runner.store import ResultsStore, load_record

#: The largest plan ``gcdbench run`` starts without ``--max-runs``.
DEFAULT_MAX_RUNS = 1000


@click.command()
@click.argument("method")
@click.option(
    "--ablate",
    "ablations",
    multiple=True,
    metavar="COMPONENT",
    help="Switch off a component the method declares (repeatable).",
)
@click.option(
    "--dataset",
    "-d",
    "datasets",
    multiple=True,
    default=("banking",),
    show_default=True,
    help="Dataset(s): repeat or comma-separate.",
)
@click.option(
    "--known-ratio",
    "known_ratios",
    multiple=True,
    default=("0.25",),
    show_default=True,
    help="Share of classes that are known (0, 1]: repeat or comma-separate.",
)
@click.option(
    "--labeled-ratio",
    type=float,
    default=0.1,
    show_default=True,
    help="Share of each known class's training texts that are labeled.",
)
@click.option(
    "--seed",
    "--seeds",
    "seeds",
    multiple=True,
    default=("0",),
    show_default=True,
    help="Seed(s): 0 / 0,1,2 / 0-4.",
)
@click.option("--encoder", default=None, help="Encoder name, BACKEND:REF, local folder or hub id.")
@click.option(
    "--preset", default=None, help="A preset the method declares (e.g. smoke, cpu, paper)."
)
@click.option(
    "--param",
    "-p",
    "params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a method parameter (repeatable).",
)
@click.option(
    "--variant",
    type=click.Choice(["paper", "official"]),
    default=None,
    help="Where the official code departs from the paper, follow which (methods with a "
    "variant parameter: no-llm, glean, loop) [method default: paper].",
)
@click.option(
    "--refine",
    default=None,
    metavar="REFINER",
    help="Refine a pseudo-labelling method's output with a registered refiner, e.g. silr "
    "(gcdbench list refiners).",
)
@click.option(
    "--refine-param",
    "refine_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a refiner parameter (repeatable).",
)
@click.option(
    "--k",
    "k",
    default=None,
    metavar="true|N|estimate:NAME",
    help="The number of clusters the method is told: the dataset's true K (default), a fixed "
    "N, or an estimate from the encoder's features, e.g. estimate:silhouette "
    "(gcdbench list k-estimators; docs/unknown-k.md).",
)
@click.option(
    "--llm",
    default=None,
    metavar="SPEC",
    help="Feedback for methods that ask it: oracle, noisy-oracle:0.8, llamacpp[:MODEL], "
    "openai:gpt-4o-mini, … [default: llamacpp].",
)
@click.option(
    "--llm-option",
    "llm_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Provider or backend option, e.g. temperature=0.7 (repeatable; part of the spec).",
)
@click.option("--llm-offline", is_flag=True, help="Replay the feedback ledger; fail on a miss.")
@click.option(
    "--llm-budget",
    default=None,
    metavar="N|Xusd",
    help="Stop asking after N backend requests and/or X dollars (e.g. 2000 or 0.50usd).",
)
@click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    default=None,
    help="Feedback ledger file [env GCDBENCH_LEDGER; default <cache>/ledger.sqlite].",
)
@data_dir_option
@results_dir_option
@click.option("--force", is_flag=True, help="Re-run specs that already have a record.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display; results still print.")
@click.option("--no-download", is_flag=True, help="Never download data; fail if it is missing.")
@click.option("--executor", default="local", show_default=True, help="How to run the plan.")
@click.option("--workers", type=int, default=None, help="Workers for parallel executors (>= 1).")
@click.option(
    "--max-runs",
    type=int,
    default=DEFAULT_MAX_RUNS,
    show_default=True,
    help="Refuse plans (datasets x known ratios x seeds) larger than this.",
)
# -- Ray (docs/cluster.md) --
@ray_resources_option
@ray_no_shared_disk_option
def run(
    method: str,
    ablations: tuple[str, ...],
    datasets: tuple[str, ...],
    known_ratios: tuple[str, ...],
    labeled_ratio: float,
    seeds: tuple[str, ...],
    encoder: str | None,
    preset: str | None,
    params: tuple[str, ...],
    variant: str | None,
    refine: str | None,
    refine_params: tuple[str, ...],
    k: str | None,
    llm: str | None,
    llm_options: tuple[str, ...],
    llm_offline: bool,
    llm_budget: str | None,
    ledger: str | None,
    data_dir: str | None,
    results_dir: str | None,
    force: bool,
    no_download: bool,
    executor: str,
    workers: int | None,
    max_runs: int,
    quiet: bool,
    ray_resources: tuple[str, ...],
    ray_no_shared_disk: bool,
) -> None:
    """Run METHOD and print ACC/ARI/NMI; one record per (dataset, known ratio, seed).

    Every argument is checked before anything is written: a bad one stops with one line
    naming it and the fix, exit code 2."""
    # Here, not at the top: the runner loads NumPy, pandas and scikit-learn, which
    # `gcdbench --help` would otherwise pay for.
    from gcdbench.runner.ray_support import executor_options
    from gcdbench.runner.run import RunOptions, execute, run_job

    _check_text_options(
        encoder=encoder,
        preset=preset,
        refine=refine,
        k=k,
        llm_budget=llm_budget,
        ledger=ledger,
        data_dir=data_dir,
        results_dir=results_dir,
        executor=executor,
    )
    _check_counts(workers, max_runs)
    ray_settings = executor_options(executor, ray_resources, ray_no_shared_disk, [method])
    names = parse_names(datasets, "--dataset", "banking or banking,clinc")
    ratios = parse_floats(known_ratios, "--known-ratio")
    seed_ranges = parse_int_ranges(seeds, "--seed")
    _check_plan_size(len(names), len(ratios), count_ints(seed_ranges), max_runs)
    method_cls = registry.get("method", method)
    overrides = with_variant(method_cls, parse_params(params), variant)
    options_of_llm = option_pairs(llm_options)
    executor_cls = registry.get("executor", executor)
    user_data_root(data_dir)  # a missing --data-dir / GCDBENCH_DATA folder fails here
    specs = resolve_specs(
        method,
        names,
        ratios,
        expand_ints(seed_ranges),
        labeled_ratio=labeled_ratio,
        ablations=ablations,
        encoder=encoder,
        preset=preset,
        overrides=overrides,
        llm=llm,
        llm_options=options_of_llm,
        llm_budget=llm_budget,
        refine=refine,
        refine_overrides=parse_params(refine_params, "--refine-param"),
        k=k,
    )
    # Absolute, so that workers in other folders (Ray, Slurm) write and read the same places.
    options = RunOptions(
        paths.results_dir(results_dir).resolve(),
        str(Path(data_dir).resolve()) if data_dir else None,
        force,
        not no_download,
        llm_offline=llm_offline,
        ledger=str(Path(ledger).resolve()) if ledger else None,
    )
    ResultsStore(options.results_dir).check_writable()

    if len(specs) == 1 and executor == "local":
        # A single run raises its user errors straight to the one-line handler.
        outcomes = [execute(specs[0], options, make_reporter(quiet))]
    else:
        pool = executor_cls(workers=workers, on_outcome=_print_outcome, **ray_settings)
        outcomes = pool.map(partial(run_job, options=options), specs)
    _print_summary(outcomes)
    failed = [o for o in outcomes if o.status in {"failed", "crashed"}]
    if failed:
        sys.exit(2 if all(o.status == "failed" for o in failed) else 1)


def with_variant(
    method_cls: type[Method],
    overrides: dict[str, Any],
    variant: str | None,
    *,
    variant_key: str = "--variant",
    param_key: str = "-p variant=",
) -> dict[str, Any]:
    """``overrides`` with ``--variant`` merged in, checked against the method. The keys name
    where the two values came from (flags here, plan keys in ``gcdbench sweep``)."""
    if variant is not None:
        fields = {f.name for f in dataclasses.fields(method_cls.Params)}
        if "variant" not in fields:
            raise GcdbenchError(
                f"method {method_cls.name!r} has no paper/official variant; drop {variant_key}."
            )
        if "variant" in overrides and overrides["variant"] != variant:
            raise GcdbenchError(f"{variant_key} and {param_key} disagree; pass one of them.")
        overrides["variant"] = variant
    return overrides


def resolve_specs(
    method: str,
    datasets: Sequence[str],
    known_ratios: Sequence[float],
    seeds: Sequence[int],
    **request: Any,
) -> list[RunSpec]:
    """One checked spec per (dataset, known ratio, seed), in that order: ``gcdbench run``'s
    plan, and each method entry of a ``gcdbench sweep`` plan. ``request`` holds the rest of
    :func:`gcdbench.runner.run.resolve_spec`'s keywords."""
    from gcdbench.runner.run import resolve_spec

    return [
        resolve_spec(method, dataset, ratio, seed, **request)
        for dataset, ratio, seed in itertools.product(datasets, known_ratios, seeds)
    ]


def _check_text_options(**values: str | None) -> None:
    """An option given as ``''`` is a slip, never a request for its default."""
    fixes = {
        "encoder": "name one (e.g. all-MiniLM-L6-v2) or leave --encoder out for the default",
        "preset": "name one the method declares (gcdbench list methods) or leave --preset out",
        "refine": "name a refiner (gcdbench list refiners) or leave --refine out",
        "k": "pass true, a number or estimate:NAME (gcdbench list k-estimators), or leave it out",
        "llm_budget": "pass e.g. --llm-budget 2000 or 0.50usd, or leave it out",
        "ledger": "pass a file path or leave --ledger out for <cache>/ledger.sqlite",
        "data_dir": "pass a folder or leave --data-dir out",
        "results_dir": "pass a folder or leave --results-dir out for ./results",
        "executor": "pass local, processes or ray (gcdbench list executors)",
    }
    for key, value in values.items():
        require_text(value, "--" + key.replace("_", "-"), fixes[key])


def _check_counts(workers: int | None, max_runs: int) -> None:
    check_workers(workers)  # every executor, the local one too, which ignores the count
    if max_runs < 1:
        raise GcdbenchError(f"--max-runs must be at least 1, got {max_runs}; e.g. --max-runs 1000.")


def _check_plan_size(datasets: int, ratios: int, seeds: int, max_runs: int) -> None:
    """Counted from the ranges, before any seed list is built: ``--seeds 0-100000000`` must
    stop here, not exhaust memory."""
    runs = datasets * ratios * seeds
    if runs > max_runs:
        raise GcdbenchError(
            f"the plan has {runs} runs ({datasets} dataset(s) x {ratios} known ratio(s) x "
            f"{seeds} seed(s)), more than --max-runs {max_runs}; narrow --seeds, --dataset or "
            f"--known-ratio, or pass --max-runs {runs} to run them all."
        )


def _print_outcome(outcome: Outcome) -> None:
    spec = outcome.spec
    where = f"{spec.label} on {spec.dataset} kr={spec.known_ratio} seed={spec.seed}"
    if outcome.status in {"failed", "crashed"}:
        err_console.print(f"[red]{outcome.status}[/red] {where}: {outcome.error}")
    else:
        err_console.print(f"{outcome.status} {where}{resumed_note(outcome)}")


def resumed_note(outcome: Outcome) -> str:
    """`` (resumed from round N)`` for a run that continued from a round checkpoint: a plan's
    runs report through a silent reporter, so their record's ``provenance.resumed`` is the
    only place that says so (docs/resume.md). Empty for every other outcome."""
    if outcome.status != "done" or not outcome.record_path:
        return ""
    try:
        record = load_record(Path(outcome.record_path))
    except GcdbenchError:  # a record this machine cannot read (a Ray worker's disk): no note
        return ""
    rounds = ", ".join(f"round {r['from_round']}" for r in record.provenance.get("resumed", []))
    return f" (resumed from {rounds})" if rounds else ""


def _print_summary(outcomes: list[Outcome]) -> None:
    if len(outcomes) == 1:
        _print_single(outcomes[0])
        return
    # A plan's table: the identity columns that vary, then ACC/ARI/NMI, to fit a terminal.
    varying = [
        (title, key)
        for title, key in (
            ("method", "label"),
            ("dataset", "dataset"),
            ("known", "known_ratio"),
            ("seed", "seed"),
        )
        if len({getattr(o.spec, key) for o in outcomes}) > 1
    ]
    shown = ("acc", "ari", "nmi")
    table = Table(title="results (×100)")
    for title in ["run", *(t for t, _ in varying), "status"]:
        table.add_column(title, no_wrap=True)
    for key in shown:
        table.add_column(_HEADERS[key], justify="right", no_wrap=True)
    for outcome in outcomes:
        record = _record(outcome)
        values = [f"{record.metrics[k]:.2f}" if record else "–" for k in shown]
        identity = [_fmt(getattr(outcome.spec, key)) for _, key in varying]
        table.add_row(_run_id(record), *identity, outcome.status, *values)
    console.print(table)
    if any(o.status == "skipped" for o in outcomes):
        console.print("[dim]skipped: already in the results store; --force re-runs.[/dim]")


def _print_single(outcome: Outcome) -> None:
    spec = outcome.spec
    record = _record(outcome)
    console.print(
        f"[bold]{spec.label}[/bold] on {spec.dataset}, known ratio {spec.known_ratio:g}, "
        f"seed {spec.seed}: {outcome.status} (run {_run_id(record)})"
    )
    if record and outcome.record_path:  # a record is read from its path
        table = Table(title="metrics (×100)")
        for key in METRIC_KEYS:
            table.add_column(_HEADERS[key], justify="right", no_wrap=True)
        table.add_row(*(f"{record.metrics[k]:.2f}" for k in METRIC_KEYS))
        console.print(table)
        if record.split.get("k"):
            console.print(k_line(record.split["k"]))
        print_clusters(outcome.record_path)
    if outcome.status == "skipped":
        console.print("[dim]already in the results store; --force re-runs it.[/dim]")
    elif outcome.record_path:
        console.print(f"[dim]record: {outcome.record_path}[/dim]")


def k_line(section: dict[str, Any]) -> str:
    """A ``--k`` run's K as one line: ``K = 66, estimated by elbow (true K 77)``."""
    if "fixed" in section:
        return f"K = {section['fixed']}, fixed by --k (true K {section['true']})"
    clamped = f", clamped from {section['unclamped']}" if "unclamped" in section else ""
    return (
        f"K = {section['estimated']}, estimated by {section['estimator']}{clamped} "
        f"(true K {section['true']})"
    )


def _record(outcome: Outcome) -> ResultRecord | None:
    return load_record(Path(outcome.record_path)) if outcome.record_path else None


def _run_id(record: ResultRecord | None) -> str:
    """The id ``gcdbench show`` takes: the run id, not the spec hash (one spec on other
    data or code is another run)."""
    return record.run_id[:10] if record else "–"


_HEADERS = {
    "acc": "ACC",
    "ari": "ARI",
    "nmi": "NMI",
    "known_acc": "known ACC",
    "novel_acc": "novel ACC",
    "h_score": "H",
}


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
