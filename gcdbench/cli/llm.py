"""``gcdbench llm``: ask one feedback question from the command line; inspect the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gcdbench.api.feedback import LAYOUTS, AskingPolicy, FeedbackEnv, Query
from gcdbench.api.query_kind import QueryKind
from gcdbench.cli.common import console
from gcdbench.errors import GcdbenchError
from gcdbench.feedback import kinds
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


@llm.command()
@click.argument("what", type=click.Choice(["stats", "path"]), default="stats")
@ledger_option
def ledger(what: str, ledger: str | None) -> None:
    """Where the feedback ledger is, or what it holds (answers per kind, model and status)."""
    path = default_path(ledger)
    if what == "path":
        console.print(str(path), markup=False, highlight=False)
        return
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
