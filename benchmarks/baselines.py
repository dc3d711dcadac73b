"""The text-GCD baselines' reproduction table (issue 14): cpu-preset runs over seeds, beside
the published rows and the no-LLM control, from run records alone.

    python benchmarks/baselines.py run --results-dir results/baselines --seeds 0-2
    python benchmarks/baselines.py report --results-dir results/baselines

``run`` calls ``gcdbench run METHOD`` once per (method, seed) in its own process, so each
record's peak memory is that run's own (a process running several seeds would report the
largest so far); finished runs are skipped by gcdbench itself. ``report`` prints, per feedback
provider, one row per method: ACC / ARI / NMI, known- and novel-class ACC and H-score as
mean ± sample std over the seeds found, the fastest and slowest wall time (runs that shared the
machine are slower), the largest peak RSS, and the
LLM questions asked; then the published rows for the same dataset and known ratio from
gcdbench/report/references.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from reproduction_tables import mean_std

from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import DEFAULT_LABELED_RATIO
from gcdbench.report.references import load_references
from gcdbench.runner.store import ResultsStore, load_record

#: The literature's text-GCD methods (no LLM), then the controls they are compared with.
NO_LLM = ("deep-aligned", "mtp-clnn", "usnid", "dpn", "tan", "sdc", "geoid")
CONTROLS = ("kmeans", "mtp", "no-llm")
#: LLM-in-the-loop baselines: run with the provider given by --llm.
WITH_LLM = ("alup", "tlsa")
METRICS = ("acc", "ari", "nmi", "known_acc", "novel_acc", "h_score")
EMPTY = "–"


def parse_seeds(text: str) -> list[int]:
    seeds: list[int] = []
    for piece in text.split(","):
        first, _, last = piece.partition("-")
        seeds += list(range(int(first), int(last or first) + 1))
    return seeds


def run(args: argparse.Namespace) -> None:
    methods = args.methods.split(",") if args.methods else [*CONTROLS, *NO_LLM]
    for method in methods:
        for seed in parse_seeds(args.seeds):
            command = [
                sys.executable,
                "-m",
                "gcdbench",
                "run",
                method,
                "-d",
                args.dataset,
                "--known-ratio",
                str(args.known_ratio),
                "--seed",
                str(seed),
                "--results-dir",
                str(args.results_dir),
                "-q",
            ]
            if args.llm and method in WITH_LLM:
                command += ["--llm", args.llm]
            print("$", " ".join(command[2:]), flush=True)
            subprocess.run(command, check=True)


def _questions(record: ResultRecord) -> int:
    stats = (record.feedback or {}).get("stats", {})
    total = stats.get("total", {}) if isinstance(stats, dict) else {}
    return int(total.get("queries", 0) or 0)


def method_rows(records: Sequence[ResultRecord]) -> list[str]:
    groups: dict[str, list[ResultRecord]] = defaultdict(list)
    for record in records:
        groups[record.spec.label].append(record)
    lines = [
        "| method | seeds | ACC | ARI | NMI | K-ACC | N-ACC | H | wall (s, min–max) | "
        "peak RSS (MB, max) | questions (mean) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = {name: i for i, name in enumerate([*CONTROLS, *NO_LLM, *WITH_LLM])}
    for label, group in sorted(groups.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])):
        group.sort(key=lambda r: r.spec.seed)
        walls = [r.provenance.get("durations_s", {}).get("total") for r in group]
        peaks = [r.provenance.get("peak_rss_mb") for r in group]
        cells = [mean_std([r.metrics.get(m) for r in group], one_seed="") for m in METRICS]
        known = [w for w in walls if w is not None]
        wall = f"{min(known):.0f}–{max(known):.0f}" if known else None
        peak = max((p for p in peaks if p is not None), default=None)
        lines.append(
            f"| {label} | {','.join(str(r.spec.seed) for r in group)} | {' | '.join(cells)} | "
            f"{EMPTY if wall is None else wall} | "
            f"{EMPTY if peak is None else f'{peak:.0f}'} | "
            f"{statistics.mean(_questions(r) for r in group):.0f} |"
        )
    return lines


def published_rows(dataset: str, known_ratio: float, methods: set[str]) -> list[str]:
    lines = [
        "| published | ACC | ARI | NMI | K-ACC | N-ACC | H | source | how it differs |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for ref in load_references():
        same_split = math.isclose(ref["known_ratio"], known_ratio) and math.isclose(
            ref["labeled_ratio"], DEFAULT_LABELED_RATIO
        )
        if ref["dataset"] != dataset or not same_split:
            continue
        # Reported rows are named after the registered method, e.g. "mtp-clnn".
        if ref["method"].split(" ")[0] not in methods:
            continue
        cells = [EMPTY if ref.get(m) is None else f"{ref[m]:.2f}" for m in METRICS]
        lines.append(
            f"| {ref['method']} | {' | '.join(cells)} | {ref['source']} | {ref['note'] or EMPTY} |"
        )
    return lines


def report(args: argparse.Namespace) -> None:
    store = ResultsStore(args.results_dir)
    by_llm: dict[str, list[ResultRecord]] = defaultdict(list)
    for path in sorted(store.record_paths()):
        record = load_record(path)
        spec = record.spec
        if spec.dataset == args.dataset and math.isclose(spec.known_ratio, args.known_ratio):
            by_llm[spec.llm or "no LLM"].append(record)
    methods: set[str] = set()
    for llm, records in sorted(by_llm.items()):
        methods |= {r.spec.method for r in records}
        print(f"#### Feedback: `{llm}` ({args.dataset}, known {args.known_ratio:g})\n")
        print("\n".join(method_rows(records)), end="\n\n")
    print(f"#### Published ({args.dataset}, known {args.known_ratio:g})\n")
    print("\n".join(published_rows(args.dataset, args.known_ratio, methods)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "report"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--results-dir", type=Path, required=True)
        cmd.add_argument("--dataset", default="banking")
        cmd.add_argument("--known-ratio", type=float, default=0.25)
    sub.choices["run"].add_argument("--seeds", default="0-2")
    sub.choices["run"].add_argument(
        "--methods", default="", help="comma-separated; default: the controls and no-LLM baselines"
    )
    sub.choices["run"].add_argument(
        "--llm", default="", help="provider for the LLM baselines (alup, tlsa), e.g. llamacpp"
    )
    args = parser.parse_args()
    run(args) if args.command == "run" else report(args)


if __name__ == "__main__":
    main()
