"""A 24-run smoke sweep under each executor (issue #16): ``gcdbench sweep`` with ``local``,
``processes --workers 2`` and ``ray --workers 2`` (a local Ray instance of 2 CPUs), measured
side by side in one sitting, plus Ray's own start-up.

    python benchmarks/sweep_executors.py               # 3 rounds: about 6 minutes on 2 busy cores
    python benchmarks/sweep_executors.py --rounds 5

The plan: GLEAN (smoke preset, ``llm = "oracle"``) and no-llm (smoke preset) on two slices of
the real BANKING data (its first 6 and first 8 classes), known ratio 0.5, seeds 0-5: 2 x 2 x
6 = 24 runs, encoder a tiny random BERT. Slices, encoder and the plugin package that
registers the slices (so worker processes and Ray workers see them) are made as in
benchmarks/harness_overhead.py.

Each round runs the three sweeps one after the other, the order rotated from round to round
(round 1: local, processes, ray; round 2: processes, ray, local; ...), each into a fresh
results folder with a fresh cache (every sweep pays its own pre-training and feature
caches), ``OMP_NUM_THREADS=1`` in every process; then a Ray start-up probe in a fresh
interpreter: ``import ray``, ``ray.init(num_cpus=2)`` (with a runtime environment, as the
executor starts it), a first no-op task, a first task that imports what a run imports
(gcdbench's runner and torch), ``ray.shutdown()``.

The machine is shared with other jobs, so what counts is the ratio of sweeps measured in
the same round: processes/local and ray/local per round, and their median. Each
measurement shows the 1-minute load average at its start and end, and whether its 24
records carry the same run ids and metrics as the first sweep's. Prints a markdown block for
benchmarks/RESULTS.md; progress goes to stderr. Needs GCDBENCH_DATA (or ../shared/data
beside the checkout).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness_overhead import (
    SLICES,
    Inputs,
    console,
    gcdbench,
    load_1m,
    machine,
    prepare_inputs,
    run_checked,
    write_plan,
)

SEEDS = range(6)
WORKERS = 2
#: executor -> the flags `gcdbench sweep` gets
EXECUTORS: dict[str, tuple[str, ...]] = {
    "local": (),
    "processes": ("--executor", "processes", "--workers", str(WORKERS)),
    "ray": ("--executor", "ray", "--workers", str(WORKERS)),
}
#: Ray's start-up, step by step, in a fresh interpreter; prints one JSON object.
RAY_PROBE = """
import json, os, sys, time
clock = [time.perf_counter()]
def lap():
    clock.append(time.perf_counter())
    return round(clock[-1] - clock[-2], 3)
out = {}
import ray
out["import ray"] = lap()
env = {k: v for k, v in os.environ.items() if k.startswith("GCDBENCH_")}
ray.init(num_cpus=NUM_CPUS, include_dashboard=False, log_to_driver=False,
         runtime_env={"env_vars": env})
out["ray.init"] = lap()
@ray.remote
def noop():
    return os.getpid()
ray.get(noop.remote())
out["first task"] = lap()
@ray.remote
def load_run_code():
    import gcdbench.runner.run, torch  # what a sweep task imports before its run
    return os.getpid()
