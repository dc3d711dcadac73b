"""One round of select-similar-instance questions against an OpenAI-compatible endpoint with a
fixed latency: one request at a time (how the official GLEAN code asks, inside its data loader)
versus the ``openai`` backend's bounded concurrency.

    python benchmarks/llm_concurrency.py                         # 500 questions, 200 ms, 32
    python benchmarks/llm_concurrency.py --n 64 --concurrency 16  # quick check
    python benchmarks/llm_concurrency.py --prefix-order smollm2-135m --n 8   # llamacpp order

The endpoint is the test suite's scripted chat-completions server (tests/llm_servers.py) on
127.0.0.1, answering every request after ``--latency`` seconds, so the figure isolates what
the client does with the waiting: an API's own latency, not its compute. Prints a markdown
block for benchmarks/RESULTS.md.

``--prefix-order MODEL`` measures instead what the ``llamacpp`` backend's request ordering
buys: ``--n`` questions that carry one of two long demonstration blocks, interleaved, answered
in the caller's order (every prompt starts cold) and sorted by prompt (llama.cpp reuses the
KV cache of the shared prefix).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from llm_servers import ScriptedChatServer

from gcdbench.llm.api import ChatMessage, ChatRequest, ChatResult
from gcdbench.llm.openai_compat import OpenAICompatibleFactory

SYSTEM = "You are a helpful assistant."
WORDS = [
    "card",
    "transfer",
    "account",
    "money",
    "top",
    "up",
    "fee",
    "pending",
    "payment",
    "arrived",
    "declined",
    "cash",
    "atm",
    "pin",
    "exchange",
    "rate",
    "refund",
    "balance",
    "statement",
    "verify",
    "identity",
    "blocked",
    "lost",
    "stolen",
    "app",
    "phone",
]


def select_similar_requests(n: int, options: int = 5, seed: int = 0) -> list[ChatRequest]:
    """Questions shaped like GLEAN's similar-instance selection (query + numbered choices)."""
    rng = np.random.default_rng(seed)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS, size=int(rng.integers(6, 14))))

    requests = []
    for i in range(n):
        lines = [
            "Select the utterance that better matches the Query in terms of intent.",
            "Also give your confidence as a probability between 0 and 1.",
            "Answer exactly as 'Choice <n>, Confidence: <p>' with no explanation.",
            f"Query: {sentence()} id={i}",
            *(f"Choice {k}: {sentence()}" for k in range(1, options + 1)),
        ]
        requests.append(
            ChatRequest(
                (ChatMessage("system", SYSTEM), ChatMessage("user", "\n".join(lines))),
                max_tokens=50,
            )
        )
    return requests


def timed_round(base_url: str, requests: list[ChatRequest], concurrency: int):
    backend = OpenAICompatibleFactory().create(
        "benchmark-model", {"base_url": base_url, "concurrency": str(concurrency)}
    )
    started = time.perf_counter()
    results: list[ChatResult] = backend.chat(requests)
    return time.perf_counter() - started, results


def demonstration_requests(n: int) -> list[ChatRequest]:
    """Questions alternating between two ~1k-token "Task Context" blocks (GLEAN §5.4)."""
    blocks = {
        key: "\n".join(
            f"Text: {key} example {j} about cards ⇥ Label: {key}_{j % 7}" for j in range(40)
        )
        for key in "AB"
    }
    requests = []
    for i in range(n):
        text = (
            f"Task Context:\n{blocks['AB'[i % 2]]}\nQuery: question {i}\nChoice 1: x\nChoice 2: y"
        )
        requests.append(
            ChatRequest(
                (ChatMessage("system", SYSTEM), ChatMessage("user", text)),
                max_tokens=4,
                choices=("Choice 1", "Choice 2"),
            )
        )
    return requests


def prefix_order_report(model: str, n: int, threads: int) -> None:
    from gcdbench.llm.resolve import open_backend

    backend = open_backend(f"llamacpp:{model}", {"n_ctx": "2048", "n_threads": str(threads)})
    requests = demonstration_requests(n)
    reset = [ChatRequest((ChatMessage("user", "reset"),), max_tokens=1)]
    backend.chat(reset)  # load the model outside the timing
    rows = []
    for sort in (False, True):
        backend.sort_prefixes = sort
        backend.chat(reset)  # start both runs from an unrelated cached prompt
        started = time.perf_counter()
        results = backend.chat(requests)
        rows.append((sort, time.perf_counter() - started, results))
    command = "python benchmarks/llm_concurrency.py " + shlex.join(sys.argv[1:])
    print(f"### llamacpp request order ({n} questions, 2 shared ~1k-token prefixes, {model})\n")
    print(f"`{command.strip()}` on {platform.machine()}, {os.cpu_count()} CPUs.\n")
    print("| order | wall (s) | s/question | same answers |")
    print("|---|---:|---:|---|")
    baseline = [r.text for r in rows[0][2]]
    for sort, wall, results in rows:
        same = [r.text for r in results] == baseline
        label = "sorted by prompt (default)" if sort else "caller's order"
        print(f"| {label} | {wall:.2f} | {wall / n:.2f} | {'yes' if same else 'NO'} |")
    print(f"\nSpeed-up from ordering: **{rows[0][1] / rows[1][1]:.1f}×**.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="questions in the round")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency, seconds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--prefix-order", metavar="MODEL", help="measure llamacpp ordering")
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    args = parser.parse_args()
    if args.prefix_order:
        prefix_order_report(args.prefix_order, args.n, args.threads)
        return

    requests = select_similar_requests(args.n)
    rows = []
    with ScriptedChatServer(latency_s=args.latency) as server:
        for label, concurrency in (
            ("one at a time (official)", 1),
            ("openai backend", args.concurrency),
        ):
            wall, results = timed_round(server.base_url, requests, concurrency)
            in_order = all(r.text == f"answer {i}" for i, r in enumerate(results))
            errors = sum(not r.ok for r in results)
            retries = sum(r.retries for r in results)
            rows.append((label, concurrency, wall, errors, retries, in_order))
            print(f"{label}: {wall:.2f} s", file=sys.stderr)
    ratio = rows[0][2] / rows[1][2]
    command = "python benchmarks/llm_concurrency.py " + shlex.join(sys.argv[1:])
    print(f"### LLM round concurrency ({args.n} questions, {args.latency * 1000:.0f} ms latency)\n")
    print(f"`{command.strip()}` on {platform.machine()}, {os.cpu_count()} CPUs, ")
    print(f"Python {platform.python_version()}; endpoint: scripted server on 127.0.0.1.\n")
    print("| client | concurrency | wall (s) | questions/s | errors | retries | in order |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, concurrency, wall, errors, retries, in_order in rows:
        rate = args.n / wall
        print(
            f"| {label} | {concurrency} | {wall:.2f} | {rate:.1f} | {errors} | {retries} | "
            f"{'yes' if in_order else 'NO'} |"
        )
    floor = args.n * args.latency
    print(f"\nSpeed-up: **{ratio:.1f}×** (target ≥ 20×). Sequential floor: {floor:.1f} s; ")
    print(f"concurrent floor: {np.ceil(args.n / args.concurrency) * args.latency:.1f} s.")


if __name__ == "__main__":
    main()
