"""``gcdbench data``: list datasets, download them, check them, show where they live."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from gcdbench import registry
from gcdbench.cli.common import console, data_dir_option
from gcdbench.cli.progress import make_reporter
from gcdbench.data.store import (
    cache_data_root,
    download_dataset,
    locate_dataset,
    missing_files,
    own_folder,
    resolve_data_root,
)
from gcdbench.errors import DataError, GcdbenchError

# The defaults of `gcdbench run`, so a plain `data check` judges what a plain run would do.
DEFAULT_KNOWN_RATIO = 0.25
DEFAULT_LABELED_RATIO = 0.1


@click.group()
def data() -> None:
    """Benchmark data: list, download, check, locate."""


@data.command("list")
@data_dir_option
def list_datasets(data_dir: str | None) -> None:
    """Registered datasets and where their files are (or that they are missing)."""
    root, origin = resolve_data_root(data_dir)
    table = Table(title=f"datasets (data root {root}, from {origin})")
    for column in ("name", "layout", "classes", "files", "found in", "license"):
        table.add_column(column, no_wrap=column != "license")
    for name in registry.names("dataset"):
        d = registry.get("dataset", name)
        try:
            _, where = locate_dataset(d, data_dir, download=False)
        except DataError:
            where = "missing"
        table.add_row(
            name,
            d.layout,
            str(d.num_classes),
            ",".join(f.name.removesuffix(".tsv") for f in d.files),
            where,
            d.license,
        )
    console.print(table)


@data.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every registered dataset.")
@click.option(
    "--to",
    "to",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder to download into, one sub-folder per dataset [default: the user cache, "
    "where runs look last; GCDBENCH_DATA is never written to].",
)
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False), hidden=True)
@click.option(
    "--mirror", default=None, help="Base URL serving <name>/<file> [env GCDBENCH_DATA_MIRROR]."
)
@click.option("--force", is_flag=True, help="Download again even if the files are present.")
def download(
    names: tuple[str, ...],
    all_: bool,
    to: str | None,
    data_dir: str | None,
    mirror: str | None,
    force: bool,
) -> None:
    """Download datasets from their public sources and check their sha256."""
    from gcdbench.runner.run import download_reporter  # the runner loads pandas and NumPy

    if not names and not all_:
        raise GcdbenchError(
            "name the datasets to download (see `gcdbench data list`) or pass --all."
        )
    selected = registry.names("dataset") if all_ else list(names)
    definitions = [registry.get("dataset", n) for n in selected]
    # --data-dir is the old spelling of --to: an explicit folder, so still honoured.
    target = to or data_dir
    root = Path(target).expanduser() if target else cache_data_root()
    root.mkdir(parents=True, exist_ok=True)
    reporter = make_reporter()
    for definition in definitions:
        own = own_folder(definition)
        if own is not None and not target and not missing_files(definition, own):
            click.echo(f"{definition.name}: ships its files in {own}; nothing to download")
            continue
        paths = download_dataset(
            definition, root, mirror=mirror, force=force, on_progress=download_reporter(reporter)
        )
        # Plain echo: paths must not be wrapped, people copy them.
        click.echo(f"{definition.name}: {len(paths)} files in {root / definition.name}")
    if target:
        click.echo(f"read them with --data-dir {root} (or GCDBENCH_DATA={root})")


@data.command()
@click.argument("name")
@data_dir_option
@click.option(
    "--known-ratio",
    type=float,
    default=DEFAULT_KNOWN_RATIO,
    show_default=True,
    help="Known-class share to judge the data for (as `gcdbench run`).",
)
@click.option(
    "--labeled-ratio",
    type=float,
    default=DEFAULT_LABELED_RATIO,
    show_default=True,
    help="Labeled share of each known class to judge the data for.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Also draw this seed's split and name its exact known classes without labels.",
)
@click.option("--no-download", is_flag=True, help="Never download data; fail if it is missing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def check(
    name: str,
    data_dir: str | None,
    known_ratio: float,
    labeled_ratio: float,
    seed: int | None,
    no_download: bool,
    as_json: bool,
) -> None:
    """Load dataset NAME and report what would bend a GCD run on it.

    Exit code 0 when the data can be run (warnings included), 2 when a run would stop.
    """
    # Loading and splitting data needs NumPy and the runner (pandas): `data list` does not.
    from gcdbench.data.checks import check_dataset, stop_on_errors, summary
    from gcdbench.data.split import check_known_classes, check_ratio, make_split
    from gcdbench.runner.run import download_reporter

    definition = registry.get("dataset", name)
    check_ratio("--known-ratio", known_ratio)
    check_ratio("--labeled-ratio", labeled_ratio)
    folder, origin = locate_dataset(
        definition,
        data_dir,
        download=not no_download,
        on_progress=download_reporter(make_reporter()),
    )
    parts = definition.load(folder)
    split = None
    if seed is not None:
        check_known_classes(len(parts.classes), known_ratio)
        split = make_split(parts, known_ratio=known_ratio, labeled_ratio=labeled_ratio, seed=seed)
    issues = check_dataset(
        parts, definition, known_ratio=known_ratio, labeled_ratio=labeled_ratio, split=split
    )
    counts = summary(parts)
    if as_json:
        out = {
            "dataset": name,
            "folder": str(folder),
            "origin": origin,
            **counts,
            "files": [f.to_dict() for f in parts.files],
            "issues": [i.to_dict() for i in issues],
        }
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(
            f"{name}: {counts['classes']} classes, {counts['rows']} rows (train "
            f"{counts['train']}, dev {counts['dev']}, test {counts['test']}) in {folder} "
            f"(from {origin})"
        )
        for file in parts.files:
            state = "verified" if file.verified else "NOT verified"
            click.echo(f"  {file.name}: sha256 {file.sha256[:12]}… {state}")
        for issue in issues:
            click.echo(f"{issue.severity} [{issue.code}]: {issue.message}")
        tally = {s: sum(i.severity == s for i in issues) for s in ("error", "warning", "info")}
        if not issues:
            click.echo(f"{name}: no problems found")
        else:
            click.echo(
                f"{name}: {tally['error']} errors, {tally['warning']} warnings, "
                f"{tally['info']} note" + ("" if tally["info"] == 1 else "s")
            )
    if any(i.severity == "error" for i in issues):
        try:
            stop_on_errors(issues)
        except DataError as exc:
            raise DataError(f"{name} cannot be run: {exc}") from None


@data.command()
@click.argument("name", required=False)
@data_dir_option
def path(name: str | None, data_dir: str | None) -> None:
    """Print the data root gcdbench would use, or where dataset NAME is read from."""
    if name is None:
        root, origin = resolve_data_root(data_dir)
        click.echo(f"{root}\t({origin})")
        return
    folder, origin = locate_dataset(registry.get("dataset", name), data_dir, download=False)
    click.echo(f"{folder}\t({origin})")
