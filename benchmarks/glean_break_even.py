"""How right must feedback be for GLEAN to beat its no-LLM control? (issue 15)

    python benchmarks/glean_break_even.py run --results-dir results/break-even --seeds 0 \\
        --accuracies 0.2,0.4,0.6,0.8,1.0
    python benchmarks/glean_break_even.py report --results-dir results/break-even \\
        --control-dir results/baselines --bank-dir results \\
        --figure benchmarks/figures/glean-break-even.png

``run`` makes one default (cpu-preset) GLEAN run on BANKING 25% known per seed and accuracy
with ``--llm noisy-oracle:P``: every choice question with a right option is answered right
with probability P, otherwise a wrong option uniformly; a question without a right option
gets a uniform pick; cluster descriptions are exact (the oracle names clusters from gold).
Runs already in the store are skipped, so a second call only adds what is missing.

``report`` prints, per accuracy, GLEAN's ACC beside the no-LLM control's on the same seed
(read from ``--control-dir``; paired difference per seed), and the feedback accuracy the
runs realised per kind against gold (the share of all asked questions answered right,
:mod:`gcdbench.report.feedback_quality`) beside the encoder's own choice on the same
questions. With ``--bank-dir``, the embedded model's accuracies on the feedback bank
(``gcdbench feedback eval`` records) are drawn on the same axis, so a reader sees which P the
local model's answers correspond to.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from gcdbench.api.record import ResultRecord
from gcdbench.cli.common import expand_ints, parse_int_ranges
from gcdbench.runner.store import ResultsStore, load_record

DATASET = "banking"
KNOWN = 0.25
KINDS = ("select-similar-instance", "select-category")
EMPTY = "–"


def run(results_dir: Path, seeds: list[int], accuracies: list[float]) -> None:
    for seed in seeds:
        for p in accuracies:
            command = [
                sys.executable, "-m", "gcdbench", "run", "glean", "-d", DATASET,
                "--known-ratio", str(KNOWN), "--seed", str(seed),
                "--results-dir", str(results_dir), "-q", "--llm", f"noisy-oracle:{p:g}",
            ]  # fmt: skip
            print("$", " ".join(command[2:]), flush=True)
            subprocess.run(command, check=True)


def _records(results_dir: Path) -> list[ResultRecord]:
    store = ResultsStore(results_dir)
    if not results_dir.is_dir():
        return []
    return [load_record(path) for path in sorted(store.record_paths())]


def _accuracy(record: ResultRecord) -> float | None:
    """The P of a ``noisy-oracle:P`` run, else None."""
    spec = record.spec.llm or ""
    if not spec.startswith("noisy-oracle:"):
        return None
    try:
        return float(spec.split(":", 1)[1])
    except ValueError:
        return None  # a per-kind spec: not one point of the curve


def _default_run(record: ResultRecord, method: str) -> bool:
    """A run of ``method`` on BANKING 25% known with its defaults (no preset, no ablation,
    the paper variant)."""
    spec = record.spec
    return (
        spec.method == method
        and spec.dataset == DATASET
        and spec.known_ratio == KNOWN
        and not spec.preset
        and not spec.ablations
        and spec.params.get("variant", "paper") == "paper"
    )


def _is_control(record: ResultRecord) -> bool:
    return _default_run(record, "no-llm")


def _is_point(record: ResultRecord) -> bool:
    return _default_run(record, "glean") and _accuracy(record) is not None


def rows(points: list[ResultRecord], controls: dict[int, float]) -> list[dict[str, Any]]:
    """One row per accuracy and GLEAN version (runs of two versions are never averaged):
    ACC (mean over seeds), the paired difference to the control, and the realised feedback
    accuracy per kind with the encoder's on the same questions."""
    by_p: dict[tuple[float, str], list[ResultRecord]] = defaultdict(list)
    for record in points:
        p = float(_accuracy(record))  # type: ignore[arg-type]  # points all have one
        by_p[(p, str(record.method.get("version", "?")))].append(record)
    out = []
    for (p, version), group in sorted(by_p.items()):
        row: dict[str, Any] = {
            "p": p,
            "version": version,
            "seeds": sorted(r.spec.seed for r in group),
        }
        accs = [r.metrics["acc"] for r in group]
        row["acc"] = statistics.fmean(accs)
        row["acc_std"] = statistics.stdev(accs) if len(accs) > 1 else None
        diffs = [r.metrics["acc"] - controls[r.spec.seed] for r in group if r.spec.seed in controls]
        row["diff"] = statistics.fmean(diffs) if diffs else None
        row["diffs"] = diffs
        for kind in KINDS:
            totals = [
                r.diagnostics.get("feedback_quality", {}).get("totals", {}).get(kind, {})
                for r in group
            ]
            row[kind] = _mean([t.get("feedback_accuracy") for t in totals])
            row[kind + ":encoder"] = _mean([t.get("encoder_accuracy") for t in totals])
        out.append(row)
    return out


