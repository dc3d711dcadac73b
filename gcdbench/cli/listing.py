"""``gcdbench plugins`` and ``gcdbench list KIND``."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from gcdbench import registry
from gcdbench.api.method import param_schema
from gcdbench.cli.common import console
from gcdbench.errors import GcdbenchError, UnknownNameError

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
    "query-kinds": "query-kind",
    "kinds": "query-kind",
    "refiners": "refiner",
    "k-estimators": "k-estimator",
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
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--params",
    "with_params",
    is_flag=True,
    help="Methods only: each parameter's type, default, allowed values and meaning.",
)
def list_(kind: str, name: str | None, as_json: bool, with_params: bool) -> None:
    """List what is registered of KIND: methods, datasets, encoders, miners, feedback,
    query-kinds, refiners, k-estimators, losses, executors or llms; NAME shows one entry.
    `gcdbench list methods --params` shows every method's parameter schema (`gcdbench list
    methods glean --params`: one; refiners too)."""
    if kind not in _KIND_ALIASES:
        raise UnknownNameError("kind", kind, _KIND_ALIASES)
    kind = _KIND_ALIASES[kind]
    if with_params and kind not in ("method", "refiner"):
        raise GcdbenchError(f"--params applies to methods and refiners; drop it for {kind}s.")
    names = registry.names(kind)
    if name is not None:
        if name not in names:
            raise UnknownNameError(kind, name, names)
        names = [name]
    rows = [_describe(kind, n, with_params) for n in names]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    # One card per entry: descriptions and parameter lists do not fit table cells.
    for row in rows:
        console.print(f"[bold]{row['name']}[/bold]  [dim]({row['plugin']})[/dim]")
        if row.get("description"):
            console.print(f"  {row['description']}")
        # with --params the schema table shows the defaults: no params line twice
        hidden = {"name", "plugin", "description", "schema", *(["params"] if with_params else [])}
        for key, value in row.items():
            if key not in hidden:
                console.print(f"  {key}: {escape(_cell(value))}")
        if "schema" in row:
            console.print(_schema_table(row["schema"]))  # type: ignore[arg-type]
    if not rows:
        console.print(f"[dim]no {kind} registered yet: a plugin adds one with its hook.[/dim]")


def _schema_table(schema: list[dict[str, Any]]) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, show_edge=False)
    for column in ("  parameter", "type", "default", "allowed", "meaning"):
        table.add_column(column, no_wrap=column != "meaning", style="dim" * (column == "type"))
    for entry in schema:
        table.add_row(
            f"  {entry['name']}",
            entry["type"],
            _cell(entry["default"]),
            entry["allowed"] or "any",
            entry["help"],
        )
    return table


def _describe(kind: str, name: str, with_params: bool = False) -> dict[str, object]:
    obj = registry.get(kind, name)
    row: dict[str, object] = {"name": name, "plugin": registry.owner(kind, name).name}
    if kind == "method":
        row["uses"] = list(obj.uses)
        row["asks"] = list(obj.asks)
        if obj.pseudo_labels:
            row["refinable"] = "yes: assigns labels text by text (--refine)"
        row["ablations"] = [
            c.name + (f" (= {' + '.join(c.includes)})" if c.includes else "")
            for c in obj.components
        ]
        row["params"] = {f.name: f.default for f in dataclasses.fields(obj.Params)}
        row["presets"] = sorted(obj.presets)
        if with_params:
            row["schema"] = param_schema(obj.Params)
    elif kind == "refiner":
        row["uses"] = list(obj.uses)
        row["params"] = {f.name: f.default for f in dataclasses.fields(obj.Params)}
        if with_params:
            row["schema"] = param_schema(obj.Params)
    elif kind == "query-kind":
        row["payload"] = [_field(f) for f in obj.payload]
        row["meta"] = [_field(f) for f in obj.meta]
        row["choice"] = bool(getattr(obj, "correct_options", None))
        row["templates"] = [
            t + (" (default)" if t == obj.default_template else "") for t in obj.templates()
        ]
    elif kind == "k-estimator":
        row["version"] = obj.version
        row["use"] = f"gcdbench run METHOD --k estimate:{name}"
    elif kind == "dataset":
        row["layout"] = obj.layout
        row["classes"] = obj.num_classes
        row["task"] = obj.task
        row["license"] = obj.license
    row["description"] = getattr(obj, "description", "")
    return row


def _field(field: Any) -> str:
    return f"{field.name}: {field.type}" + ("" if field.required else " (optional)")


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()  # as -p takes it
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)
