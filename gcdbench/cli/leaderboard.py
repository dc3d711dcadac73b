"""``gcdbench leaderboard``: markdown tables from every record in the results store."""

from __future__ import annotations

from pathlib import Path

import click

from gcdbench import paths
from gcdbench.cli.common import console, results_dir_option
from gcdbench.errors import GcdbenchError
from gcdbench.report.leaderboard import write_leaderboard
from gcdbench.report.references import load_references
from gcdbench.runner.store import ResultsStore


@click.command()
@results_dir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default="leaderboards/README.md",
    show_default=True,
    help="Markdown file to write.",
)
@click.option("--no-references", is_flag=True, help="Leave out the rows reported by papers.")
def leaderboard(results_dir: str | None, out: str, no_references: bool) -> None:
    """Write the leaderboard: methods x datasets, ACC/ARI/NMI as mean±std over seeds."""
    store = ResultsStore(paths.results_dir(results_dir))
    records = list(store.records())
    if not records:
        raise GcdbenchError(
            f"no results in {store.root}; run something first (gcdbench run kmeans) "
            "or pass --results-dir."
        )
    path = write_leaderboard(records, Path(out), [] if no_references else load_references())
    console.print(f"wrote {path} from {len(records)} runs")
