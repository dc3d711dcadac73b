"""``gcdbench leaderboard``: markdown tables from every record in the results store.

The markdown goes to stdout; ``--out PATH`` writes a file instead. A committed leaderboard
holds results the local store may lack, so writing over a leaderboard that shows results the
new one would not is refused, naming how many, unless ``--replace`` says to drop them.
"""

from __future__ import annotations

from pathlib import Path

import click

from gcdbench import paths
from gcdbench.api.record import ResultRecord
from gcdbench.cli.common import err_console, results_dir_option
from gcdbench.errors import GcdbenchError
from gcdbench.report.leaderboard import (
    STALE,
    STALE_KEY,
    Result,
    dropped_results,
    is_leaderboard,
    leaderboard_markdown,
    write_leaderboard,
)
from gcdbench.report.references import load_references
from gcdbench.runner.identity import stale_reasons
from gcdbench.runner.store import ResultsStore


@click.command()
@results_dir_option
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the markdown to this file instead of stdout (e.g. leaderboards/README.md).",
)
@click.option(
    "--replace",
    is_flag=True,
    help="Let --out overwrite a file that is not a leaderboard, or one showing results that "
    "the results store lacks (they are dropped).",
)
@click.option("--no-references", is_flag=True, help="Leave out the rows reported by papers.")
@click.option(
    "--feedback",
    "feedback",
    is_flag=True,
    help="Rank feedback providers on their question banks (gcdbench feedback eval) instead.",
)
@click.option(
    "--include-stale",
    is_flag=True,
    help="Show runs whose data or code changed since they ran, marked STALE and ranked apart.",
)
def leaderboard(
    results_dir: str | None,
    out: str | None,
    replace: bool,
    no_references: bool,
    include_stale: bool,
    feedback: bool,
) -> None:
    """Print the leaderboard: methods x datasets, ACC/ARI/NMI as mean±std over seeds."""
    if feedback:
        _feedback_board(paths.results_dir(results_dir), out, replace)
        return
    store = ResultsStore(paths.results_dir(results_dir))
    records = list(store.records())
    if not records:
        raise GcdbenchError(
            f"no results in {store.root}; run something first (gcdbench run kmeans) "
            "or pass --results-dir."
        )
    records = _without_stale(records, include_stale, store.root)
    references = [] if no_references else load_references()
    if out is None:
        click.echo(leaderboard_markdown(records, references), nl=False)
        return
    path = Path(out)
    if path.exists() and not replace:
        _refuse_to_drop(path, leaderboard_markdown(records, references), store.root)
    write_leaderboard(records, path, references)
    err_console.print(f"wrote {path} from {len(records)} runs")


def _feedback_board(root: Path, out: str | None, replace: bool) -> None:
    from gcdbench.report.feedback_board import MARKER, feedback_markdown
    from gcdbench.runner.feedback_eval import eval_records

    records = list(eval_records(root))
    if not records:
        raise GcdbenchError(
            f"no feedback evaluations in {root}; run one first (gcdbench feedback eval "
            "-d banking --llm oracle) or pass --results-dir."
        )
    markdown = feedback_markdown(records)
    if out is None:
        click.echo(markdown, nl=False)
        return
    path = Path(out)
    if path.exists() and not replace and MARKER not in path.read_text(encoding="utf-8"):
        raise GcdbenchError(
            f"{path} exists and is not a feedback leaderboard; pass another --out, or "
            "--replace to overwrite it."
        )
    from gcdbench.util.files import atomic_open

    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(markdown)
    err_console.print(f"wrote {path} from {len(records)} evaluations")


def _without_stale(records: list[ResultRecord], include: bool, root: Path) -> list[ResultRecord]:
    """A stale record no longer says what its spec gives with this data and code: left
    out, or with ``include`` kept and marked STALE (ranked apart from current runs)."""
    stale = [r for r in records if stale_reasons(r)]
    stale_ids = {id(r) for r in stale}
    if not stale:
        return records
    if include:
        for record in stale:
            record.provenance[STALE_KEY] = True
        err_console.print(f"{len(stale)} stale run(s) shown apart, marked {STALE}.")
        return records
    err_console.print(
        f"left out {len(stale)} stale run(s): data or code changed since they ran "
        "(gcdbench show lists them; the same command re-runs them; --include-stale shows them)."
    )
    current = [r for r in records if id(r) not in stale_ids]
    if not current:
        raise GcdbenchError(
            f"every run in {root} is stale; re-run them, or pass --include-stale to see them."
        )
    return current


def _refuse_to_drop(path: Path, new: str, store: Path) -> None:
    """One line and exit 2 when writing ``new`` over ``path`` would lose anything."""
    try:
        old = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GcdbenchError(f"cannot read {path} ({exc}); pass another --out.") from None
    if not is_leaderboard(old):
        raise GcdbenchError(
            f"{path} exists and is not a gcdbench leaderboard; pass another --out, or "
            "--replace to overwrite it."
        )
    dropped = dropped_results(old, new)
    if dropped:
        raise GcdbenchError(
            f"{path} shows {_count(dropped)} that {store} lacks (e.g. {_example(dropped[0])}); "
            "pass --results-dir with the store that has them, or --replace to drop them."
        )


def _count(dropped: list[Result]) -> str:
    rows = len({(section, row) for section, row, _ in dropped})
    results = f"{len(dropped)} result{'s' if len(dropped) != 1 else ''}"
    return f"{results} in {rows} row{'s' if rows != 1 else ''}"


def _example(result: Result) -> str:
    section, row, dataset = result
    return f"'{row}' on {dataset}, {section.lower()}"
