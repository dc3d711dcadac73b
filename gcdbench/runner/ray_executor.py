"""The Ray executor: one Ray task per run, on this machine or on a Ray cluster.

On a cluster (``RAY_ADDRESS`` set, or ``ray start`` done on this node) every node needs
gcdbench and the plugins installed, and the results folder, data folder and cache must be
on storage all nodes share: records are written by the workers, atomically, as everywhere.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from gcdbench.api.executor import Executor, Outcome
from gcdbench.api.spec import RunSpec
from gcdbench.errors import GcdbenchError


def _call(job: Callable[[RunSpec], Outcome], spec: RunSpec) -> Outcome:
    return job(spec)


class RayExecutor(Executor):
    name = "ray"
    description = (
        "one Ray task per run: a local Ray instance (--workers CPUs), or the cluster at "
        "RAY_ADDRESS; needs `pip install 'gcdbench[ray]'`"
    )

    def __init__(
        self,
        workers: int | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise GcdbenchError(
                "the ray executor needs Ray; install it with `pip install 'gcdbench[ray]'`."
            ) from None
        super().__init__(workers, on_outcome)

    def map(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> list[Outcome]:
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            address = os.environ.get("RAY_ADDRESS")
            ray.init(
                address=address,
                num_cpus=None if address else self.workers,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": _forwarded_env()},
            )
        try:
            remote = ray.remote(num_cpus=1)(_call)
            index = {remote.remote(job, spec): i for i, spec in enumerate(specs)}
            results: dict[int, Outcome] = {}
            pending = list(index)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                results[index[done[0]]] = self.report(ray.get(done[0]))
            return [results[i] for i in range(len(specs))]
        finally:
            if started_here:
                ray.shutdown()


_PATH_VARS = ("GCDBENCH_DATA", "GCDBENCH_CACHE", "GCDBENCH_RESULTS")


def _forwarded_env() -> dict[str, str]:
    """gcdbench's own settings, so workers read the same data and caches as the driver.
    Ray workers do not start in the driver's folder: relative paths are made absolute."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("GCDBENCH_", "HF_"))}
    for key in _PATH_VARS:
        if key in env:
            env[key] = os.path.abspath(env[key])
    return env
