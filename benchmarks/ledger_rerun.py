"""A second identical run makes no backend call: the same questions asked twice through the
LLM feedback provider, each time by a freshly opened provider on one ledger file.

    python benchmarks/ledger_rerun.py                                   # 200 questions, SmolLM2
    python benchmarks/ledger_rerun.py --n 20                            # quick check
    python benchmarks/ledger_rerun.py --llm llamacpp --n 200            # the default Qwen 1.5B

The questions are real BANKING texts (select-similar-instance and classify-into-labels,
half each). The ledger is a fresh file unless ``--ledger`` names one. Needs GCDBENCH_DATA.
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

from llm_local import banking_by_class, banking_questions

from gcdbench.feedback.asking import LLMOptions
from gcdbench.feedback.ledger import Ledger
from gcdbench.feedback.llm_provider import LLMFeedbackProvider
from gcdbench.feedback.resolve import option_pairs, parse_llm_spec
from gcdbench.llm.api import ChatMessage, ChatRequest
from gcdbench.llm.resolve import open_backend


def one_run(spec_arg: str, backend_options: dict, options: LLMOptions, ledger_path: Path,
            queries: list) -> dict:  # fmt: skip
    backend = open_backend(spec_arg, backend_options)
    # Untimed and outside the provider's counts: the first request loads the model.
    backend.chat([ChatRequest((ChatMessage("user", "Say hi."),), max_tokens=2)])
    ledger = Ledger(ledger_path)
    provider = LLMFeedbackProvider(backend, ledger, options)
    start = time.perf_counter()
    answers = provider.answer(queries)
    wall = time.perf_counter() - start
    stats = provider.stats.to_dict()
    provider.close()
    return {
        "wall_s": wall,
        "backend_requests": stats["total"]["backend_requests"],
        "backend_batches": stats["backend_batches"],
        "ledger_hits": stats["total"]["ledger_hits"],
        "answers": [(a.value, a.status) for a in answers],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="questions in the run")
    parser.add_argument("--llm", default="llamacpp:smollm2-135m")
    parser.add_argument("--llm-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--ledger", default=None, help="ledger file (default: a fresh one)")
    args = parser.parse_args()
    by_class = banking_by_class(Path(os.environ.get("GCDBENCH_DATA", "../shared/data")))
    half = args.n // 2
    queries = (
        banking_questions(by_class, "select-similar-instance", args.n - half, 0)[0]
        + banking_questions(by_class, "classify-into-labels", half, 0)[0]
    )
    spec = parse_llm_spec(args.llm, option_pairs(args.llm_option))
    options, backend_options = LLMOptions.split(spec.options)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.ledger) if args.ledger else Path(folder) / "ledger.sqlite"
        first = one_run(str(spec.arg), backend_options, options, path, queries)
        second = one_run(str(spec.arg), backend_options, options, path, queries)
    same = first["answers"] == second["answers"]
    command = "python benchmarks/ledger_rerun.py " + shlex.join(sys.argv[1:])
    print(f"### Ledger re-run ({spec.canonical()}, {len(queries)} questions)\n")
    print(
        f"`{command.strip()}` — {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores. Wall time of `provider.answer` (model load excluded).\n"
    )
    print("| run | backend requests | backend calls | ledger hits | wall s |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("first", first), ("second", second)):
        print(
            f"| {name} | {run['backend_requests']} | {run['backend_batches']} | "
            f"{run['ledger_hits']} | {run['wall_s']:.2f} |"
        )
    print(f"\nSecond run's answers identical to the first: {'yes' if same else 'NO'}.")
    if second["backend_requests"] != 0 or not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
