"""``gcdbench data``: list datasets, download them, show where they live."""

from __future__ import annotations

import click
from rich.table import Table

from gcdbench import registry
from gcdbench.cli.common import RichReporter, console, data_dir_option
from gcdbench.data.store import download_dataset, missing_files, resolve_data_root
from gcdbench.errors import GcdbenchError
from gcdbench.runner.run import download_reporter


@click.group()
def data() -> None:
    """Benchmark data: list, download, locate."""


@data.command("list")
@data_dir_option
def list_datasets(data_dir: str | None) -> None:
    """Registered datasets and whether their files are present."""
    root, origin = resolve_data_root(data_dir)
    table = Table(title=f"datasets ({root}, from {origin})")
    for column in ("name", "layout", "classes", "files", "present", "license"):
        table.add_column(column, no_wrap=column != "license")
    for name in registry.names("dataset"):
        d = registry.get("dataset", name)
        present = not missing_files(d, root / name)
        table.add_row(
            name,
            d.layout,
            str(d.num_classes),
            ",".join(f.name.removesuffix(".tsv") for f in d.files),
            "yes" if present else "no",
            d.license,
        )
    console.print(table)


@data.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every registered dataset.")
@data_dir_option
@click.option(
    "--mirror", default=None, help="Base URL serving <name>/<file> [env GCDBENCH_DATA_MIRROR]."
)
@click.option("--force", is_flag=True, help="Download again even if the files are present.")
def download(
    names: tuple[str, ...], all_: bool, data_dir: str | None, mirror: str | None, force: bool
) -> None:
    """Download datasets from their public sources and check their sha256."""
    if not names and not all_:
        raise GcdbenchError(
            "name the datasets to download (see `gcdbench data list`) or pass --all."
        )
    selected = registry.names("dataset") if all_ else list(names)
    definitions = [registry.get("dataset", n) for n in selected]
    root, _ = resolve_data_root(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    reporter = RichReporter()
    for definition in definitions:
        paths = download_dataset(
            definition, root, mirror=mirror, force=force, on_progress=download_reporter(reporter)
        )
        console.print(f"{definition.name}: {len(paths)} files in {root / definition.name}")


@data.command()
@data_dir_option
def path(data_dir: str | None) -> None:
    """Print the data folder gcdbench would use."""
    root, origin = resolve_data_root(data_dir)
    click.echo(f"{root}\t({origin})")
