"""``gcdbench show``: list runs, or show one run's record on one screen.

``show RUN`` prints the spec, the split, the metrics, what the run cost, the feedback's
quality per kind and round and the ten largest clusters; ``--clusters`` lists every cluster
with its description, ``--diagnostics`` the method's diagnostics, ``--json`` the record.
:func:`print_clusters` is also what ``gcdbench run`` prints after a run that named clusters.
"""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gcdbench import paths
from gcdbench.api.record import METRIC_KEYS, ResultRecord
from gcdbench.cli.common import console, results_dir_option
from gcdbench.runner.identity import stale_reasons
from gcdbench.runner.store import ResultsStore, load_record

#: Characters of a run id the listing shows (and ``show`` accepts any unique prefix).
ID_CHARS = 10
TOP_CLUSTERS = 10
#: Terminal width from which the run list also shows when each run finished.
WIDE = 100
#: The id, size and share columns (3 + 4 + 5 characters), the 2-space gaps between the five
#: columns and the last column's right padding.
_FIXED_CLUSTER_WIDTH = 3 + 4 + 5 + 4 * 2 + 1
METRIC_TITLES = {"known_acc": "known ACC", "novel_acc": "novel ACC", "h_score": "H"}


def _run_id(record: ResultRecord) -> str:
    """The id ``show`` takes and prints for a run (the one ``ResultsStore.lookup`` finds)."""
    return record.run_id


@click.command()
@click.argument("run_id", required=False)
@results_dir_option
@click.option(
    "--clusters", "all_clusters", is_flag=True, help="Every cluster, with its description."
)
@click.option("--diagnostics", is_flag=True, help="The method's diagnostics (training, rounds).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def show(
    run_id: str | None,
    results_dir: str | None,
    all_clusters: bool,
    diagnostics: bool,
    as_json: bool,
) -> None:
    """Show RUN_ID (a run-id prefix or a record path), or list every run."""
    store = ResultsStore(paths.results_dir(results_dir))
    if run_id is None:
        print_runs(store)
        return
    path = store.lookup(run_id)
    record = load_record(path)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        return
    print_overview(record, path)
    if FEEDBACK_QUALITY in record.diagnostics:
        print_feedback_quality(record.diagnostics[FEEDBACK_QUALITY])
    print_cluster_table(record, path, None if all_clusters else TOP_CLUSTERS, describe=all_clusters)
    if diagnostics:
        rest = {k: v for k, v in record.diagnostics.items() if k != FEEDBACK_QUALITY}
        click.echo(json.dumps(_compact(rest), indent=2, sort_keys=True, default=str))
    more = (
        []
        if all_clusters or len(record.clusters) <= TOP_CLUSTERS
        else [f"--clusters ({len(record.clusters)})"]
    )
    more += [] if diagnostics else ["--diagnostics"]
    console.print(f"[dim]more: {', '.join([*more, '--json'])}[/dim]")


def print_runs(store: ResultsStore) -> None:
    """One row per run. Ids, datasets and metrics never wrap; method labels do, and the
    finish time shows only where the terminal has room for it."""
    wide = console.width >= WIDE
    table = Table(
        title=f"runs in {store.root}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),  # with the box's blank divider: 2-space gaps
    )
    table.add_column("run", no_wrap=True, min_width=ID_CHARS)
    table.add_column("method", overflow="fold")
    table.add_column("dataset", no_wrap=True)
    table.add_column("known", justify="right", no_wrap=True)
    table.add_column("seed", justify="right", no_wrap=True)
    for metric in ("ACC", "ARI", "NMI"):
        table.add_column(metric, justify="right", no_wrap=True)
    if wide:
        table.add_column("finished", no_wrap=True)
    records = list(store.records())
    stale = {record.run_id for record in records if stale_reasons(record)}
    if stale:
        table.add_column("", no_wrap=True)
    for record in records:
        s = record.spec
        finished = str(record.provenance.get("finished_at", ""))[:16].replace("T", " ")
        table.add_row(
            _run_id(record)[:ID_CHARS],
            escape(s.label),
            s.dataset,
            f"{s.known_ratio:g}",
            str(s.seed),
            *(_metric(record.metrics, k) for k in ("acc", "ari", "nmi")),
            *([finished] if wide else []),
            *(["[yellow]stale[/yellow]" if record.run_id in stale else ""] if stale else []),
        )
    console.print(table)
    if stale:
        console.print(
            f"[dim]{len(stale)} stale: data or code changed since the run; "
            "`gcdbench show RUN` says what, and the same command re-runs it.[/dim]"
        )


