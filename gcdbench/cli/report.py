"""``gcdbench report``: a folder with the leaderboard, budget and paired-difference tables,
PNG figures and a README.md indexing them (docs/reports.md).

Everything is checked before anything is written; the results store is only read.
"""

from __future__ import annotations

from pathlib import Path

import click

from gcdbench import paths
from gcdbench.cli.common import err_console, parse_names, results_dir_option
from gcdbench.cli.progress import make_reporter
from gcdbench.report.bundle import FIGURE_KINDS, ReportRequest, plan_report, write_report
from gcdbench.report.run_view import PROJECTIONS


@click.command()
@results_dir_option
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(),
    help="Folder to write the report into: new, empty, or a report written before.",
)
@click.option(
    "--run",
    "runs",
    multiple=True,
    help="Draw the projection and confusion matrix of this run (an id prefix, as `gcdbench "
    "show` prints it; repeatable) instead of the best run of each dataset.",
)
@click.option(
    "--baseline",
    default=None,
    help="Method (or full leaderboard row) every other row is paired against "
    "[default: no-llm, else kmeans, when the store has it].",
)
@click.option(
    "--projection",
    type=click.Choice(PROJECTIONS),
    default="pca",
    show_default=True,
    help="How the test texts' features are drawn in 2-D (both seeded).",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    help=f"Make only these figures ({', '.join(FIGURE_KINDS)}; comma-separated or "
    "repeated). The tables are always written.",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="Folder with one sub-folder per dataset, for the projection's test texts [env "
    "GCDBENCH_DATA; else the download cache; never downloads].",
)
@click.option(
    "--no-references", is_flag=True, help="Leave the papers' rows out of the leaderboard."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
def report(
    results_dir: str | None,
    out: str,
    runs: tuple[str, ...],
    baseline: str | None,
    projection: str,
    only: tuple[str, ...],
    data_dir: str | None,
    no_references: bool,
    quiet: bool,
) -> None:
    """Write a report folder: leaderboard, tables and figures, indexed in README.md."""
    root = paths.results_dir(results_dir)
    request = ReportRequest(
        results_dir=root,
        out=Path(out).expanduser(),
        results_arg=results_dir if results_dir else str(root),
        out_arg=out,
        runs=tuple(parse_names(runs, "--run", "3f2a9c")) if runs else (),
        baseline=baseline,
        projection=projection,
        only=tuple(parse_names(only, "--only", "budget,ratio")) if only else FIGURE_KINDS,
        data_dir=data_dir,
        references=not no_references,
    )
    plan = plan_report(request)
    index = write_report(plan, make_reporter(quiet))
    if not quiet:
        err_console.print(f"wrote {index} from {len(plan.records)} runs")
