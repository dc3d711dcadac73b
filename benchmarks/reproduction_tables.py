"""The markdown tables of benchmarks/reproduction.py, from run records alone.

A configuration is what the plan fixes for all its runs: the feedback (``--llm``), preset,
encoder and ratios. ``no-llm`` asks no feedback, so its runs belong to every configuration
with the same preset, encoder and ratios (configs a and b share one set of control runs).
Means are over seeds with the sample standard deviation (ddof=1), as the leaderboard does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gcdbench.api.feedback import PARSE_FAILURE
from gcdbench.api.record import ResultRecord
from gcdbench.report.leaderboard import format_ints
from gcdbench.report.references import load_references

METHOD_ORDER = ("glean", "loop", "no-llm")
DATASET_ORDER = ("banking", "clinc", "stackoverflow")
ABLATION_ORDER = ("instance-instance", "cluster-instance", "quality")
EMPTY = "–"
#: GLEAN v1 (arXiv 2502.18414), BANKING 25%: ACC lost when a component is removed; the
#: paper's summary gives no figure for "w/o quality" (docs/methods/glean.md, "Gap").
PAPER_ABLATION_DELTA = {
    ("glean", "banking", 0.25): {"instance-instance": -2.33, "cluster-instance": -3.23}
}
PAPER_FEEDBACK_NOTE = (
    "Paper (GLEAN v1, gpt-4o-mini): quality enhancement raises similar-instance accuracy "
    "0.423 → 0.530 and category-selection accuracy 0.517 → 0.859 (random choice 0.056); "
    "nearest-centre representatives give 0.47–0.65 description coverage."
)
SHORT_KIND = {"select-similar-instance": "instance", "select-category": "category"}


@dataclass(frozen=True)
class ConfigKey:
    llm: str | None
    preset: str | None
    encoder: str | None
    known_ratio: float
    labeled_ratio: float


def config_key(record: ResultRecord) -> ConfigKey:
    spec = record.spec
    ratios = round(spec.known_ratio, 6), round(spec.labeled_ratio, 6)
    return ConfigKey(spec.llm, spec.preset, spec.encoder, *ratios)


def config_groups(records: Iterable[ResultRecord]) -> dict[ConfigKey, list[ResultRecord]]:
    records = list(records)
    asking = {config_key(r) for r in records if r.spec.llm is not None}
    groups: dict[ConfigKey, list[ResultRecord]] = defaultdict(list)
    for record in records:
        key = config_key(record)
        homes = [a for a in asking if replace(a, llm=None) == key] if key.llm is None else []
        for home in homes or [key]:
            groups[home].append(record)
    return dict(sorted(groups.items(), key=lambda kv: repr(kv[0])))


def mean_std(values: Sequence[float | None], one_seed: str = " (n=1)") -> str:
    """``mean±std`` over seeds; one seed has no spread, so it says ``one_seed`` instead."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if finite.size == 0:
        return EMPTY
    if finite.size == 1:
        return f"{finite[0]:.2f}{one_seed}"
    return f"{finite.mean():.2f}±{finite.std(ddof=1):.2f}"


def _mean(values: Iterable[float | None], digits: int = 3) -> str:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return f"{np.mean(finite):.{digits}f}" if finite else EMPTY


def _order(record: ResultRecord) -> tuple[Any, ...]:
    spec = record.spec
    method = METHOD_ORDER.index(spec.method) if spec.method in METHOD_ORDER else len(METHOD_ORDER)
    dataset = DATASET_ORDER.index(spec.dataset) if spec.dataset in DATASET_ORDER else 9
    ablation = tuple(ABLATION_ORDER.index(a) if a in ABLATION_ORDER else 9 for a in spec.ablations)
    return dataset, spec.dataset, method, spec.method, ablation, spec.ablations, spec.seed


def by_row(records: Iterable[ResultRecord]) -> dict[tuple[str, str], list[ResultRecord]]:
    """(method label, dataset) -> its records (one per seed), in table order."""
    rows: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for record in sorted(records, key=_order):
        rows[(record.spec.label, record.spec.dataset)].append(record)
    return rows


