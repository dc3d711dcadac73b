"""Options and helpers shared by subcommands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gcdbench.errors import GcdbenchError
from gcdbench.runner.context import Reporter

console = Console()
err_console = Console(stderr=True, log_path=False)

results_dir_option = click.option(
    "--results-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Results store [env GCDBENCH_RESULTS; default ./results].",
)
data_dir_option = click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="Folder with one sub-folder per dataset [env GCDBENCH_DATA; default: the user "
    "cache, downloaded on first use].",
)


def parse_ints(values: tuple[str, ...], name: str) -> list[int]:
    """``0,1,2`` / ``0-4`` / repeated options -> a sorted list of distinct ints (the inverse
    of :func:`gcdbench.report.leaderboard.format_ints`)."""
    out: set[int] = set()
    for value in values:
        for piece in value.split(","):
            piece = piece.strip()
            try:
                if "-" in piece.lstrip("-") and not piece.startswith("-"):
                    lo, hi = (int(x) for x in piece.split("-", 1))
                    if hi < lo:
                        raise ValueError
                    out.update(range(lo, hi + 1))
                elif piece:
                    out.add(int(piece))
            except ValueError:
                raise GcdbenchError(
                    f"{name} takes integers, lists or ranges (e.g. 0,1,2 or 0-4), got {value!r}."
                ) from None
    return sorted(out)


def parse_floats(values: tuple[str, ...], name: str) -> list[float]:
    out: list[float] = []
    for value in values:
        for piece in value.split(","):
            try:
                number = float(piece)
            except ValueError:
                raise GcdbenchError(
                    f"{name} takes numbers (e.g. 0.25 or 0.1,0.25), got {value!r}."
                ) from None
            if number not in out:
                out.append(number)
    return out


def parse_params(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise GcdbenchError(f"--param takes KEY=VALUE, got {value!r}; e.g. --param n_init=20.")
        out[key.strip()] = raw.strip()
    return out


class RichReporter(Reporter):
    def message(self, text: str) -> None:
        err_console.log(text)

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err_console, transient=True) as progress:
            task_id = progress.add_task(description, total=total)
            yield lambda advance: progress.advance(task_id, advance)
