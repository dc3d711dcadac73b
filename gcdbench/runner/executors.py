"""Built-in executors: in this process, or in a pool of worker processes.

Every worker writes to the same results store; records are written atomically and
named by run id and written under the run's lock, so workers never collide.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from gcdbench.api.executor import Executor, Outcome
from gcdbench.api.spec import RunSpec


class LocalExecutor(Executor):
    name = "local"
    description = "one run after another in this process (the default)"

    def map(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> list[Outcome]:
        return [self.report(job(spec)) for spec in specs]


class ProcessExecutor(Executor):
    name = "processes"
    description = "runs in parallel worker processes (--workers N, default: CPU count)"

    def map(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> list[Outcome]:
        # Here, not at the top: every command loads this module (it is a plugin's), few
        # start a pool.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        results: dict[int, Outcome] = {}
        # Fresh interpreters: forking a process whose torch/BLAS threads are running can
        # deadlock the children.
        context = multiprocessing.get_context("spawn")
        # self.workers is None or >= 1 (checked by Executor.__init__).
        workers = self.workers if self.workers is not None else os.cpu_count() or 1
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(job, spec): i for i, spec in enumerate(specs)}
            for future in as_completed(futures):
                results[futures[future]] = self.report(future.result())
        return [results[i] for i in range(len(specs))]