def print_overview(record: ResultRecord, path: Path) -> None:
    """Spec, split, metrics and cost, in about a dozen lines."""
    s = record.spec
    console.print(
        f"[bold]{escape(s.label)}[/bold] on {s.dataset}, known ratio {s.known_ratio:g}, "
        f"labeled ratio {s.labeled_ratio:g}, seed {s.seed}"
    )
    console.print(f"run {_run_id(record)[:ID_CHARS]}: {path}", highlight=False)
    stale = stale_reasons(record)
    if stale:
        console.print(
            f"[yellow]stale:[/yellow] {escape('; '.join(stale))}; the same command re-runs it "
            "under a new run id.",
            highlight=False,
        )
    console.print(escape(_spec_line(record)), highlight=False)
    console.print(escape(_split_line(record)), highlight=False)
    leaks = record.provenance.get("leaks_labels")
    if leaks:
        console.print(f"[red]leaks labels:[/red] {escape(', '.join(map(str, leaks)))}")
    metrics = Table(title="metrics (×100)", box=box.SIMPLE_HEAD, show_edge=False)
    for key in METRIC_KEYS:
        metrics.add_column(METRIC_TITLES.get(key, key.upper()), justify="right")
    metrics.add_row(*(_metric(record.metrics, k) for k in METRIC_KEYS))
    console.print(metrics)
    for line in _cost_lines(record):
        console.print(escape(line), highlight=False)


def _metric(metrics: Mapping[str, Any], key: str) -> str:
    value = metrics.get(key)
    return "–" if value is None else f"{float(value):.2f}"


def _spec_line(record: ResultRecord) -> str:
    from gcdbench.report.leaderboard import non_default_params

    s = record.spec
    parts = [f"encoder {s.encoder}" if s.encoder else "no encoder"]
    if s.llm:
        simulated = " (simulated)" if (record.feedback or {}).get("simulated") else ""
        parts.append(f"llm {s.llm}{simulated}")
    parts.append(f"preset {s.preset or 'default'}")
    changed = non_default_params(s)
    if changed:
        parts.append("params " + ", ".join(f"{k}={v}" for k, v in sorted(changed.items())))
    return "spec: " + "; ".join(parts)


def _split_line(record: ResultRecord) -> str:
    split, data = record.split, record.data
    known = split.get("num_known", len(split.get("known_classes", [])))
    classes = data.get("num_classes")
    of = f" of {classes}" if classes else ""
    return (
        f"split {str(split.get('hash', ''))[:ID_CHARS]}: {known}{of} classes known; train "
        f"{split.get('num_labeled', '?')} labeled + {split.get('num_unlabeled', '?')} "
        f"unlabeled, dev {split.get('num_dev', '?')}, test {split.get('num_test', '?')}"
    )


