"""Built-in executors: ``local`` (sequential) and ``processes`` (a worker pool)."""

from __future__ import annotations

from gcdbench import hookimpl
from gcdbench.runner.executors import LocalExecutor, ProcessExecutor


@hookimpl
def register_executors(register):
    register(LocalExecutor)
    register(ProcessExecutor)
