"""Wall time, peak memory and quality of `no-llm` (and `kmeans` beside it) on one split.

    python benchmarks/no_llm_banking.py                         # banking 25%, seed 0, --preset cpu
    python benchmarks/no_llm_banking.py -p epochs=1 -p max_steps_per_epoch=5   # a quick check

Each method runs as its own `gcdbench run` process in a fresh results folder and, unless
--keep-cache, a fresh GCDBENCH_CACHE (so MTP pre-training is measured, not read from the
cache). Peak RSS is the largest sum of resident memory over the process and all its
descendants, sampled every 0.2 s from /proc (Linux). Prints a markdown block for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

METRICS = ("acc", "ari", "nmi")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # the command name may contain spaces; the ppid is the second field after ')'
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _tree_rss_mb(root: int) -> float:
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
        todo.extend(_children(pid))
    return total / 1024


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(wall seconds, peak tree RSS in MB, exit code) of one command."""
    start = time.perf_counter()
    # A file, not a pipe: a chatty run must never block on a full pipe while we only poll.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mb(proc.pid))
            time.sleep(0.2)
        wall = time.perf_counter() - start
        if proc.returncode:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
    return wall, peak, proc.returncode


def _record(results: Path, method: str) -> dict:
    (path,) = [p for p in results.rglob("record.json") if f"/{method}/" in str(p)]
    return json.loads(path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="banking")
    parser.add_argument("--known-ratio", default="0.25")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--encoder", default=None)
    parser.add_argument("-p", "--param", action="append", default=[], help="KEY=VALUE override")
    parser.add_argument("--method", default="no-llm")
    parser.add_argument("--no-kmeans", action="store_true", help="skip the kmeans baseline")
    parser.add_argument("--keep-cache", action="store_true", help="use the usual GCDBENCH_CACHE")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="gcdbench-bench-"))
    env = dict(os.environ)
    if not args.keep_cache:
        env["GCDBENCH_CACHE"] = str(work / "cache")
    common = ["--dataset", args.dataset, "--known-ratio", args.known_ratio, "--seed", args.seed]
    common += ["--results-dir", str(work / "results")]
    if args.encoder:
        common += ["--encoder", args.encoder]
    runs = {}
    plan = [("kmeans", [])] if not args.no_kmeans else []
    plan.append(
        (args.method, ["--preset", args.preset] + [a for p in args.param for a in ("--param", p)])
    )
    for method, extra in plan:
        argv = ["gcdbench", "run", method, *common, *extra]
        wall, peak, code = measure(argv, env)
        if code:
            print(f"{shlex.join(argv)} failed with exit code {code}", file=sys.stderr)
            return code
        runs[method] = (argv, wall, peak, _record(work / "results", method))

    argv = runs[args.method][0]
    cut = argv.index("--results-dir")  # a temp folder: not part of what to re-run
    shown = argv[:cut] + argv[cut + 2 :]
    print(f"### `{args.method}` on {args.dataset} {args.known_ratio}, seed {args.seed}\n")
    print(
        f"Command: `{shlex.join(shown)}` (via `python benchmarks/no_llm_banking.py "
        f"{shlex.join(sys.argv[1:])}`)  "
    )
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"torch threads default\n"
    )
    print("| method | ACC | ARI | NMI | wall (s) | peak RSS (MB, process tree) |")
    print("|---|---|---|---|---|---|")
    for method, (_, wall, peak, record) in runs.items():
        values = " | ".join(f"{record['metrics'][m]:.2f}" for m in METRICS)
        print(f"| {method} | {values} | {wall:.0f} | {peak:.0f} |")
    record = runs[args.method][3]
    params = record["spec"]["params"]
    print(f"\nResolved params: `{json.dumps(params, sort_keys=True)}`  ")
    durations = record["provenance"]["durations_s"]
    print(f"Stages (s): `{json.dumps(durations, sort_keys=True)}`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
