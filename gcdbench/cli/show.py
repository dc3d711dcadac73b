"""``gcdbench show``: list runs, or show one run's record."""

from __future__ import annotations

import json
from typing import Any

import click
from rich import box
from rich.table import Table

from gcdbench import paths
from gcdbench.api.record import METRIC_KEYS
from gcdbench.cli.common import console, results_dir_option
from gcdbench.runner.store import ResultsStore, load_record


@click.command()
@click.argument("run_id", required=False)
@results_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def show(run_id: str | None, results_dir: str | None, as_json: bool) -> None:
    """Show RUN_ID (a spec-hash prefix or a record path), or list every run."""
    store = ResultsStore(paths.results_dir(results_dir))
    if run_id is None:
        table = Table(title=f"runs in {store.root}")
        for column in (
            "run",
            "method",
            "dataset",
            "known",
            "seed",
            "ACC",
            "ARI",
            "NMI",
            "finished",
        ):
            table.add_column(column)
        for record in store.records():
            s = record.spec
            table.add_row(
                s.hash[:10],
                s.label,
                s.dataset,
                f"{s.known_ratio:g}",
                str(s.seed),
                *(f"{record.metrics[k]:.2f}" for k in ("acc", "ari", "nmi")),
                str(record.provenance.get("finished_at", "")),
            )
        console.print(table)
        return
    path = store.lookup(run_id)
    record = load_record(path)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        return
    s = record.spec
    console.print(
        f"[bold]{s.label}[/bold] on {s.dataset}, known ratio {s.known_ratio:g}, "
        f"labeled ratio {s.labeled_ratio:g}, seed {s.seed}"
    )
    console.print(f"record: {path}")
    console.print(f"spec hash {s.hash}  split hash {record.split.get('hash')}")
    metrics = Table(title="metrics (×100)")
    for key in METRIC_KEYS:
        metrics.add_column(key)
    metrics.add_row(*(f"{record.metrics[k]:.2f}" for k in METRIC_KEYS))
    console.print(metrics)
    console.print(f"params: {json.dumps(s.params, sort_keys=True)}")
    if record.encoder:
        console.print(
            f"encoder: {record.encoder.get('name')} ({record.encoder.get('fingerprint', '')[:12]})"
        )
    prov = record.provenance
    git = prov.get("git", {})
    dirty = " (dirty)" if git.get("dirty") else ""
    console.print(f"code: gcdbench {prov.get('gcdbench_version')}, git {git.get('commit')}{dirty}")
    console.print(
        f"durations (s): {prov.get('durations_s')}  peak RSS {prov.get('peak_rss_mb')} MB"
    )
    if record.clusters:
        clusters = Table(title="clusters")
        for column in ("id", "name", "description"):
            clusters.add_column(column)
        for cluster in record.clusters:
            clusters.add_row(str(cluster["id"]), cluster["name"], cluster.get("description", ""))
        console.print(clusters)
    rest = {k: v for k, v in record.diagnostics.items() if k != FEEDBACK_QUALITY}
    if rest:
        console.print(f"diagnostics: {json.dumps(_compact(rest), sort_keys=True, default=str)}")
    if FEEDBACK_QUALITY in record.diagnostics:
        print_feedback_quality(record.diagnostics[FEEDBACK_QUALITY])


FEEDBACK_QUALITY = "feedback_quality"
#: Lists longer than this are per-question arrays: `show` prints their length, not them.
LONGEST_LIST_SHOWN = 20
BIAS_POSITIONS_SHOWN = 5
# Short headers and one-space gaps so the table fits an 80-column terminal; the legend
# says what the headers mean.
QUALITY_COLUMNS = (
    "round",
    "asked",
    "answ",
    "used",
    "fb acc",
    "enc acc",
    "avail",
    "parse fail",
    "fall back",
    "filt",
    "bias",
)
QUALITY_LEGEND = (
    "answ: a choice came back; fb acc: feedback's choice right, over answ; enc acc: the "
    "encoder's choice right on the same questions; avail: a right option was offered; "
    "fall back: 1 − used/asked; filt: low-confidence or answered but unused; bias: % of "
    "answers per option position (1st/2nd/…, +rest)"
)


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) > LONGEST_LIST_SHOWN:
        return f"<{len(value)} values; see --json>"
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def print_feedback_quality(quality: dict[str, Any]) -> None:
    """One table per choice kind (a row per round, then all rounds), then a line per round
    of description coverage."""
    rows = quality.get("rounds", [])
    for kind, total in quality.get("totals", {}).items():
        table = Table(
            title=f"{kind} feedback vs gold (%)",
            box=box.SIMPLE_HEAD,  # its column dividers are single spaces
            padding=0,
            show_edge=False,
        )
        for column in QUALITY_COLUMNS:
            table.add_column(column, justify="right", no_wrap=column == "bias")
        for row in (r for r in rows if r.get("kind") == kind):
            table.add_row(str(row.get("round")), *_quality_cells(row))
        table.add_row("all", *_quality_cells(total), style="bold")
        console.print(table)
    if quality.get("totals"):
        console.print(QUALITY_LEGEND)
    descriptions = quality.get("descriptions")
    if descriptions:
        encoder = (descriptions.get("encoder") or {}).get("name", "no encoder")
        if descriptions.get("error"):
            console.print(f"description coverage: not scored: {descriptions['error']}")
        for row in descriptions.get("rounds", []):
            console.print(_coverage_line(row, encoder, descriptions.get("num_classes")))


def _quality_cells(row: dict[str, Any]) -> list[str]:
    return [
        str(row.get("asked", 0)),
        str(row.get("answered", 0)),
        str(row.get("used", 0)),
        _percent(row.get("feedback_accuracy")),
        _percent(row.get("encoder_accuracy_answered")),
        _percent(row.get("correct_available")),
        _percent(row.get("parse_failure_rate")),
        _percent(row.get("fallback_rate")),
        _percent(row.get("filtered_rate")),
        _bias(row.get("position_bias") or []),
    ]


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _bias(shares: list[float]) -> str:
    """Whole percentages per option position, e.g. 41/22/15/12/10; the tail summed."""
    if not shares:
        return "–"
    shown = [f"{round(100 * s)}" for s in shares[:BIAS_POSITIONS_SHOWN]]
    if len(shares) > BIAS_POSITIONS_SHOWN:
        shown.append(f"+{round(100 * sum(shares[BIAS_POSITIONS_SHOWN:]))}")
    return "/".join(shown)


def _coverage_line(row: dict[str, Any], encoder: str, num_classes: int | None) -> str:
    head = f"descriptions round {row.get('round')} ({row.get('descriptions')} texts, "
    head += f"{row.get('fallbacks', 0)} fallbacks): "
    if row.get("coverage") is None:
        return head + f"coverage – ({row.get('reason', 'not scored')})"
    matched = f"{row.get('classes_matched')}/{num_classes} classes, " if num_classes else ""
    return head + (
        f"coverage {_percent(row['coverage'])}% ({matched}{encoder}), "
        f"mean best cosine {row.get('mean_best_cosine')}, "
        f"uniformity {row.get('uniformity')}"
    )
