"""``gcdbench leaderboard --feedback``: feedback providers ranked on each bank, per kind.

One table per (dataset, known ratio, seed, kind), one row per evaluation record
(gcdbench/runner/feedback_eval.py), ranked by ``gain``: how much a method acting on the
provider's kept answers (and on the encoder's choice elsewhere) is more often right than
the encoder alone. The encoder's own accuracy on the same bank heads each table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MARKER = "<!-- gcdbench feedback leaderboard -->"
COLUMNS = (
    "provider", "asking policy", "N", "acc", "kept", "acc kept", "enc kept",
    "with fallback", "gain", "fused gain", "ECE", "s/question", "$/question",
)  # fmt: skip


def policy_text(policy: Mapping[str, Any], describer: str) -> str:
    """The policy fields that differ from a plain single ask, and who described categories."""
    plain = {
        "orderings": 1,
        "min_confidence": None,
        "layout": "cache-friendly",
        "template": None,
        "scoring": "generate",
        "combine": "agree",
    }
    parts = [f"{k}={v}" for k, v in sorted(policy.items()) if plain.get(k, "-") != v]
    if describer != "provider":
        parts.append(f"described by {describer}")
    return ", ".join(parts) or "single ask"


def pct(value: Any) -> str:
    """A share as a percentage with one decimal; "–" for none."""
    return "–" if value is None else f"{100 * value:.1f}"


def _fused(fusion: Mapping[str, Any] | None) -> str:
    if not fusion or fusion.get("gain") is None:
        return "–"
    return f"{100 * fusion['gain']:+.1f}"


def feedback_markdown(records: Iterable[Mapping[str, Any]]) -> str:
    groups: dict[tuple[str, float, int, str], list[Mapping[str, Any]]] = {}
    for record in records:
        bank = record["bank"]
        for kind, scores in record["kinds"].items():
            if "gain" in scores:
                key = (bank["dataset"], bank["known_ratio"], bank["seed"], kind)
                groups.setdefault(key, []).append(record)
    lines = [MARKER, "# Feedback leaderboard", ""]
    lines.append(
        "Providers on fixed question banks (`gcdbench feedback eval`; docs/feedback-bank.md). "
        "*gain*: accuracy with the encoder's choice where no answer was kept, minus the "
        "encoder's alone, in points; *fused gain*: the same for the answers fused with the "
        "encoder's similarities (`--fusion`), every question answered."
    )
    for (dataset, ratio, seed, kind), rows in sorted(groups.items()):
        first = rows[0]["kinds"][kind]
        lines += [
            "",
            f"## {dataset}, known {ratio}, seed {seed}: {kind}",
            "",
            f"Encoder alone: {pct(first['encoder_accuracy'])} over {first['questions']} "
            f"questions; a right option exists in {pct(first['ceiling'])}.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "|".join(["---", "---"] + ["---:"] * (len(COLUMNS) - 2)) + "|",
        ]
        ranked = sorted(rows, key=lambda r: -(r["kinds"][kind]["gain"] or 0.0))
        for record in ranked:
            s = record["kinds"][kind]
            cost = s["cost"]
            usd = cost["usd_per_question"]
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"`{record['llm']}`",
                        policy_text(record["policy"], record["describer"]),
                        str(s["questions"]),
                        pct(s["accuracy"]),
                        pct(s["coverage_kept"]),
                        pct(s["accuracy_kept"]),
                        pct(s["encoder_accuracy_kept"]),
                        pct(s["accuracy_with_fallback"]),
                        "–" if s["gain"] is None else f"{100 * s['gain']:+.1f}",
                        _fused(s.get("fusion")),
                        "–" if s["ece"] is None else f"{s['ece']:.3f}",
                        f"{cost['wall_s_per_question']:.2f}",
                        "–" if usd is None else f"{usd:.6f}",
                    ]
                )
                + " |"
            )
    return "\n".join(lines) + "\n"


__all__ = ["MARKER", "feedback_markdown", "pct", "policy_text"]
