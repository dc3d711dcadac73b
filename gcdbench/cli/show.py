"""``gcdbench show``: list runs, or show one run's record."""

from __future__ import annotations

import json

import click
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
    if record.diagnostics:
        console.print(f"diagnostics: {json.dumps(record.diagnostics, sort_keys=True, default=str)}")