ray.get(load_run_code.remote())
out["task importing gcdbench + torch"] = lap()
ray.shutdown()
out["ray.shutdown"] = lap()
print(json.dumps(out))
""".replace("NUM_CPUS", str(WORKERS))


@dataclass(frozen=True)
class Sweep:
    round: int
    executor: str
    wall_s: float
    load_start: float
    load_end: float
    runs: int
    results: dict[str, dict[str, float]]  # run id -> metrics


@dataclass(frozen=True)
class Probe:
    round: int
    steps: dict[str, float]
    wall_s: float
    load_start: float
    load_end: float


def run_sweep(inputs: Inputs, plan: Path, work: Path, round_: int, executor: str) -> Sweep:
    results = work / f"round{round_}-{executor}"
    argv = gcdbench("sweep", str(plan), "--results-dir", str(results), "-q", *EXECUTORS[executor])
    start = load_1m()
    console.log(f"round {round_}: sweep, {executor} (load {start:.2f})")
    wall = run_checked(argv, inputs.env(work / f"cache-round{round_}-{executor}"))
    end = load_1m()
    console.log(f"round {round_}: {executor} took {wall:.1f} s (load {end:.2f})")
    recorded = read_results(results)
    return Sweep(round_, executor, wall, start, end, len(recorded), recorded)


def read_results(results: Path) -> dict[str, dict[str, float]]:
    out = {}
    for path in results.glob("runs/*/*/*/record.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        out[record["run_id"]] = record["metrics"]
    return out


def probe_ray(inputs: Inputs, work: Path, round_: int) -> Probe:
    start = load_1m()
    console.log(f"round {round_}: Ray start-up probe (load {start:.2f})")
    began = time.perf_counter()
    env = inputs.env(work / f"cache-probe{round_}")
    done = subprocess.run(
        [sys.executable, "-c", RAY_PROBE], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"the Ray start-up probe failed: {done.stderr.strip().splitlines()[-1:]}")
    steps = json.loads(done.stdout.strip().splitlines()[-1])
    return Probe(round_, steps, wall, start, load_1m())


def rotated(round_: int) -> list[str]:
    names = list(EXECUTORS)
    shift = (round_ - 1) % len(names)
    return names[shift:] + names[:shift]


# -- the tables ------------------------------------------------------------------------------


def print_report(
    sweeps: Sequence[Sweep], probes: Sequence[Probe], args: argparse.Namespace
) -> None:
    command = "python benchmarks/sweep_executors.py " + shlex.join(sys.argv[1:])
    print("### A 24-run smoke sweep under each executor\n")
    print(
        f"`GCDBENCH_DATA=../shared/data {command.strip()}` — {machine()}; `gcdbench sweep` "
        f'of GLEAN (smoke, `llm = "oracle"`) and no-llm (smoke) x {", ".join(SLICES)} x '
        f"seeds 0-{len(SEEDS) - 1}, tiny random BERT, OMP_NUM_THREADS=1; {args.rounds} rounds, "
        "order rotated each round; fresh results folder and cache per sweep\n"
    )
    reference = sweeps[0].results
    print("| # | round | executor | wall s | runs recorded | same results as #1 | "
          "load 1m start | load 1m end |")  # fmt: skip
    print("|---:|---:|---|---:|---:|---|---:|---:|")
    for i, s in enumerate(sweeps, start=1):
        same = "yes" if s.results == reference else "no"
        print(
            f"| {i} | {s.round} | {s.executor} | {s.wall_s:.1f} | {s.runs} | {same} | "
            f"{s.load_start:.2f} | {s.load_end:.2f} |"
        )
    print()
    print_ratios(sweeps)
    print_probes(probes)


def print_ratios(sweeps: Sequence[Sweep]) -> None:
    rounds = sorted({s.round for s in sweeps})
    wall = {(s.round, s.executor): s.wall_s for s in sweeps}
    print("| executor | wall s per round | median wall s | / local, per round | median / local |")
    print("|---|---|---:|---|---:|")
    for name in EXECUTORS:
        walls = [wall[r, name] for r in rounds]
        ratios = [wall[r, name] / wall[r, "local"] for r in rounds]
        print(
            f"| {name} | {', '.join(f'{w:.1f}' for w in walls)} | {statistics.median(walls):.1f} "
            f"| {', '.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f} |"
        )
    print()


def print_probes(probes: Sequence[Probe]) -> None:
    steps = list(probes[0].steps)
    print(f"Ray start-up, `ray.init(num_cpus={WORKERS})` in a fresh interpreter (seconds):\n")
    print(f"| round | {' | '.join(steps)} | whole probe | load 1m start | load 1m end |")
    print(f"|---:|{'---:|' * len(steps)}---:|---:|---:|")
    for p in probes:
        cells = " | ".join(f"{p.steps[s]:.2f}" for s in steps)
        print(f"| {p.round} | {cells} | {p.wall_s:.2f} | {p.load_start:.2f} | {p.load_end:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three sweeps")
    args = parser.parse_args()
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1")
    sweeps: list[Sweep] = []
    probes: list[Probe] = []
    with tempfile.TemporaryDirectory(prefix="sweep-executors-") as folder:
        work = Path(folder)
        console.log(f"preparing slices, encoder and plugin in {work}")
        inputs = prepare_inputs(work / "inputs")
        plan = write_plan(work / "plan.toml", inputs, list(SLICES), list(SEEDS))
        for round_ in range(1, args.rounds + 1):
            sweeps += [run_sweep(inputs, plan, work, round_, e) for e in rotated(round_)]
            probes.append(probe_ray(inputs, work, round_))
    print_report(sweeps, probes, args)


if __name__ == "__main__":
    main()
