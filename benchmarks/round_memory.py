"""Peak memory of one round's mining: gcdbench's O(N·K) distances vs the official N×K×d broadcast.

Each approach runs in its own subprocess on random float32 features (memory does not depend
on the values). The subprocess builds its inputs, resets the kernel's peak-RSS mark
(/proc/self/clear_refs; else it subtracts the RSS before the step from ru_maxrss) and reports
how far the peak rose during the step alone.

Approaches:
  ours-soft      squared distances as ‖z‖²+‖μ‖²−2zμᵀ, Student-t, DEC target, entropy
  ours-round     ours-soft + kNN lists (torch, chunked) + local inconsistency + entropy miner
  official-soft  the reference computation: (z[:, None] − μ)² summed over d (N×K×d tensors),
                 then the same Student-t/DEC/softmax-entropy, in torch float32

The official broadcast needs two N×K×d float32 tensors at once (the difference and its
square), 2·N·K·d·4 bytes; it is measured at ``--official-n`` rows (it would not fit in RAM at
CLINC size with d = 768) and extrapolated linearly to ``--n``, which the table says.

    python benchmarks/round_memory.py                       # CLINC size: 18,000 × 150
    python benchmarks/round_memory.py --n 3000 --official-n 500 --dims 384   # quick check
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MIB = 1024 * 1024


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _peak_kib() -> int:
    try:
        return _status_kib("VmHWM")
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _ours(features: np.ndarray, centers: np.ndarray, neighbours: int, full: bool) -> None:
    from gcdbench.api.miner import ClusterState
    from gcdbench.training.mining import (
        assignment_entropy,
        dec_target,
        knn,
        local_inconsistency,
        student_t,
    )
    from gcdbench_builtins.miners import EntropyMiner

    soft = dec_target(student_t(features, centers, variant="official"))
    entropy = assignment_entropy(soft, "official")
    if not full:
        return
    assignments = soft.argmax(axis=1)
    lists = knn(features, neighbours, metric="inner", backend="torch")
    local_inconsistency(assignments, lists)
    state = ClusterState(features, assignments, soft, lists, centers, entropy, "official")
    EntropyMiner().select(state, 500, np.random.default_rng(0))


def _official(features: np.ndarray, centers: np.ndarray, alpha: float = 1.0) -> None:
    import torch

    z, mu = torch.from_numpy(features), torch.from_numpy(centers)
    # The reference expression: an N×K×d difference, squared, summed over d.
    q = 1.0 / (1.0 + torch.sum((z.unsqueeze(1) - mu) ** 2, dim=2) / alpha)
    q = q.pow(alpha + 1.0) / 2.0
    q = q / q.sum(dim=1, keepdim=True)
    p = q**2 / q.sum(dim=0)
    p = p / p.sum(dim=1, keepdim=True)
    soft = torch.softmax(p, dim=1)
    (-(soft * soft.log()).sum(dim=1)).numpy()


def worker(approach: str, n: int, clusters: int, dim: int, neighbours: int) -> dict[str, float]:
    import torch  # imported before the reset so library pages do not count as the step's

    import gcdbench.training.mining  # noqa: F401

    del torch
    rng = np.random.default_rng(0)
    features = rng.standard_normal((n, dim), dtype=np.float32)
    centers = features[rng.choice(n, clusters, replace=False)].copy()
    before = _status_kib("VmRSS")
    exact = _reset_peak()
    start = time.perf_counter()
    if approach == "official-soft":
        _official(features, centers)
    else:
        _ours(features, centers, neighbours, full=approach == "ours-round")
    seconds = time.perf_counter() - start
    peak = _peak_kib()
    return {"peak_increase_mib": (peak - before) / 1024, "seconds": seconds, "exact": exact}


def _run(approach: str, n: int, clusters: int, dim: int, neighbours: int) -> dict[str, float]:
    command = [
        sys.executable,
        __file__,
        "--worker",
        approach,
        "--n",
        str(n),
        "--clusters",
        str(clusters),
        "--dims",
        str(dim),
        "--neighbours",
        str(neighbours),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{approach} at N={n}, d={dim} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=18000, help="pool size (CLINC: 18,000)")
    parser.add_argument("--clusters", type=int, default=150, help="K (CLINC: 150)")
    parser.add_argument("--dims", default="384,768", help="comma-separated feature sizes")
    parser.add_argument("--neighbours", type=int, default=50, help="k of the kNN lists")
    parser.add_argument(
        "--official-n", type=int, default=2000, help="rows to measure the official broadcast at"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    dims = [int(d) for d in args.dims.split(",")]
    if args.worker:
        result = worker(args.worker, args.n, args.clusters, dims[0], args.neighbours)
        print(json.dumps(result))
        return

    rows = []
    for dim in dims:
        for approach in ("ours-soft", "ours-round"):
            result = _run(approach, args.n, args.clusters, dim, args.neighbours)
            rows.append(
                (
                    approach,
                    dim,
                    result["peak_increase_mib"],
                    f"measured at N={args.n:,}",
                    f"{result['seconds']:.2f}",
                )
            )
        small = min(args.official_n, args.n)
        result = _run("official-soft", small, args.clusters, dim, args.neighbours)
        scale = args.n / small
        how = "measured" if small == args.n else f"extrapolated ×{scale:.1f} from N={small:,}"
        seconds = f"{result['seconds']:.2f}" + ("" if small == args.n else f" (N={small:,})")
        rows.append(("official-soft", dim, result["peak_increase_mib"] * scale, how, seconds))
        analytic = 2 * args.n * args.clusters * dim * 4 / MIB
        rows.append(("official-soft, analytic 2·N·K·d·4 B", dim, analytic, "computed", "–"))

    command = "python benchmarks/round_memory.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    print(f"### Round mining memory: N = {args.n:,}, K = {args.clusters}, k = {args.neighbours}\n")
    print(
        f"`{command.strip()}` — {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, random float32 features\n"
    )
    print("| approach | d | peak RSS increase (MiB) | how | time (s) |")
    print("|---|---|---|---|---|")
    for approach, dim, mib, how, seconds in rows:
        print(f"| {approach} | {dim} | {mib:,.0f} | {how} | {seconds} |")
    print(
        "\nPeak = rise of the process's peak RSS over its RSS just before the step (inputs "
        "excluded), one subprocess per row."
    )


if __name__ == "__main__":
    main()
