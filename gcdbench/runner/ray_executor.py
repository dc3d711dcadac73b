"""The Ray executor: one Ray task per run, on this machine or on a Ray cluster.

On a cluster (``RAY_ADDRESS`` set, or ``ray start`` done on this node) every node needs
gcdbench and the plugins installed. By default the results folder, data folder and cache
are on storage all nodes share: records are written by the workers, atomically, as
everywhere. With ``--ray-no-shared-disk`` workers write to a store of their own and the
driver writes what they send back (gcdbench/runner/ray_support.py).

Each task asks Ray for what its method declares (``Method.resources``, overridden by
``--ray-resources``), and with ``GCDBENCH_LLM_CLUSTER_CONCURRENCY`` / ``_RPS`` set every run's
LLM requests share one limit (gcdbench/llm/cluster_limit.py). docs/cluster.md has the whole
story.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gcdbench.api.executor import Executor, Outcome
from gcdbench.api.method import Resources
from gcdbench.api.spec import RunSpec
from gcdbench.errors import GcdbenchError
from gcdbench.llm import cluster_limit
from gcdbench.runner.ray_support import (
    DriverStore,
    RaySettings,
    Shipment,
    check_feasible,
    ray_options,
    resources_for,
    run_shipped,
)


def _call(job: Callable[[RunSpec], Outcome], spec: RunSpec, limiter: Any) -> Outcome:
    with cluster_limit.installed(limiter):
        return job(spec)


def _call_shipped(
    job: Callable[[RunSpec], Outcome],
    spec: RunSpec,
    limiter: Any,
    seeds: Mapping[str, bytes],
    snapshot: bytes | None,
) -> Shipment:
    with cluster_limit.installed(limiter):
        return run_shipped(job, spec, seeds, snapshot)


class RayExecutor(Executor):
    name = "ray"
    description = (
        "one Ray task per run: a local Ray instance (--workers CPUs), or the cluster at "
        "RAY_ADDRESS; needs `pip install 'gcdbench[ray]'` (docs/cluster.md)"
    )

    def __init__(
        self,
        workers: int | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        settings: RaySettings | None = None,
    ) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise GcdbenchError(
                "the ray executor needs Ray; install it with `pip install 'gcdbench[ray]'`."
            ) from None
        super().__init__(workers, on_outcome)
        # The environment's settings (GCDBENCH_RAY_*, the LLM limit) are checked here,
        # before the caller writes anything.
        self.settings = settings if settings is not None else RaySettings.resolve()

    def map(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> list[Outcome]:
        import ray

        started_here = not ray.is_initialized()
        address = os.environ.get("RAY_ADDRESS")
        if started_here:
            self._connect(address)
        try:
            requests = {s.method: resources_for(s.method, self.settings.resources) for s in specs}
            check_feasible(requests, ray.nodes(), local_workers=started_here and not address)
            return self._run(job, specs, requests)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, address: str | None) -> None:
        """The cluster at ``address``, else the one ``ray start`` began on this node, else a
        new local instance of ``--workers`` CPUs."""
        import ray

        options: dict[str, Any] = {
            "address": address,
            "include_dashboard": False,
            "log_to_driver": False,
            "runtime_env": {"env_vars": _forwarded_env(self.settings.shared_disk)},
        }
        try:
            ray.init(**options, num_cpus=None if address else self.workers)
        except ValueError as exc:
            # Ray found a cluster `ray start` began on this node: its size decides.
            if "existing cluster" not in str(exc):
                raise
            ray.init(**options)

    def _run(
        self,
        job: Callable[[RunSpec], Outcome],
        specs: Sequence[RunSpec],
        requests: Mapping[str, Resources],
    ) -> list[Outcome]:
        import ray

        limit = self.settings.llm_limit
        # Owned by this driver: it ends with the sweep, whoever else uses the cluster.
        limiter = (
            cluster_limit.start_actor(limit, f"gcdbench-llm-limit-{uuid.uuid4().hex[:8]}")
            if limit.active
            else None
        )
        driver = None if self.settings.shared_disk else DriverStore(job, specs)
        try:
            index = self._submit(job, specs, requests, limiter, driver)
            results: dict[int, Outcome] = {}
            pending = list(index)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                value = ray.get(done[0])
                outcome = driver.publish(value) if driver is not None else value
                results[index[done[0]]] = self.report(outcome)
            return [results[i] for i in range(len(specs))]
        finally:
            if driver is not None:
                driver.close()
            if limiter is not None:
                ray.kill(limiter)

    def _submit(
        self,
        job: Callable[[RunSpec], Outcome],
        specs: Sequence[RunSpec],
        requests: Mapping[str, Resources],
        limiter: Any,
        driver: DriverStore | None,
    ) -> dict[Any, int]:
        import ray

        call: Any = ray.remote(_call)
        shipped: Any = ray.remote(_call_shipped)
        snapshot = driver.snapshot() if driver is not None else None
        # One copy in Ray's object store, however many runs read it.
        snapshot_ref = ray.put(snapshot) if snapshot is not None else None
        index = {}
        for i, spec in enumerate(specs):
            options = ray_options(requests[spec.method])
            if driver is None:
                ref = call.options(**options).remote(job, spec, limiter)
            else:
                seeds = driver.seeds(spec)
                ref = shipped.options(**options).remote(job, spec, limiter, seeds, snapshot_ref)
            index[ref] = i
        return index


_PATH_VARS = ("GCDBENCH_DATA", "GCDBENCH_CACHE", "GCDBENCH_RESULTS", "GCDBENCH_LEDGER")
#: Not secret, and without it a worker would ask api.openai.com instead of the sweep's
#: endpoint. Keys are never forwarded: set OPENAI_API_KEY where `ray start` runs.
_ENDPOINT_VARS = ("OPENAI_BASE_URL",)


def _forwarded_env(shared_disk: bool = True) -> dict[str, str]:
    """gcdbench's own settings, so workers read the same data and caches as the driver.
    Ray workers do not start in the driver's folder: relative paths are made absolute.
    Without a shared disk the driver's paths mean nothing on other nodes: each node keeps
    its own (from the environment `ray start` ran in)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("GCDBENCH_", "HF_"))}
    env.update({k: os.environ[k] for k in _ENDPOINT_VARS if k in os.environ})
    for key in _PATH_VARS:
        if key not in env:
            continue
        if shared_disk:
            env[key] = os.path.abspath(env[key])
        else:
            del env[key]
    return env
