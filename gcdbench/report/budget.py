"""What each run spent — LLM questions, tokens, dollars, wall time — and the budget table:
mean ± std over seeds per leaderboard row, beside ACC.

Read from the record (docs/results.md): ``feedback.stats.total`` (``queries``,
``prompt_tokens`` + ``completion_tokens``, ``cost_usd``) and ``provenance.durations_s.total``.
A run whose record has no ``feedback`` asked no question, so it spent nothing on an LLM.
Tokens and dollars count backend requests only: an answer served from the ledger is free, so a
re-run on a warm ledger reports fewer tokens than the first run for the same questions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gcdbench.api.record import ResultRecord
from gcdbench.report.leaderboard import RowGroup, _dataset_sort_key, _percent, simulated_feedback

__all__ = ["RunCost", "budget_table", "mean_std", "run_cost"]

EMPTY = "–"


@dataclass(frozen=True)
class RunCost:
    """One run's spend. ``dollars`` is None when a model's price was unknown; ``wall_s`` when
    the record has no total duration."""

    questions: int
    tokens: int
    dollars: float | None
    wall_s: float | None
    simulated: bool  # the answers came from gold labels: their zero cost is not a real one


def run_cost(record: ResultRecord) -> RunCost:
    durations = record.provenance.get("durations_s") or {}
    wall = durations.get("total")
    wall_s = None if wall is None else float(wall)
    if not record.feedback:
        return RunCost(0, 0, 0.0, wall_s, simulated=False)
    total = (record.feedback.get("stats") or {}).get("total") or {}
    dollars = total.get("cost_usd")
    return RunCost(
        questions=int(total.get("queries", 0)),
        tokens=int(total.get("prompt_tokens", 0)) + int(total.get("completion_tokens", 0)),
        dollars=None if dollars is None else float(dollars),
        wall_s=wall_s,
        simulated=simulated_feedback(record),
    )


def mean_std(values: Sequence[float | None]) -> tuple[float, float] | None:
    """Mean and sample std (ddof=1, as the leaderboard; NaN for one value); None when any
    value is unknown, since a mean over the known ones would understate the spend."""
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return None
    known = [float(v) for v in values if v is not None]
    mean = sum(known) / len(known)
    if len(known) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in known) / (len(known) - 1))


def _cell(values: Sequence[float | None], digits: int, unknown: str = EMPTY) -> str:
    """mean±std; a single value when every seed agrees (spend is often exactly the same)."""
    stats = mean_std(values)
    if stats is None:
        return unknown
    mean, std = stats
    if math.isnan(std) or len(set(values)) == 1:
        return _number(mean, digits)
    return f"{_number(mean, digits)}±{std:.{digits}f}"


def _number(value: float, digits: int) -> str:
    return "0" if value == 0 else f"{value:.{digits}f}"


def _acc_cell(values: Sequence[float | None]) -> str:
    """As the leaderboard prints it: mean±std with 2 decimals, no ± for one seed."""
    stats = mean_std(values)
    if stats is None:
        return EMPTY
    mean, std = stats
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f}±{std:.2f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def budget_table(groups: Iterable[RowGroup]) -> list[str]:
    """Markdown lines: one row per leaderboard row, dataset and known ratio, with ACC and each
    spend as mean±std over the row's seeds."""
    ordered = sorted(
        groups,
        key=lambda g: (
            round(g.records[0].spec.known_ratio, 6),
            _dataset_sort_key(g.records[0].spec.dataset),
            g.row,
        ),
    )
    lines = [
        "| Method | dataset | known | n | ACC | questions | tokens | dollars | wall time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for group in ordered:
        spec = group.records[0].spec
        costs = [run_cost(r) for r in group.records]
        acc: list[float | None] = [r.metrics.get("acc") for r in group.records]
        cells = [
            _escape(group.row),
            spec.dataset,
            _percent(spec.known_ratio),
            str(len(group.records)),
            _acc_cell(acc),
            _cell([float(c.questions) for c in costs], 0),
            _cell([float(c.tokens) for c in costs], 0),
            _cell([c.dollars for c in costs], 4, unknown="unknown price"),
            _cell([c.wall_s for c in costs], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
