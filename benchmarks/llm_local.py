"""Feedback throughput of the default local model: questions/s for each query kind on real
BANKING texts, and what the prefix-cache-friendly prompt layout gains over GLEAN's order.

    python benchmarks/llm_local.py                  # 20 questions per kind, Qwen 1.5B (minutes)
    python benchmarks/llm_local.py --n 3 --llm llamacpp:smollm2-135m   # quick check of the script

Every measurement uses a fresh, empty ledger, so each question reaches the model. Choice
questions are built from gold labels, so the table also shows how often the model was right
(5-way instance questions with four distractors from random other classes — easier than
GLEAN's top-5-cluster candidates). The layout comparison asks the same select-category and
classify-into-labels questions (10 shared options, a different query each) twice: options
then query (``cache-friendly``), and query then options (``official``). Needs GCDBENCH_DATA.
Prints a markdown block for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from gcdbench import registry
from gcdbench.api.feedback import Query
from gcdbench.feedback.asking import LLMOptions
from gcdbench.feedback.ledger import Ledger
from gcdbench.feedback.llm_provider import LLMFeedbackProvider
from gcdbench.feedback.resolve import option_pairs, parse_llm_spec
from gcdbench.llm.api import ChatMessage, ChatRequest
from gcdbench.llm.resolve import open_backend

KINDS = (
    "select-similar-instance",
    "select-category",
    "classify-into-labels",
    "characterize-cluster",
    "label-generation",
    "label-merging",
)


def banking_by_class(data_dir: Path) -> dict[str, list[str]]:
    parts = registry.get("dataset", "banking").load(data_dir / "banking")
    by_class: dict[str, list[str]] = {}
    for text, label in zip(parts.train.texts, parts.train.labels, strict=True):
        by_class.setdefault(label, []).append(text)
    return by_class


def _pretty(label: str) -> str:
    return label.replace("_", " ")


def banking_questions(
    by_class: dict[str, list[str]], kind: str, n: int, seed: int
) -> tuple[list[Query], list[int] | None]:
    """``n`` questions of ``kind`` from real texts, with the right option for choice kinds."""
    rng = np.random.default_rng(seed)
    classes = sorted(by_class)
    shared = [classes[i] for i in rng.choice(len(classes), size=10, replace=False)]
    queries: list[Query] = []
    right: list[int] = []
    for _ in range(n):
        if kind == "select-similar-instance":
            own, *others = rng.choice(len(classes), size=5, replace=False)
            anchor, positive = rng.choice(by_class[classes[own]], size=2, replace=False)
            options = [str(rng.choice(by_class[classes[c]])) for c in others]
            at = int(rng.integers(5))
            options.insert(at, str(positive))
            queries.append(Query(kind, {"query": str(anchor), "options": options}))
            right.append(at)
        elif kind in {"select-category", "classify-into-labels"}:
            at = int(rng.integers(10))
            text = str(rng.choice(by_class[shared[at]]))
            labels = [_pretty(c) for c in shared]
            if kind == "select-category":
                options = [f"customers asking about {label}" for label in labels]
                queries.append(Query(kind, {"query": text, "options": options}))
            else:
                queries.append(Query(kind, {"text": text, "labels": labels}))
            right.append(at)
        elif kind == "characterize-cluster":
            label = classes[int(rng.integers(len(classes)))]
            texts = [str(t) for t in rng.choice(by_class[label], size=10, replace=False)]
            known = [_pretty(c) for c in shared[:5]]
            queries.append(Query(kind, {"texts": texts, "known_names": known}))
        elif kind == "label-generation":
            picked = [classes[c] for c in rng.choice(len(classes), size=3, replace=False)]
            texts = [str(rng.choice(by_class[picked[i % 3]])) for i in range(8)]
            queries.append(Query(kind, {"texts": texts}))
        else:
            picked = [classes[c] for c in rng.choice(len(classes), size=6, replace=False)]
            labels = [v for c in picked for v in (_pretty(c), c.replace("_", " ").title())]
            queries.append(Query(kind, {"labels": labels, "target_count": 6}))
    return queries, (right if right else None)


def measure(
    backend: Any, queries: list[Query], options: LLMOptions, right: list[int] | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger(Path(folder) / "ledger.sqlite")
        provider = LLMFeedbackProvider(backend, ledger, options)
        start = time.perf_counter()
        answers = provider.answer(queries)
        wall = time.perf_counter() - start
        stats = provider.stats.to_dict()["total"]
        ledger.close()
    accuracy = None
    if right is not None:
        accuracy = float(np.mean([a.value == r for a, r in zip(answers, right, strict=True)]))
    return {
        "n": len(queries),
        "wall_s": wall,
        "qps": len(queries) / wall,
        "prompt_tokens": stats["prompt_tokens"] / len(queries),
        "ok": stats["statuses"].get("ok", 0),
        "parse_failures": stats["statuses"].get("parse-failure", 0),
        "accuracy": accuracy,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="questions per kind")
    parser.add_argument("--llm", default="llamacpp", help="backend spec (default: Qwen 1.5B)")
    parser.add_argument("--llm-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-layout", action="store_true", help="skip the layout comparison")
    args = parser.parse_args()
    data = Path(os.environ.get("GCDBENCH_DATA", "../shared/data"))
    by_class = banking_by_class(data)

    spec = parse_llm_spec(args.llm, option_pairs(args.llm_option))
    llm_options, backend_options = LLMOptions.split(spec.options)
    backend = open_backend(str(spec.arg), backend_options)
    # Untimed: the first request loads the model.
    backend.chat([ChatRequest((ChatMessage("user", "Say hi."),), max_tokens=2)])
    rows = []
    for kind in args.kinds.split(","):
        queries, right = banking_questions(by_class, kind, args.n, args.seed)
        rows.append((kind, measure(backend, queries, llm_options, right)))
    layout_rows = []
    if not args.no_layout:
        for kind in ("select-category", "classify-into-labels"):
            queries, right = banking_questions(by_class, kind, args.n, args.seed + 1)
            for layout in ("official", "cache-friendly"):
                opts = LLMOptions(**{**llm_options.__dict__, "layout": layout})
                layout_rows.append((kind, layout, measure(backend, queries, opts, right)))
    identity = ", ".join(f"{k}={v}" for k, v in backend.identity.items())
    backend.close()
    print_markdown(args, identity, rows, layout_rows)


def print_markdown(args: argparse.Namespace, identity: str, rows: list, layout_rows: list) -> None:
    command = "python benchmarks/llm_local.py " + shlex.join(sys.argv[1:])
    print(f"### Feedback questions/s with the local model ({identity})\n")
    print(
        f"`{command.strip()}` — {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, {args.n} questions per kind, BANKING train texts.\n"
    )
    print(
        "| kind | questions | wall s | questions/s | prompt tokens/q | ok | parse failures "
        "| right |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind, m in rows:
        right = "–" if m["accuracy"] is None else f"{100 * m['accuracy']:.0f}%"
        print(
            f"| {kind} | {m['n']} | {m['wall_s']:.1f} | {m['qps']:.2f} | "
            f"{m['prompt_tokens']:.0f} | {m['ok']} | {m['parse_failures']} | {right} |"
        )
    if layout_rows:
        print(
            "\nSame questions, prompt layout official (query, then options) vs cache-friendly "
            "(options, then query):\n"
        )
        print("| kind | layout | wall s | questions/s | speed-up | right |")
        print("|---|---|---:|---:|---:|---:|")
        base: dict[str, float] = {}
        for kind, layout, m in layout_rows:
            base.setdefault(kind, m["wall_s"])
            right = "–" if m["accuracy"] is None else f"{100 * m['accuracy']:.0f}%"
            print(
                f"| {kind} | {layout} | {m['wall_s']:.1f} | {m['qps']:.2f} | "
                f"{base[kind] / m['wall_s']:.2f}× | {right} |"
            )


if __name__ == "__main__":
    main()
