"""``gcdbench feedback eval``: score a feedback provider on a dataset's question bank before
paying for a training run (docs/feedback-bank.md)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from gcdbench import paths, registry
from gcdbench.api.feedback import YES_NO, AskingPolicy, FeedbackEnv
from gcdbench.api.query_kind import ChoiceKind
from gcdbench.api.values import NONE_WORDS, parse_value
from gcdbench.cli.common import (
    console,
    data_dir_option,
    parse_params,
    require_text,
    results_dir_option,
)
from gcdbench.cli.llm import ledger_option
from gcdbench.cli.progress import make_reporter
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.bank import KINDS
from gcdbench.feedback.bank_eval import DESCRIBERS
from gcdbench.feedback.kinds import get_kind
from gcdbench.feedback.resolve import option_pairs, parse_llm_spec, resolve_llm
from gcdbench.report.feedback_board import pct

#: GLEAN's default asking policy (its cpu preset): two option orders, confidence 0.8.
GLEAN_POLICY = AskingPolicy(orderings=2, min_confidence=0.8)


@click.group()
def feedback() -> None:
    """Measure feedback providers on a fixed bank of questions with gold answers."""


@feedback.command("eval")
@click.option("-d", "--dataset", required=True, help="A registered dataset, e.g. banking.")
@click.option("--known-ratio", type=float, default=0.25, show_default=True)
@click.option("--labeled-ratio", type=float, default=0.1, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="The split's seed.")
@click.option(
    "--llm", "llm_spec", default=None, metavar="SPEC", help="Provider [default llamacpp]."
)
@click.option("--llm-option", "llm_options", multiple=True, metavar="KEY=VALUE")
@click.option(
    "--ask",
    "ask_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Asking policy field (orderings, min_confidence, layout, template, ...); default "
    "GLEAN's: orderings=2, min_confidence=0.8.",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(KINDS),
    help="Only these kinds (repeatable) [default: all].",
)
@click.option(
    "--describe",
    "describer",
    type=click.Choice(DESCRIBERS),
    default="provider",
    show_default=True,
    help="Who writes the category options: the provider under test, or the clusters' texts.",
)
@click.option(
    "--fusion",
    is_flag=True,
    help="Also ask the calibration questions (labeled texts) and score the provider's "
    "answers fused with the encoder's similarities.",
)
@click.option("--size", type=int, default=100, show_default=True, help="Questions per kind.")
@click.option("--encoder", default=None, help="Encoder the questions are mined with.")
@click.option(
    "--preset",
    type=click.Choice(["cpu", "smoke"]),
    default="cpu",
    show_default=True,
    help="Pre-training preset of the mining model (smoke: tests only).",
)
@click.option("--force", is_flag=True, help="Evaluate again even if the record exists.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
@results_dir_option
@data_dir_option
@ledger_option
def eval_(
    dataset: str,
    known_ratio: float,
    labeled_ratio: float,
    seed: int,
    llm_spec: str | None,
    llm_options: tuple[str, ...],
    ask_pairs: tuple[str, ...],
    kinds: tuple[str, ...],
    describer: str,
    fusion: bool,
    size: int,
    encoder: str | None,
    preset: str,
    force: bool,
    quiet: bool,
    results_dir: str | None,
    data_dir: str | None,
    ledger: str | None,
) -> None:
    """Ask a provider a dataset's question bank; print and store its scores beside the
    encoder's own answers to the same questions."""
    from gcdbench.runner.bank import BankParams, build_bank
    from gcdbench.runner.feedback_eval import EvalRequest, evaluate

    # Everything the user typed is checked before the bank is built or anything is asked.
    _check_text_options(encoder=encoder, ledger=ledger, results_dir=results_dir, data_dir=data_dir)
    canonical = resolve_llm(llm_spec, option_pairs(llm_options))
    policy = policy_from_pairs(parse_params(ask_pairs, "--ask"), GLEAN_POLICY)
    request = EvalRequest(canonical, policy, tuple(kinds) or KINDS, describer, fusion)
    check_templates(policy, request.kinds, canonical)
    reporter = make_reporter(quiet)
    built = build_bank(
        dataset,
        known_ratio,
        seed,
        labeled_ratio=labeled_ratio,
        encoder=encoder,
        params=BankParams.for_preset(preset, size),
        data_dir=data_dir,
        reporter=reporter,
        calibration=fusion,
    )
    env = FeedbackEnv(seed=seed, gold=built.gold, ledger_path=Path(ledger) if ledger else None)
    root = paths.results_dir(results_dir)
    path, written = evaluate(
        built.bank,
        request,
        env,
        root,
        force=force,
        reporter=reporter,
        calibration=built.calibration,
    )
    record = json.loads(path.read_text(encoding="utf-8"))
    console.print(feedback_table(record))
    for kind, scores in record["kinds"].items():
        fused = scores.get("fusion")
        if fused and fused["fused_accuracy"] is not None:
            console.print(
                f"{kind} fused with the encoder (fitted on {fused['calibration_questions']} "
                f"labeled questions): {pct(fused['fused_accuracy'])} against the encoder's "
                f"{pct(fused['encoder_accuracy'])} ({100 * fused['gain']:+.1f})"
            )
    console.print(f"{'wrote' if written else 'already stored (--force re-asks)'}: {path}")


