"""``gcdbench plugins`` and ``gcdbench list KIND``."""

from __future__ import annotations

import dataclasses
import json

import click
from rich.table import Table

from gcdbench import registry
from gcdbench.cli.common import console
from gcdbench.errors import UnknownNameError

# Plural forms people type, for `gcdbench list`.
_KIND_ALIASES = {
    "methods": "method",
    "datasets": "dataset",
    "encoders": "encoder",
    "miners": "miner",
    "feedback": "feedback",
    "feedback-providers": "feedback",
    "losses": "loss",
    "loss-hooks": "loss",
    "executors": "executor",
    "llms": "llm",
    "llm-backends": "llm",
}


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins and what each registers."""
    infos = registry.plugins()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in infos], indent=2))
        return
    table = Table(title="gcdbench plugins")
    for column in ("plugin", "distribution", "registers", "status"):
        table.add_column(column, no_wrap=column == "plugin")
    for info in infos:
        registers = "\n".join(
            f"{kind}: {', '.join(sorted(names))}" for kind, names in sorted(info.registered.items())
        )
        dist = f"{info.distribution} {info.version}" if info.distribution else "–"
        table.add_row(info.name, dist, registers or "–", info.error or "ok")
    console.print(table)


@click.command("list")
@click.argument("kind")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(kind: str, as_json: bool) -> None:
    """List what is registered of KIND: methods, datasets, encoders, miners, feedback,
    losses, executors or llms."""
    if kind not in _KIND_ALIASES:
        raise UnknownNameError("kind", kind, _KIND_ALIASES)
    kind = _KIND_ALIASES[kind]
    rows = [_describe(kind, name) for name in registry.names(kind)]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    # One card per entry: descriptions and parameter lists do not fit table cells.
    for row in rows:
        console.print(f"[bold]{row['name']}[/bold]  [dim]({row['plugin']})[/dim]")
        if row.get("description"):
            console.print(f"  {row['description']}")
        for key, value in row.items():
            if key not in {"name", "plugin", "description"}:
                console.print(f"  {key}: {_cell(value)}")
    if not rows:
        console.print(f"[dim]no {kind} registered yet: a plugin adds one with its hook.[/dim]")


def _describe(kind: str, name: str) -> dict[str, object]:
    obj = registry.get(kind, name)
    row: dict[str, object] = {"name": name, "plugin": registry.owner(kind, name).name}
    if kind == "method":
        row["uses"] = list(obj.uses)
        row["ablations"] = [
            c.name + (f" (= {' + '.join(c.includes)})" if c.includes else "")
            for c in obj.components
        ]
        row["params"] = {f.name: f.default for f in dataclasses.fields(obj.Params)}
        row["presets"] = sorted(obj.presets)
    elif kind == "dataset":
        row["layout"] = obj.layout
        row["classes"] = obj.num_classes
        row["task"] = obj.task
        row["license"] = obj.license
    row["description"] = getattr(obj, "description", "")
    return row


def _cell(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)
