"""Start-up time of the commands that run no method: the median of 5 wall-clock starts each.

    python benchmarks/startup.py                 # needs GCDBENCH_DATA (one tiny real run)
    python benchmarks/startup.py --repeats 11
    python benchmarks/startup.py --encoder all-MiniLM-L6-v2   # the run on the default encoder

Each command runs as ``python -m gcdbench ...`` under this interpreter (what the ``gcdbench``
script does, without a shell shim in front), with its output discarded. ``gcdbench show`` and
``gcdbench show RUN`` read a results store the script makes in a temporary folder with one
real run: K-means on StackOverflow, by default on the bag-of-words encoder, the cheapest
method and encoder there are (``show`` checks the run's encoder weights for staleness, so
``--encoder`` measures what that check costs for another encoder). The first row is the
interpreter alone (``python -c pass``), the floor under every command. Prints a markdown
block for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The one run the store holds: a small dataset, and K-means embeds only its test split.
SEED_RUN = ("run", "kmeans", "--dataset", "stackoverflow", "-q")


def _gcdbench(*args: str) -> list[str]:
    return [sys.executable, "-m", "gcdbench", *args]


def _time(argv: list[str], repeats: int, env: dict[str, str]) -> list[float]:
    """Wall-clock seconds of ``repeats`` starts, after one untimed start that warms the
    file-system cache (the first start after a change also writes .pyc files)."""
    seconds = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{shlex.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
        if i:
            seconds.append(elapsed)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed starts per command")
    parser.add_argument(
        "--encoder", default="bag-of-words", help="the encoder of the run in the store"
    )
    args = parser.parse_args()
    if not os.environ.get("GCDBENCH_DATA"):
        sys.exit("set GCDBENCH_DATA (e.g. GCDBENCH_DATA=../shared/data): the store needs a run")
    env = dict(os.environ, COLUMNS="120")
    with tempfile.TemporaryDirectory() as folder:
        results = str(Path(folder) / "results")
        env["GCDBENCH_RESULTS"] = results
        seed_run = _gcdbench(*SEED_RUN, "--encoder", args.encoder)
        done = subprocess.run(seed_run, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the run for the store failed: {done.stderr.strip()}")
        runs = list(Path(results).glob("runs/*/*/*/record.json"))
        if len(runs) != 1:
            sys.exit(f"expected one run in {results}, found {len(runs)}")
        run_id = runs[0].parent.name[:10]
        commands: list[tuple[str, list[str]]] = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("gcdbench --help", _gcdbench("--help")),
            ("gcdbench data list", _gcdbench("data", "list")),
            ("gcdbench plugins", _gcdbench("plugins")),
            ("gcdbench show", _gcdbench("show")),
            ("gcdbench show RUN", _gcdbench("show", run_id)),
        ]
        timings = {label: _time(argv, args.repeats, env) for label, argv in commands}
    command = "python benchmarks/startup.py " + shlex.join(sys.argv[1:])
    print(f"### Start-up of commands that run no method (median of {args.repeats})\n")
    print(
        f"`GCDBENCH_DATA=../shared/data {command.strip()}` — "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; `python -m gcdbench`, output discarded, "
        f"one untimed warm-up start each; the store holds one K-means run on {args.encoder}\n"
    )
    print("| command | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    for label, seconds in timings.items():
        print(
            f"| `{label}` | {statistics.median(seconds):.2f} | {min(seconds):.2f} | "
            f"{max(seconds):.2f} |"
        )


if __name__ == "__main__":
    main()
