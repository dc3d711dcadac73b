"""The feedback-bank report (issue 15): every evaluation of a dataset's bank, as a markdown
table per kind and one figure — each provider and asking policy's accuracy beside the
encoder's own on the same questions.

    python benchmarks/feedback_bank.py --results-dir results --dataset banking \\
        --figure benchmarks/figures/feedback-banking.png

The evaluations themselves are ``gcdbench feedback eval`` runs (commands in
benchmarks/FEEDBACK.md); this script only reads their records.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gcdbench.report.feedback_board import pct, policy_text
from gcdbench.runner.feedback_eval import eval_records

KINDS = ("select-similar-instance", "select-category")


def _provider(spec: str) -> str:
    """A short name: a simulated provider with its accuracy, a backend without its model."""
    return spec if spec.startswith("noisy-oracle") else spec.split(":")[0]


def rows(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    out = []
    for record in records:
        scores = record["kinds"].get(kind)
        if not scores or "gain" not in scores:
            continue
        fusion = scores.get("fusion") or {}
        out.append(
            {
                "label": f"{_provider(record['llm'])}: "
                f"{policy_text(record['policy'], record['describer'])}"
                + (" + fusion" if record.get("fusion") else ""),
                "accuracy": scores["accuracy"],
                "encoder": scores["encoder_accuracy_answered"],
                "kept": scores["coverage_kept"],
                "with_fallback": scores["accuracy_with_fallback"],
                "encoder_all": scores["encoder_accuracy"],
                "gain": scores["gain"],
                "fused": fusion.get("fused_accuracy"),
                "fused_gain": fusion.get("gain"),
                "ece": scores["ece"],
                "positions": scores.get("positions", {}),
                "seconds": scores["cost"]["backend_s_per_question"],
                "requests": scores["cost"]["requests_per_question"],
            }
        )
    return out


def markdown(records: list[dict[str, Any]]) -> str:
    lines = []
    for kind in KINDS:
        lines += [
            f"### {kind}",
            "",
            "| provider: asking policy | acc | enc | kept | with fallback | enc all | gain | "
            "fused | fused gain | ECE | top position | s/question | requests/question |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
        ]
        for r in rows(records, kind):
            top = max(r["positions"].items(), key=lambda kv: kv[1]) if r["positions"] else None
            fused_gain = "–" if r["fused_gain"] is None else f"{100 * r['fused_gain']:+.1f}"
            ece = "–" if r["ece"] is None else f"{r['ece']:.2f}"
            where = "–" if top is None else f"{top[0]} ({100 * top[1]:.0f}%)"
            lines.append(
                f"| {r['label']} | {pct(r['accuracy'])} | {pct(r['encoder'])} | "
                f"{pct(r['kept'])} | {pct(r['with_fallback'])} | {pct(r['encoder_all'])} | "
                f"{100 * r['gain']:+.1f} | {pct(r['fused'])} | "
                f"{fused_gain} | {ece} | {where} | "
                f"{r['seconds']:.2f} | {r['requests']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def figure(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(KINDS), figsize=(13, 4.5), sharex=True)
    for ax, kind in zip(axes, KINDS, strict=True):
        data = rows(records, kind)
        labels = [r["label"] for r in data]
        y = range(len(data))
        ax.barh([i + 0.2 for i in y], [100 * r["with_fallback"] for r in data], 0.4,
                label="feedback (encoder where none kept)")  # fmt: skip
        ax.barh([i - 0.2 for i in y], [100 * (r["fused"] or 0) for r in data], 0.4,
                label="fused with the encoder")  # fmt: skip
        if data:
            ax.axvline(100 * data[0]["encoder_all"], color="black", linestyle="--",
                       label="encoder alone")  # fmt: skip
        ax.set_yticks(list(y), labels, fontsize=7)
        ax.set_title(kind)
        ax.set_xlabel("accuracy on the bank (%)")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--dataset", default="banking")
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    records = [r for r in eval_records(args.results_dir) if r["bank"]["dataset"] == args.dataset]
    records.sort(key=lambda r: r["provenance"]["started_at"])
    print(markdown(records))
    if args.figure is not None:
        figure(records, args.figure)
        print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