def _check_text_options(**values: str | None) -> None:
    """An option given as ``''`` is a slip, never a request for its default: an empty
    --results-dir would otherwise write to ./results, an empty --encoder mine with another."""
    fixes = {
        "encoder": "name one (e.g. all-MiniLM-L6-v2) or leave --encoder out for the default",
        "ledger": "pass a file path or leave --ledger out for <cache>/ledger.sqlite",
        "results_dir": "pass a folder or leave --results-dir out for ./results",
        "data_dir": "pass a folder or leave --data-dir out",
    }
    for key, value in values.items():
        require_text(value, "--" + key.replace("_", "-"), fixes[key])


def check_templates(policy: AskingPolicy, asked: Sequence[str], llm: str) -> None:
    """The prompt template ``policy`` names exists for every kind ``asked``, and can ask
    yes/no questions when the policy scores that way: rendering would find out only after
    the bank is mined. Oracles read no prompt, so for them only the template must exist."""
    simulated = registry.get("feedback", parse_llm_spec(llm).name).simulated
    for name in asked:
        kind = get_kind(name)
        try:
            template = kind.template(policy.template)  # an unknown one: the known ones named
            if policy.scoring == YES_NO and not simulated and isinstance(kind, ChoiceKind):
                kind.require_yes_no(template)
        except GcdbenchError as exc:  # the message names the method parameter; here: --ask
            fix = str(exc).replace("-p prompt_template=", "--ask template=")
            named = f"template={_shown(policy.template)}" if policy.template else "scoring=yes-no"
            raise GcdbenchError(f"--ask {named}: {fix}") from None
        except OSError as exc:  # a name no file may have (too long): no template has it
            raise GcdbenchError(
                f"--ask template: no {name} prompt template has that name ({exc.strerror}); "
                f"use one of {', '.join(kind.templates())}."
            ) from None


def policy_from_pairs(pairs: dict[str, str], base: AskingPolicy) -> AskingPolicy:
    """``--ask KEY=VALUE`` pairs over ``base``, each coerced to its field's type."""
    fields = {f.name: f for f in dataclasses.fields(AskingPolicy)}
    values: dict[str, Any] = {}
    for key, raw in pairs.items():
        if key not in fields:
            raise GcdbenchError(
                f"--ask {_shown(key)}: the asking policy has no such field; use one of "
                f"{', '.join(fields)}."
            )
        if not raw.strip():  # an empty template would silently be the kind's default
            raise GcdbenchError(f"--ask {key}= is empty; give a value or leave --ask {key} out.")
        default = getattr(base, key)
        declared = str(fields[key].type)
        if raw.strip().lower() in NONE_WORDS and "None" in declared:
            values[key] = None
            continue
        kind: type = type(default) if default is not None else _declared_type(declared)
        try:
            values[key] = parse_value(raw, kind)
        except ValueError as exc:
            raise GcdbenchError(f"--ask {key}={raw!r}: {exc}") from None
    return dataclasses.replace(base, **values)


def _shown(text: str) -> str:
    """``text`` as typed, or quoted and escaped where it holds a character that would break
    the one-line error (a line or record separator, a control character)."""
    return text if text.isprintable() else repr(text)


def _declared_type(declared: str) -> type:
    for name, kind in (("float", float), ("int", int), ("bool", bool)):
        if name in declared:
            return kind
    return str


def feedback_table(record: dict[str, Any]) -> Table:
    bank = record["bank"]
    title = (
        f"{record['llm']} on {bank['dataset']} (known {bank['known_ratio']}, seed "
        f"{bank['seed']}), bank {bank['bank_id'][:12]}"
    )
    table = Table(title=title, padding=(0, 1))
    # Short headers, so the table fits an 80-column terminal; docs/feedback-bank.md says
    # what each is.
    for column in (
        "kind", "N", "kept", "acc kept", "enc kept", "+fallback", "enc all", "gain", "ECE",
        "s/q",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column == "kind" else "right")
    for kind, s in record["kinds"].items():
        if "accuracy" not in s:
            continue
        table.add_row(
            kind.removeprefix("select-").removesuffix("-instance"),
            str(s["questions"]),
            pct(s["coverage_kept"]),
            pct(s["accuracy_kept"]),
            pct(s["encoder_accuracy_kept"]),
            pct(s["accuracy_with_fallback"]),
            pct(s["encoder_accuracy"]),
            "–" if s["gain"] is None else f"{100 * s['gain']:+.1f}",
            "–" if s["ece"] is None else f"{s['ece']:.2f}",
            f"{s['cost']['wall_s_per_question']:.1f}",
        )
    return table
