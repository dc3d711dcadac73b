"""Built-in executors: in this process, or in a pool of worker processes.

Every worker writes to the same results store; records are written atomically and
content-addressed by spec hash, so workers never collide.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from gcdbench.api.executor import Executor, Outcome
from gcdbench.api.spec import RunSpec


class LocalExecutor(Executor):
    name = "local"
    description = "one run after another in this process (the default)"

    def __init__(self, workers: int | None = None) -> None:
        self.on_outcome: Callable[[Outcome], None] | None = None

    def map(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> list[Outcome]:
        outcomes = []
        for spec in specs:
            outcome = job(spec)
            outcomes.append(outcome)
            if self.on_outcome:
                self.on_outcome(outcome)
        return outcomes


class ProcessExecutor(Executor):
    name = "processes"
    description = "runs in parallel worker processes (--workers N, default: CPU count)"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self.on_outcome: Callable[[Outcome], None] | None = None

    def map(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> list[Outcome]:
        results: dict[int, Outcome] = {}
        # Fresh interpreters: forking a process whose torch/BLAS threads are running can
        # deadlock the children.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            futures = {pool.submit(job, spec): i for i, spec in enumerate(specs)}
            for future in as_completed(futures):
                outcome = future.result()
                results[futures[future]] = outcome
                if self.on_outcome:
                    self.on_outcome(outcome)
        return [results[i] for i in range(len(specs))]