def _row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def _wall(record: ResultRecord) -> float:
    return float(record.provenance.get("durations_s", {}).get("total", math.nan))


def _metric_cells(group: Sequence[ResultRecord]) -> list[str]:
    return [mean_std([r.metrics.get(m) for r in group]) for m in ("acc", "ari", "nmi")]


def main_table(records: Sequence[ResultRecord], key: ConfigKey) -> list[str]:
    lines = [
        "| method | dataset | seeds | ACC | ARI | NMI | wall (s, mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (label, dataset), group in by_row(r for r in records if not r.spec.ablations).items():
        seeds = format_ints({r.spec.seed for r in group})
        wall = _mean([_wall(r) for r in group], 0)
        lines.append(
            f"| {label} | {dataset} | {seeds} | {' | '.join(_metric_cells(group))} | {wall} |"
        )
    datasets = {r.spec.dataset for r in records}
    for ref in own_paper_references(records):
        same = math.isclose(ref["known_ratio"], key.known_ratio) and math.isclose(
            ref["labeled_ratio"], key.labeled_ratio
        )
        if same and ref["dataset"] in datasets:
            cells = " | ".join(
                EMPTY if ref[m] is None else f"{ref[m]:.2f}" for m in ("acc", "ari", "nmi")
            )
            lines.append(
                f"| {ref['method']} (paper) | {ref['dataset']} | {EMPTY} | {cells} | {EMPTY} |"
            )
    return lines


def own_paper_references(records: Iterable[ResultRecord]) -> list[dict[str, Any]]:
    """The reported rows of the methods in ``records``, each method's first source only: its
    own paper comes first in references.json, third-party re-runs after it."""
    methods = {r.spec.method for r in records}
    first_source: dict[str, str] = {}
    rows = []
    for ref in load_references():
        method = ref["method"].lower()
        if method in methods and first_source.setdefault(method, ref["source"]) == ref["source"]:
            rows.append(ref)
    return rows


def ablation_table(records: Sequence[ResultRecord], key: ConfigKey) -> list[str]:
    """Per method and dataset with ablated runs: the full row, then each w/o row."""
    ablated = {(r.spec.method, r.spec.dataset) for r in records if r.spec.ablations}
    if not ablated:
        return []
    lines = [
        "| variant | dataset | seeds | ACC | ARI | NMI | Δ ACC vs full (same seeds) "
        "| paper ACC | paper Δ ACC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    references = {
        (r["method"].lower(), r["dataset"], r["known_ratio"]): r
        for r in own_paper_references(records)
    }
    for (label, dataset), group in by_row(
        r for r in records if (r.spec.method, r.spec.dataset) in ablated
    ).items():
        spec = group[0].spec
        delta = _paired_delta(group, records) if spec.ablations else EMPTY
        where = (spec.method, dataset, key.known_ratio)
        paper_full = references.get(where, {}).get("acc")
        paper_delta = (
            PAPER_ABLATION_DELTA.get(where, {}).get(spec.ablations[0])
            if len(spec.ablations) == 1
            else None
        )
        if not spec.ablations and paper_full is not None:
            paper = (f"{paper_full:.2f}", EMPTY)
        elif paper_delta is not None and paper_full is not None:
            paper = (f"{paper_full + paper_delta:.2f}", f"{paper_delta:+.2f}")
        else:
            paper = (EMPTY, EMPTY)
        seeds = format_ints({r.spec.seed for r in group})
        lines.append(_row(label, dataset, seeds, *_metric_cells(group), delta, *paper))
    return lines


def _paired_delta(group: Sequence[ResultRecord], records: Sequence[ResultRecord]) -> str:
    """Mean ACC change against the full method on the same seeds (seeds share a split)."""
    spec = group[0].spec
    full = {
        r.spec.seed: r.metrics["acc"]
        for r in records
        if (r.spec.method, r.spec.dataset, r.spec.ablations) == (spec.method, spec.dataset, ())
    }
    diffs = [r.metrics["acc"] - full[r.spec.seed] for r in group if r.spec.seed in full]
    return f"{np.mean(diffs):+.2f}" if diffs else EMPTY


def _coverage(record: ResultRecord) -> float | None:
    rounds = (
        record.diagnostics.get("feedback_quality", {}).get("descriptions", {}).get("rounds", [])
    )
    values = [r["coverage"] for r in rounds if r.get("coverage") is not None]
    return float(np.mean(values)) if values else None


def quality_table(records: Sequence[ResultRecord]) -> list[str]:
    """Totals over rounds per run, then the mean over seeds (counts are summed)."""
    lines = [
        "| method | dataset | kind | seeds | asked | feedback acc | encoder acc (same questions) "
        "| used share | parse failures | description coverage |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (label, dataset), group in by_row(
        r for r in records if "feedback_quality" in r.diagnostics
    ).items():
        totals = [r.diagnostics["feedback_quality"].get("totals", {}) for r in group]
        seeds = format_ints({r.spec.seed for r in group})
        for kind in sorted({k for t in totals for k in t}):
            rows = [t[kind] for t in totals if kind in t]
            asked = sum(int(r.get("asked", 0)) for r in rows)
            used = sum(int(r.get("used", 0)) for r in rows)
            parse = sum(int(r.get("statuses", {}).get(PARSE_FAILURE, 0)) for r in rows)
            share = f"{used / asked:.3f}" if asked else EMPTY
            cells = [
                _mean(r.get("feedback_accuracy") for r in rows),
                _mean(r.get("encoder_accuracy_answered") for r in rows),
            ]
            lines.append(
                _row(label, dataset, kind, seeds, str(asked), *cells, share, str(parse), EMPTY)
            )
        coverage = _mean(_coverage(r) for r in group)
        if coverage != EMPTY:
            kind = "characterize-cluster"
            lines.append(_row(label, dataset, kind, seeds, *[EMPTY] * 5, coverage))
    return lines if len(lines) > 2 else []


def cost_table(records: Sequence[ResultRecord]) -> list[str]:
    lines = [
        "| method | dataset | seed | wall (s) | questions by kind | backend requests "
        "| tokens (prompt+completion) | ledger hits |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for record in sorted(records, key=_order):
        stats: Mapping[str, Any] = (record.feedback or {}).get("stats") or {}
        per_kind = stats.get("per_kind", {})
        total = stats.get("total", {})
        asked = ", ".join(
            f"{SHORT_KIND.get(k, k)} {v.get('queries', 0)}" for k, v in sorted(per_kind.items())
        )
        cells = [EMPTY] * 3
        if total:
            tokens = f"{total.get('prompt_tokens', 0):,}+{total.get('completion_tokens', 0):,}"
            cells = [
                str(total.get("backend_requests", 0)),
                tokens,
                str(total.get("ledger_hits", 0)),
            ]
        spec = record.spec
        wall = f"{_wall(record):.0f}"
        lines.append(_row(spec.label, spec.dataset, str(spec.seed), wall, asked or EMPTY, *cells))
    return lines


def render_report(
    records: Iterable[ResultRecord],
    *,
    name: Callable[[ConfigKey], str],
    command: Callable[[ConfigKey, list[ResultRecord]], str],
    report_command: str,
) -> str:
    groups = config_groups(records)
    out = [
        "# GLEAN / Loop reproduction",
        "",
        f"Tables printed by `{report_command}` from the run records; each table's runs come "
        "from the `run` command above it (ACC/ARI/NMI ×100, mean±std over seeds).",
    ]
    sections: list[tuple[str, Callable[[list[ResultRecord], ConfigKey], list[str]]]] = [
        ("Main results", main_table),
        ("Ablation (paper's form)", ablation_table),
        ("Feedback quality", lambda rs, _key: quality_table(rs)),
        ("Cost per run", lambda rs, _key: cost_table(rs)),
    ]
    for title, table in sections:
        out += ["", f"## {title}"]
        if title == "Feedback quality":
            out += ["", PAPER_FEEDBACK_NOTE]
        for key, group in groups.items():
            lines = table(group, key)
            if lines:
                ratios = f"known {key.known_ratio:g}, labeled {key.labeled_ratio:g}"
                out += [
                    "",
                    f"### {name(key)} ({ratios})",
                    "",
                    f"`{command(key, group)}`",
                    "",
                    *lines,
                ]
    return "\n".join(out) + "\n"