def _mean(values: list[Any]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _f(value: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return EMPTY if value is None else f"{value * scale:.{digits}f}"


def markdown(table: list[dict[str, Any]], controls: dict[int, float]) -> str:
    lines = [
        "no-LLM control ACC per seed: "
        + (", ".join(f"seed {s}: {a:.2f}" for s, a in sorted(controls.items())) or EMPTY),
        "",
        "| noisy-oracle P | GLEAN version | seeds | GLEAN ACC | − no-llm (paired, per seed) | "
        "instance right / encoder | category right / encoder |",
        "|---:|---:|---|---:|---|---:|---:|",
    ]
    for row in table:
        acc = _f(row["acc"]) + (f" ± {row['acc_std']:.2f}" if row["acc_std"] is not None else "")
        diffs = ", ".join(f"{d:+.2f}" for d in row["diffs"]) or EMPTY
        cells = [f"{_f(row[k], 100, 1)} / {_f(row[k + ':encoder'], 100, 1)}" for k in KINDS]
        lines.append(
            f"| {row['p']:g} | {row['version']} | {','.join(map(str, row['seeds']))} | {acc} | "
            f"{diffs} | {cells[0]} | {cells[1]} |"
        )
    return "\n".join(lines)


def bank_accuracies(bank_dir: Path) -> list[tuple[str, str, float]]:
    """(provider and policy, kind, accuracy) of every local-model bank evaluation on BANKING:
    fused with the encoder where fitted, else with the encoder's choice where the model's
    answer was not kept, so every question has an answer, as in the noisy-oracle runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from feedback_bank import rows as bank_rows

    from gcdbench.runner.feedback_eval import eval_records

    records = [
        r for r in eval_records(bank_dir)
        if r["bank"]["dataset"] == DATASET and "oracle" not in str(r.get("llm", ""))
    ]  # fmt: skip
    out = []
    for kind in KINDS:
        for row in bank_rows(records, kind):
            accuracy = row["fused"] if row["fused"] is not None else row["with_fallback"]
            out.append((row["label"], kind, float(accuracy)))
    return out


def figure(
    table: list[dict[str, Any]],
    controls: dict[int, float],
    bank: list[tuple[str, str, float]],
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2))
    ps = [r["p"] for r in table]
    left.errorbar(ps, [r["acc"] for r in table], yerr=[r["acc_std"] or 0 for r in table],
                  marker="o", label="GLEAN, noisy-oracle:P")  # fmt: skip
    if controls:
        left.axhline(statistics.fmean(controls.values()), color="grey", linestyle="--",
                     label="no-llm (same seeds)")  # fmt: skip
    left.set_xlabel("noisy-oracle P (right answer when one is offered)")
    left.set_ylabel("ACC on BANKING 25% known")
    left.set_title("GLEAN against feedback accuracy")
    left.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    for kind, colour in zip(KINDS, ("tab:blue", "tab:orange"), strict=True):
        right.plot(ps, [None if r[kind] is None else 100 * r[kind] for r in table],
                   marker="o", color=colour, label=f"{kind}: realised")  # fmt: skip
        encoder = [r[kind + ":encoder"] for r in table if r[kind + ":encoder"] is not None]
        if encoder:
            right.axhline(100 * statistics.fmean(encoder), color=colour, linestyle="--",
                          label=f"{kind}: encoder's own choice")  # fmt: skip
        for label, bank_kind, accuracy in bank:
            if bank_kind == kind:
                right.axhline(100 * accuracy, color=colour, linestyle=":", linewidth=1)
                right.annotate(
                    label, (max(ps), 100 * accuracy), fontsize=6, color=colour, ha="right"
                )
    right.set_xlabel("noisy-oracle P")
    right.set_ylabel("share of asked questions answered right (%)")
    right.set_title("feedback accuracy\n(dotted: the embedded model on the feedback bank)")
    right.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def report(args: argparse.Namespace) -> None:
    points = [r for r in _records(args.results_dir) if _is_point(r)]
    control_dir = args.control_dir or args.results_dir
    controls = {r.spec.seed: r.metrics["acc"] for r in _records(control_dir) if _is_control(r)}
    seeds = {r.spec.seed for r in points}
    controls = {s: a for s, a in controls.items() if s in seeds}
    table = rows(points, controls)
    print(markdown(table, controls))
    bank = bank_accuracies(args.bank_dir) if args.bank_dir else []
    for label, kind, accuracy in bank:
        print(f"bank: {label} — {kind} {100 * accuracy:.1f}")
    if args.figure and table:
        figure(table, controls, bank, args.figure)
        print(f"figure: {args.figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run")
    go.add_argument("--results-dir", type=Path, required=True)
    go.add_argument("--seeds", default="0")
    go.add_argument("--accuracies", default="0.2,0.4,0.6,0.8,1.0")
    show = sub.add_parser("report")
    show.add_argument("--results-dir", type=Path, required=True)
    show.add_argument("--control-dir", type=Path, help="where the no-llm records are")
    show.add_argument("--bank-dir", type=Path, help="results store with feedback evaluations")
    show.add_argument("--figure", type=Path)
    args = parser.parse_args()
    if args.command == "run":
        accuracies = [float(p) for p in args.accuracies.split(",")]
        # Read as gcdbench run reads --seeds: 0 / 0,1,2 / 0-4.
        seeds = expand_ints(parse_int_ranges((args.seeds,), "--seeds"))
        run(args.results_dir, seeds, accuracies)
    else:
        report(args)


if __name__ == "__main__":
    main()
