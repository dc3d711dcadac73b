"""``gcdbench llm``: ask one feedback question from the command line; inspect and keep the
feedback ledger (stats, path, prune, export, import, merge)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gcdbench.api.feedback import LAYOUTS, AskingPolicy, FeedbackEnv, Query
from gcdbench.api.query_kind import QueryKind
from gcdbench.cli.common import console
from gcdbench.cli.progress import make_reporter
from gcdbench.errors import GcdbenchError
from gcdbench.feedback import kinds, ledger_admin
from gcdbench.feedback.ledger import Ledger, default_path
from gcdbench.feedback.resolve import open_feedback, option_pairs, parse_llm_spec

ledger_option = click.option(
    "--ledger",
    type=click.Path(dir_okay=False),
    default=None,
    help="Feedback ledger file [env GCDBENCH_LEDGER; default <cache>/ledger.sqlite].",
)


@click.group()
def llm() -> None:
    """Ask an LLM one feedback question; inspect the feedback ledger."""


@llm.command()
@click.argument("kind", metavar="KIND")
@click.option("--llm", "llm_spec", default="llamacpp", show_default=True, metavar="SPEC")
@click.option("--llm-option", "llm_options", multiple=True, metavar="KEY=VALUE")
@click.option("--query", default=None, help="The query text (choice kinds, classification).")
@click.option("--option", "options", multiple=True, help="A choice or label (repeatable).")
@click.option("--text", "texts", multiple=True, help="A text of the group (repeatable).")
@click.option("--known", multiple=True, help="A known category name (repeatable).")
@click.option("--task", default=None, help='What a category is, e.g. "intent".')
@click.option("--json", "payload_json", default=None, help="The whole payload as JSON.")
@click.option("--orderings", default=1, show_default=True, help="Ask a choice in N option orders.")
@click.option(
    "--min-confidence", type=float, default=None, help="Ask for a confidence; flag answers below."
)
@click.option("--layout", type=click.Choice(LAYOUTS), default=LAYOUTS[0], show_default=True)
@click.option("--template", default=None, help="A template version other than the kind's own.")
@click.option("--show-prompt", is_flag=True, help="Print the rendered messages.")
@click.option("--llm-offline", is_flag=True, help="Answer from the ledger only.")
@ledger_option
def ask(
    kind: str,
    llm_spec: str,
    llm_options: tuple[str, ...],
    query: str | None,
    options: tuple[str, ...],
    texts: tuple[str, ...],
    known: tuple[str, ...],
    task: str | None,
    payload_json: str | None,
    orderings: int,
    min_confidence: float | None,
    layout: str,
    template: str | None,
    show_prompt: bool,
    llm_offline: bool,
    ledger: str | None,
) -> None:
    """Send one KIND question (`gcdbench list query-kinds`) to the provider --llm names and
    print what came back; --orderings, --min-confidence, --layout and --template are the
    asking policy a method's parameters would set."""
    query_kind = kinds.get_kind(kind)
    payload = _payload(
        query_kind, query, list(options), list(texts), list(known), task, payload_json
    )
    policy = AskingPolicy(orderings, min_confidence, layout, template)
    question = Query(kind, payload, policy=policy)
    query_kind.validate(question)
    if template is not None:
        query_kind.template(template)  # an unknown version fails here, before any model loads
    spec = parse_llm_spec(llm_spec, option_pairs(llm_options)).canonical()
    env = FeedbackEnv(ledger_path=Path(ledger) if ledger else None, offline=llm_offline)
    provider = open_feedback(spec, env)
    try:
        if show_prompt and hasattr(provider, "render"):
            for ask_ in provider.render(question):
                console.rule(f"prompt ({ask_.template_id}, order {ask_.order})")
                for message in ask_.request.messages:
                    console.print(f"[bold]{message.role}[/bold]", markup=True)
                    console.print(message.content, markup=False, highlight=False)
        [answer] = provider.answer([question])
        stats = provider.describe().get("stats", {}).get("per_kind", {}).get(kind, {})
    finally:
        provider.close()
    console.rule("answer")
    rows = {
        "raw": answer.raw,
        "value": json.dumps(answer.value, ensure_ascii=False),
        "status": answer.status,
        "confidence": "-" if answer.confidence is None else f"{answer.confidence:.3f}",
        "cached": str(answer.cached),
        "tokens": f"{stats.get('prompt_tokens', 0)} prompt + "
        f"{stats.get('completion_tokens', 0)} completion",
        "latency_s": f"{stats.get('latency_s', 0.0):.3f}",
        "backend requests": str(stats.get("backend_requests", 0)),
    }
    for key, value in rows.items():
        console.print(f"{key}: {value}", markup=False, highlight=False)


