"""Built-in executors: ``local`` (sequential), ``processes`` (a worker pool) and ``ray``
(Ray tasks, locally or on a cluster; Ray itself is the optional extra ``gcdbench[ray]``)."""

from __future__ import annotations

from gcdbench.api import hookimpl
from gcdbench.runner.executors import LocalExecutor, ProcessExecutor
from gcdbench.runner.ray_executor import RayExecutor


@hookimpl
def register_executors(register):
    register(LocalExecutor)
    register(ProcessExecutor)
    register(RayExecutor)
