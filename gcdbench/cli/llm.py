"""``gcdbench llm``: ask one feedback question from the command line; inspect the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gcdbench.api.feedback import FeedbackEnv, Query
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
@click.argument("kind", type=click.Choice(sorted(kinds.KINDS)), metavar="KIND")
@click.option("--llm", "llm_spec", default="llamacpp", show_default=True, metavar="SPEC")
@click.option("--llm-option", "llm_options", multiple=True, metavar="KEY=VALUE")
@click.option("--query", default=None, help="The query text (choice kinds, classification).")
@click.option("--option", "options", multiple=True, help="A choice or label (repeatable).")
@click.option("--text", "texts", multiple=True, help="A text of the group (repeatable).")
@click.option("--known", multiple=True, help="A known category name (repeatable).")
@click.option("--task", default=None, help='What a category is, e.g. "intent".')
@click.option("--json", "payload_json", default=None, help="The whole payload as JSON.")
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
    show_prompt: bool,
    llm_offline: bool,
    ledger: str | None,
) -> None:
    """Send one KIND question to the provider --llm names and print what came back."""
    payload = _payload(kind, query, list(options), list(texts), list(known), task, payload_json)
    question = Query(kind, payload)
    kinds.validate(question)
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
    kind: str,
    query: str | None,
    options: list[str],
    texts: list[str],
    known: list[str],
    task: str | None,
    payload_json: str | None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if kind in {"select-similar-instance", "select-category"}:
        payload = {"query": query, "options": options}
    elif kind == "classify-into-labels":
        payload = {"text": query if query is not None else (texts[0] if texts else None)}
        payload["labels"] = options
    elif kind == "characterize-cluster":
        payload = {"texts": texts, "known_names": known}
    elif kind == "label-generation":
        payload = {"texts": texts, "known_labels": known}
    elif kind == "label-merging":
        payload = {"labels": options}
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