def _payload(
    kind: QueryKind,
    query: str | None,
    options: list[str],
    texts: list[str],
    known: list[str],
    task: str | None,
    payload_json: str | None,
) -> dict[str, Any]:
    """The flags, put in the fields the kind declares: ``--query`` in its ``query`` or
    ``text``, ``--option`` in its options list, ``--text`` in ``texts``, ``--known`` in
    ``known_names`` or ``known_labels``; ``--json`` adds or overrides any field."""
    declared = {f.name for f in kind.payload}
    lists = [getattr(kind, "options_field", None), "options", "labels"]
    options_field = next((f for f in lists if f and f in declared), None)
    payload: dict[str, Any] = {}
    query_field = next((f for f in ("query", "text") if f in declared), None)
    if query_field:
        payload[query_field] = query if query is not None else (texts[0] if texts else None)
    if options_field:
        payload[options_field] = options
    if "texts" in declared:
        payload["texts"] = texts
    known_field = next((f for f in ("known_names", "known_labels") if f in declared), None)
    if known_field:
        payload[known_field] = known
    payload = {k: v for k, v in payload.items() if v is not None and v != []}
    if task:
        payload["task"] = task
    if payload_json:
        try:
            extra = json.loads(payload_json)
        except json.JSONDecodeError as exc:
            raise GcdbenchError(f"--json is not valid JSON ({exc.msg}); quote it.") from None
        if not isinstance(extra, dict):
            raise GcdbenchError("--json must be a JSON object with the payload's fields.")
        payload.update(extra)
    return payload


@llm.group(invoke_without_command=True)
@ledger_option
@click.pass_context
def ledger(ctx: click.Context, ledger: str | None) -> None:
    """The feedback ledger: what it holds (`stats`, the default), where it is (`path`), and
    keeping it: `prune`, `export`, `import`, `merge` (docs/ledger.md)."""
    if ctx.invoked_subcommand is None:
        _print_stats(default_path(ledger))


def _path(ctx: click.Context, ledger: str | None) -> Path:
    """``--ledger`` after the subcommand, else before it, else the default."""
    parent = ctx.parent.params.get("ledger") if ctx.parent is not None else None
    return default_path(ledger or parent)


@ledger.command()
@ledger_option
@click.pass_context
def stats(ctx: click.Context, ledger: str | None) -> None:
    """Answers per kind, model and status, with their tokens and cost."""
    _print_stats(_path(ctx, ledger))


@ledger.command("path")
@ledger_option
@click.pass_context
def path_(ctx: click.Context, ledger: str | None) -> None:
    """Where the ledger is (it may not exist yet)."""
    console.print(str(_path(ctx, ledger)), markup=False, highlight=False)


def _print_stats(path: Path) -> None:
    if not path.is_file():
        console.print(f"no ledger at {path} yet: nothing has been asked.", markup=False)
        return
    store = Ledger(path)
    try:
        rows = store.stats()
        total = store.count()
    finally:
        store.close()
    table = Table(title=f"{path}")
    for column in ("kind", "model", "status", "answers", "tokens in", "tokens out", "$"):
        table.add_column(column, justify="right" if column[0] in "at$" else "left")
    for row in rows:
        identity = json.loads(row["identity"])
        model = f"{identity.get('backend', '?')}:{identity.get('model', '?')}"
        cost = "unknown" if row["cost_usd"] is None else f"{row['cost_usd']:.4f}"
        table.add_row(
            row["kind"],
            model,
            row["status"],
            str(row["answers"]),
            str(row["prompt_tokens"]),
            str(row["completion_tokens"]),
            cost,
        )
    console.print(table)
    console.print(f"{total} answers in {path}", markup=False, highlight=False)


# -- keeping the ledger ---------------------------------------------------------------------