def _cost_lines(record: ResultRecord) -> list[str]:
    prov = record.provenance
    durations = prov.get("durations_s") or {}
    asking = sum(v for k, v in durations.items() if k.startswith("feedback:"))
    git = prov.get("git") or {}
    time = f"time {_duration(durations.get('total'))}"
    if asking:
        time += f" (asking {_duration(asking)})"
    lines = [
        f"cost: {time}, peak RSS {prov.get('peak_rss_mb', '?')} MB; gcdbench "
        f"{prov.get('gcdbench_version', '?')}, git {str(git.get('commit', '?'))[:ID_CHARS]}"
        + (" (dirty)" if git.get("dirty") else "")
    ]
    feedback = record.feedback or {}
    total = (feedback.get("stats") or {}).get("total")
    if total:
        usd = total.get("cost_usd")
        lines.append(
            f"feedback: {total.get('queries', 0)} questions, {total.get('requests', 0)} "
            f"prompts: {total.get('backend_requests', 0)} sent, "
            f"{total.get('ledger_hits', 0)} ledger hits; "
            f"{total.get('prompt_tokens', 0) + total.get('completion_tokens', 0):,} tokens, "
            + ("$ unknown" if usd is None else f"${usd:.4f}")
        )
    return lines


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(round(float(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


@dataclass(frozen=True)
class ClusterRow:
    id: int
    size: int | None
    name: str
    description: str
    gold: str
    share: float | None


def cluster_rows(record: ResultRecord, predictions: Path | None) -> list[ClusterRow]:
    """The record's named clusters, largest first: test texts in each (from the predictions
    file) and the gold class most of them have, with its share."""
    sizes: dict[int, int] = {}
    majority: dict[int, tuple[str, float]] = {}
    if predictions is not None and predictions.is_file():
        # The csv module, not pandas: a few thousand rows, and importing pandas would take
        # longer than the rest of `show`. Ties go to the gold class met first, as with
        # pandas' value_counts.
        golds_of: dict[int, Counter[str]] = defaultdict(Counter)
        with predictions.open(newline="", encoding="utf-8") as file:
            for row in csv.DictReader(file):
                golds_of[int(row["cluster"])][row["gold"]] += 1
        for cluster, counts in golds_of.items():
            gold, count = counts.most_common(1)[0]
            sizes[cluster] = counts.total()
            majority[cluster] = (gold, count / sizes[cluster])
    rows = [
        ClusterRow(
            int(c["id"]),
            sizes.get(int(c["id"])),
            str(c.get("name", "")),
            str(c.get("description", "")),
            *majority.get(int(c["id"]), ("", None)),
        )
        for c in record.clusters
    ]
    return sorted(rows, key=lambda r: (-(r.size or 0), r.id))


def print_clusters(
    record_path: str | Path,
    top: int | None = TOP_CLUSTERS,
    *,
    describe: bool = False,
    out: Console | None = None,
) -> None:
    """The ``top`` largest named clusters of the run at ``record_path`` (all if None): size,
    generated name, the most common gold class and its share; with ``describe``, each
    cluster's description too. Prints nothing for a run whose method named no clusters."""
    path = Path(record_path)
    print_cluster_table(load_record(path), path, top, describe=describe, out=out)


def print_cluster_table(
    record: ResultRecord,
    path: Path,
    top: int | None,
    *,
    describe: bool = False,
    out: Console | None = None,
) -> None:
    if not record.clusters:
        return
    rows = cluster_rows(record, path.parent / record.predictions_file)
    shown = rows if top is None else rows[:top]
    what = (
        f"all {len(rows)}"
        if len(shown) == len(rows)
        else f"the {len(shown)} largest of {len(rows)}"
    )
    target = out or console
    table = Table(
        title=f"clusters on the test split: {what}",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1, 0, 0),  # with the box's blank divider: 2-space gaps
        title_justify="left",
    )
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    if describe:
        # Everything wraps: the table is as long as it needs to be.
        table.add_column("name", ratio=2)
        table.add_column("most common gold class", ratio=2)
        table.add_column("share", justify="right", no_wrap=True)
        table.add_column("description", ratio=3)
    else:
        # One line per cluster: the two text columns share what the others leave of the
        # width, cut with an ellipsis (rich would squeeze every column instead).
        text = max(20, target.width - _FIXED_CLUSTER_WIDTH)
        one_line: dict[str, Any] = {"no_wrap": True, "overflow": "ellipsis"}
        table.add_column("name", max_width=text * 3 // 5, **one_line)
        table.add_column("most common gold class", max_width=text * 2 // 5, **one_line)
        table.add_column("share", justify="right", no_wrap=True)
    for row in shown:
        cells = [
            str(row.id),
            "–" if row.size is None else str(row.size),
            escape(row.name) or "[dim](no name)[/dim]",
            escape(row.gold) or "–",
            "–" if row.share is None else f"{100 * row.share:.0f}%",
        ]
        table.add_row(*cells, *([escape(row.description)] if describe else []))
    target.print(table)


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
