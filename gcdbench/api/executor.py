"""Executors run a list of RunSpecs: in this process, in a pool, or on a cluster."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gcdbench.api.spec import RunSpec
from gcdbench.errors import GcdbenchError


@dataclass(frozen=True)
class Outcome:
    """What became of one spec: ``status`` is "done", "skipped" or "failed"."""

    spec: RunSpec
    status: str
    record_path: str | None = None
    error: str | None = None


class Executor(ABC):
    """Runs ``job(spec)`` for every spec. ``job`` is a picklable top-level callable that
    returns an :class:`Outcome` and never raises for a failed run. ``on_outcome`` is called
    in the calling process as each run finishes, in completion order."""

    name: str
    description: str = ""

    def __init__(
        self,
        workers: int | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.workers = check_workers(workers)
        self.on_outcome = on_outcome

    def report(self, outcome: Outcome) -> Outcome:
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    @abstractmethod
    def map(self, job: Callable[[RunSpec], Outcome], specs: Sequence[RunSpec]) -> list[Outcome]: ...


def check_workers(workers: int | None) -> int | None:
    """None (the executor's default) or a count of at least 1: a pool never gets 0 or -1."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise GcdbenchError(
            f"--workers must be an integer of at least 1, got {workers!r}; pass e.g. "
            "--workers 2, or leave it out for the executor's default."
        )
    return workers