def selection_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """The filters prune and export share; every one given must match."""
    options = [
        click.option(
            "--model",
            default=None,
            help="backend:model as `stats` shows it, the model id, or as --llm names a "
            "packaged model (llamacpp:smollm2-135m).",
        ),
        click.option("--kind", default=None, metavar="KIND", help="A query kind."),
        click.option(
            "--template", default=None, metavar="ID", help="A template id (kind/family-vN)."
        ),
        click.option(
            "--older-than",
            default=None,
            metavar="DURATION",
            help="Stored more than this long ago: 90s, 45m, 12h, 30d, 2w.",
        ),
        click.option(
            "--status",
            default=None,
            metavar="STATUS",
            help="The status stored with the answer (ok, parse-failure, …).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _selection(**values: str | None) -> ledger_admin.Selection:
    selection = ledger_admin.Selection(**values)
    if selection.older_than is not None:
        ledger_admin.parse_duration(selection.older_than)  # before the ledger is opened
    return selection


def _existing(path: Path) -> Ledger:
    """The ledger at ``path``, which must already be one."""
    ledger_admin.check_ledger_file(path)
    return Ledger(path)


def _target(path: Path) -> Ledger:
    """The ledger to add to: created when absent, refused when the file is something else."""
    if path.exists():
        ledger_admin.check_ledger_file(path)
    return Ledger(path)


@ledger.command()
@selection_options
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@ledger_option
@click.pass_context
def prune(
    ctx: click.Context,
    model: str | None,
    kind: str | None,
    template: str | None,
    older_than: str | None,
    status: str | None,
    dry_run: bool,
    ledger: str | None,
) -> None:
    """Delete the answers the filters select (at least one filter), in one transaction, and
    VACUUM the file. A deleted answer is asked again by the next run that needs it."""
    selection = _selection(
        model=model, kind=kind, template=template, older_than=older_than, status=status
    )
    path = _path(ctx, ledger)
    store = _existing(path)
    try:
        pruned = ledger_admin.prune(store, selection, dry_run=dry_run)
    finally:
        store.close()
    _print_counts(pruned.per_kind_model, f"{selection.describe()} in {path}")
    if dry_run:
        _say(f"would delete {pruned.selected} answers (dry run: nothing deleted)")
        return
    _say(
        f"deleted {pruned.deleted} answers from {path}: "
        f"{_mib(pruned.bytes_before)} -> {_mib(pruned.bytes_after)}"
    )
    if pruned.vacuum_error:
        _say(f"VACUUM did not run ({pruned.vacuum_error}); prune again later to free the space")


@ledger.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@selection_options
@ledger_option
@click.pass_context
def export_(
    ctx: click.Context,
    file: str,
    model: str | None,
    kind: str | None,
    template: str | None,
    older_than: str | None,
    status: str | None,
    ledger: str | None,
) -> None:
    """Write the answers the filters select (all without one) to FILE as JSON Lines: one
    row per line, every column as stored. The ledger holds no API key, so neither does FILE;
    it does hold the prompts' replies, which quote dataset text."""
    selection = _selection(
        model=model, kind=kind, template=template, older_than=older_than, status=status
    )
    path = _path(ctx, ledger)
    store = _existing(path)
    try:
        total = sum(ledger_admin.counts(store, selection).values())
        with make_reporter().task("export", total) as advance:
            written = ledger_admin.export(store, selection, Path(file), advance)
    finally:
        store.close()
    _say(f"exported {written} answers ({selection.describe()}) from {path} to {file}")


@ledger.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@ledger_option
@click.pass_context
def import_(ctx: click.Context, file: str, ledger: str | None) -> None:
    """Add the rows of FILE (written by `export`) to the ledger. Every line is checked
    first; a key the ledger already holds keeps its answer."""
    checked = ledger_admin.read_export(Path(file))
    path = _path(ctx, ledger)
    store = _target(path)
    try:
        added = ledger_admin.import_rows(store, checked)
    finally:
        store.close()
    _say(
        f"{file} -> {path}: {added.added} added, {added.already_present} already present, "
        f"{added.invalid} invalid lines"
    )
    for number, problem in checked.invalid[:5]:
        _say(f"  line {number}: {problem}")
    if len(checked.invalid) > 5:
        _say(f"  ... and {len(checked.invalid) - 5} more invalid lines")


@ledger.command("merge")
@click.argument("others", nargs=-1, required=True, type=click.Path(dir_okay=False))
@ledger_option
@click.pass_context
def merge(ctx: click.Context, others: tuple[str, ...], ledger: str | None) -> None:
    """Add the answers of other ledgers (from other machines) to --ledger, in one
    transaction; a key it already holds keeps its answer."""
    sources = [Path(o) for o in others]
    path = _path(ctx, ledger)
    ledger_admin.check_sources(path, sources)  # every one, before anything is opened to write
    store = _target(path)
    try:
        total = sum(ledger_admin.count_rows(s) for s in sources)
        with make_reporter().task("merge", total) as advance:
            reports = ledger_admin.merge(store, sources, advance)
        held = store.count()
    finally:
        store.close()
    for report in reports:
        _say(f"{report.source}: {report.added} added, {report.already_present} already present")
    _say(f"{held} answers in {path}")


def _print_counts(per_kind_model: Mapping[tuple[str, str], int], title: str) -> None:
    """One line per kind and model: never cut to the terminal's width, easy to grep."""
    _say(f"{title}:")
    for (kind, model), n in sorted(per_kind_model.items()):
        _say(f"{n:>9}  {kind}  {model}")


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"
