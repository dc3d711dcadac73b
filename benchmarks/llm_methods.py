"""The LLM methods' reproduction tables (issue 13), from run records alone.

    python benchmarks/llm_methods.py --results-dir results/llm-methods

Runs are made with ``gcdbench run`` (the commands are in benchmarks/REPRODUCTION.md, section
"LLM clustering methods"); this prints, per feedback provider: one row per run with its
metrics, the number of clusters it produced beside the true K, what its questions cost
(questions, backend requests, ledger hits, tokens, the LLM's seconds, the dollars the same
tokens would cost on gpt-4o-mini), its wall time and peak memory, and then the quality of
its answers per query kind (the LLM's accuracy on the answers the gold can judge, beside the
encoder's own answer to the same questions where the method logged one).
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gcdbench import registry
from gcdbench.api.method import params_dict
from gcdbench.api.record import ResultRecord
from gcdbench.runner.store import ResultsStore, load_record

#: gpt-4o-mini list prices, USD per token (input, output), for the "on gpt-4o-mini" column.
GPT_4O_MINI = (0.15e-6, 0.60e-6)
EMPTY = "–"


def _f(value: Any, digits: int = 2) -> str:
    return EMPTY if value is None else f"{float(value):.{digits}f}"


def _clusters(path: Path) -> int | None:
    """Distinct cluster ids among the test predictions: the K a method ended with."""
    predictions = path.parent / "predictions.csv"
    if not predictions.is_file():
        return None
    with predictions.open(encoding="utf-8") as handle:
        return len({row["cluster"] for row in csv.DictReader(handle)})


def _label(record: ResultRecord) -> str:
    spec = record.spec
    extra = [f"preset={spec.preset}"] if spec.preset else []
    extra += [f"{k}={v}" for k, v in sorted(spec.params.items()) if k == "variant" and v != "paper"]
    if spec.refine:
        defaults = params_dict(registry.get("refiner", spec.refine).resolve_params({}))
        changed = {k: v for k, v in spec.refine_params.items() if defaults.get(k) != v}
        extra += [f"{spec.refine}.{k}={v}" for k, v in sorted(changed.items())]
    return spec.label + (f" [{', '.join(extra)}]" if extra else "")


def _totals(record: ResultRecord) -> dict[str, Any]:
    stats = (record.feedback or {}).get("stats", {})
    return dict(stats.get("total", {})) if isinstance(stats, dict) else {}


def run_rows(records: Iterable[tuple[Path, ResultRecord]]) -> list[str]:
    lines = [
        "| method | dataset | known | seed | ACC | ARI | NMI | clusters / K | questions | "
        "requests | ledger hits | tokens in / out | LLM s | $ on gpt-4o-mini | wall | peak RSS |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for path, record in records:
        spec, metrics, total = record.spec, record.metrics, _totals(record)
        tokens_in, tokens_out = total.get("prompt_tokens"), total.get("completion_tokens")
        dollars = (
            tokens_in * GPT_4O_MINI[0] + tokens_out * GPT_4O_MINI[1]
            if tokens_in is not None and tokens_out is not None
            else None
        )
        durations = record.provenance.get("durations_s", {})
        wall = durations.get("total")
        lines.append(
            f"| {_label(record)} | {spec.dataset} | {spec.known_ratio:g} | {spec.seed} | "
            f"{_f(metrics.get('acc'))} | {_f(metrics.get('ari'))} | {_f(metrics.get('nmi'))} | "
            f"{_clusters(path) or EMPTY} / {record.data.get('num_classes', EMPTY)} | "
            f"{total.get('queries', 0)} | {total.get('backend_requests', 0)} | "
            f"{total.get('ledger_hits', 0)} | "
            f"{tokens_in or 0:,} / {tokens_out or 0:,} | {_f(total.get('latency_s'), 0)} | "
            f"{_f(dollars, 3)} | {_minutes(wall)} | "
            f"{_f(record.provenance.get('peak_rss_mb'), 0)} MB |"
        )
    return lines


def _minutes(seconds: float | None) -> str:
    if seconds is None:
        return EMPTY
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def quality_rows(records: Iterable[tuple[Path, ResultRecord]]) -> list[str]:
    lines = [
        "| method | dataset | kind | asked | answered | LLM accuracy | encoder accuracy | "
        "statuses |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for _, record in records:
        quality = record.diagnostics.get("feedback_quality", {})
        per_kind = dict(quality.get("kinds", {}))
        for kind, row in dict(quality.get("totals", {})).items():
            per_kind.setdefault(kind, row)
        for kind, row in sorted(per_kind.items()):
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(row.get("statuses", {}).items()))
            accuracy = row.get("feedback_accuracy")
            lines.append(
                f"| {_label(record)} | {record.spec.dataset} | {kind} | {row.get('asked', EMPTY)} "
                f"| {row.get('answered', EMPTY)} | "
                f"{_f(accuracy, 3) if accuracy is not None else 'unscored'} | "
                f"{_f(row.get('encoder_accuracy'), 3)} | {statuses or EMPTY} |"
            )
    return lines


def report(results_dir: Path) -> str:
    store = ResultsStore(results_dir)
    by_llm: dict[str, list[tuple[Path, ResultRecord]]] = defaultdict(list)
    for path in sorted(store.record_paths()):
        record = load_record(path)
        by_llm[record.spec.llm or "no LLM"].append((path, record))
    out: list[str] = []
    for llm, records in sorted(by_llm.items()):
        records.sort(key=lambda r: (r[1].spec.dataset, r[1].spec.method, r[1].spec.label))
        out += [f"#### Feedback: `{llm}`", "", *run_rows(records), ""]
        quality = quality_rows(records)
        if len(quality) > 2:
            out += ["Answer quality per query kind:", "", *quality, ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, required=True)
    args = parser.parse_args()
    print(report(args.results_dir))


if __name__ == "__main__":
    main()
