"""Options and helpers shared by subcommands."""

from __future__ import annotations

import click
from rich.console import Console

from gcdbench.errors import GcdbenchError

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


#: NumPy's ``RandomState`` (which draws the split) takes seeds in [0, 2**32).
MAX_SEED = 2**32 - 1


#: Ray executor options shared by ``gcdbench run`` and ``gcdbench sweep`` (docs/cluster.md).
ray_resources_option = click.option(
    "--ray-resources",
    "ray_resources",
    multiple=True,
    metavar="METHOD=cpus:N,gpus:N,memory_gb:N",
    help="What one run of METHOD asks Ray for, over the method's own declaration "
    "(--executor ray; repeatable; env GCDBENCH_RAY_RESOURCES).",
)
ray_no_shared_disk_option = click.option(
    "--ray-no-shared-disk",
    is_flag=True,
    help="Ray workers run in stores of their own; this process writes their records and "
    "ledger rows (env GCDBENCH_RAY_NO_SHARED_DISK=1).",
)


def parse_names(values: tuple[str, ...], name: str, example: str) -> list[str]:
    """Repeated or comma-separated names, in order, without repeats; an empty item fails."""
    out: list[str] = []
    for piece in _pieces(values, name, example):
        if piece not in out:
            out.append(piece)
    return out


def parse_int_ranges(values: tuple[str, ...], name: str) -> list[tuple[int, int]]:
    """``0,1,2`` / ``0-4`` / repeated options -> sorted, disjoint inclusive ranges.

    Ranges stay ranges, so a plan's size is known (:func:`count_ints`) before a huge one
    such as ``0-100000000`` is expanded."""
    ranges: list[tuple[int, int]] = []
    for piece in _pieces(values, name, "0,1,2 or 0-4"):
        ranges.append(_int_range(piece, name))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def count_ints(ranges: list[tuple[int, int]]) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def expand_ints(ranges: list[tuple[int, int]]) -> list[int]:
    return [i for lo, hi in ranges for i in range(lo, hi + 1)]


def parse_ints(values: tuple[str, ...], name: str) -> list[int]:
    """``0,1,2`` / ``0-4`` / repeated options -> a sorted list of distinct ints (the inverse
    of :func:`gcdbench.report.leaderboard.format_ints`)."""
    return expand_ints(parse_int_ranges(values, name))


def _int_range(piece: str, name: str) -> tuple[int, int]:
    try:
        if "-" in piece.lstrip("-") and not piece.startswith("-"):
            lo, hi = (int(x) for x in piece.split("-", 1))
        else:
            lo = hi = int(piece)
    except ValueError:
        raise GcdbenchError(
            f"{name} takes integers, lists or ranges (e.g. 0,1,2 or 0-4), got {piece!r}."
        ) from None
    if hi < lo:
        raise GcdbenchError(f"{name} range {piece!r} runs backwards; write it low-high, e.g. 0-4.")
    if lo < 0 or hi > MAX_SEED:
        bad = lo if lo < 0 else hi
        raise GcdbenchError(
            f"{name} {bad} is outside [0, {MAX_SEED}] (NumPy's RandomState draws the split); "
            f"pass e.g. {name} 0."
        )
    return lo, hi


def parse_floats(values: tuple[str, ...], name: str) -> list[float]:
    out: list[float] = []
    for piece in _pieces(values, name, "0.25 or 0.1,0.25"):
        try:
            number = float(piece)
        except ValueError:
            raise GcdbenchError(
                f"{name} takes numbers (e.g. 0.25 or 0.1,0.25), got {piece!r}."
            ) from None
        if number not in out:
            out.append(number)
    return out


def _pieces(values: tuple[str, ...], name: str, example: str) -> list[str]:
    """The comma-separated items of repeated option values; an empty value or item (``''``,
    ``,``, ``a,,b``) fails rather than silently shrinking the plan to nothing."""
    pieces = [piece.strip() for value in values for piece in value.split(",")]
    if not values or any(not piece for piece in pieces):
        shown = ",".join(values) if values else ""
        raise GcdbenchError(f"{name} has an empty value ({shown!r}); pass e.g. {name} {example}.")
    return pieces


def parse_params(values: tuple[str, ...], flag: str = "--param") -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise GcdbenchError(f"{flag} takes KEY=VALUE, got {value!r}; e.g. {flag} n_init=20.")
        out[key.strip()] = raw.strip()
    return out


def require_text(value: str | None, flag: str, fix: str) -> None:
    """An option given as an empty string is a mistake, not a request for the default."""
    if value is not None and not value.strip():
        raise GcdbenchError(f"{flag} is empty; {fix}.")
