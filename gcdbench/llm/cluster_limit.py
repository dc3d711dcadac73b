"""One limit on LLM requests for every process of a sweep: at most N requests in flight and
at most R started per second, however many workers ask one endpoint at once.

Set it in the environment of the command that starts the sweep (docs/cluster.md)::

    GCDBENCH_LLM_CLUSTER_CONCURRENCY=16   # requests in flight, all workers together
    GCDBENCH_LLM_CLUSTER_RPS=5            # requests started per second, all workers together

Environment variables, not ``--llm-option``: a limit changes no answer, and every
``--llm-option`` is part of the run's spec (so of its run id), while the ledger key never sees
either (it holds the backend's identity and the request, gcdbench/feedback/ledger.py).

Under ``--executor ray`` the driver starts one :class:`LimitActor` (a job-scoped, named Ray
actor that dies with the driver) and hands it to every task, which installs it
(:func:`installed`) for the run; the OpenAI-compatible backend holds a :func:`slot` around
each HTTP attempt, slots going in the order they were asked for. Anywhere else
(``--executor local`` or ``processes``) each process keeps the limit for itself and says so
in one warning line. A lease a killed worker never gives back expires after the request's
timeout, so a dead worker cannot starve the others.
"""

from __future__ import annotations

import itertools
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

# asyncio inside the functions: every command loads the OpenAI backend's module, which
# imports this one, and importing asyncio takes tens of milliseconds.
from gcdbench.api.values import parse_value
from gcdbench.errors import GcdbenchError

CONCURRENCY_ENV = "GCDBENCH_LLM_CLUSTER_CONCURRENCY"
RPS_ENV = "GCDBENCH_LLM_CLUSTER_RPS"
#: A lease outlives its request's timeout by this much before it is taken back.
LEASE_MARGIN_S = 30.0
#: How often a waiter outside Ray looks again (within Ray the actor wakes it on release).
POLL_S = 0.02


@dataclass(frozen=True)
class ClusterLimit:
    concurrency: int | None = None
    rps: float | None = None

    @property
    def active(self) -> bool:
        return self.concurrency is not None or self.rps is not None


def limit_from_env(environ: Mapping[str, str] | None = None) -> ClusterLimit:
    """The limit the environment sets (inactive when neither variable is set)."""
    env = os.environ if environ is None else environ
    concurrency = _read(env, CONCURRENCY_ENV, int, "16")
    rps = _read(env, RPS_ENV, float, "5")
    return ClusterLimit(
        int(concurrency) if concurrency is not None else None,
        float(rps) if rps is not None else None,
    )


def _read(env: Mapping[str, str], name: str, kind: type, example: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = parse_value(raw, kind)
    except ValueError:
        value = None
    if value is None or not value > 0 or value == float("inf"):
        noun = "an integer" if kind is int else "a number"
        raise GcdbenchError(
            f"{name}={raw!r} must be {noun} > 0; set e.g. {name}={example}, or unset it for "
            "no cluster-wide limit."
        )
    return float(value)


# -- the book: who holds a slot, when the next may start ------------------------------------


class LimitBook:
    """The limit's state, without waiting: thread-safe, the same in the actor and in a
    process. ``take`` grants a lease (and the time its request may start, spaced 1/rps
    apart) or says how long to wait before asking again."""

    def __init__(self, limit: ClusterLimit) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._leases: dict[int, float] = {}  # lease -> when it expires (monotonic)
        self._ids = itertools.count(1)
        self._next_start = 0.0

    def take(self, now: float, hold_s: float) -> tuple[int | None, float]:
        """``(lease, start_at)``, or ``(None, seconds to wait)`` while every slot is held."""
        with self._lock:
            self._expire(now)
            cap = self.limit.concurrency
            if cap is not None and len(self._leases) >= cap:
                return None, max(min(self._leases.values()) - now, POLL_S)
            start = now
            if self.limit.rps is not None:
                start = max(now, self._next_start)
                self._next_start = start + 1.0 / self.limit.rps
            lease = next(self._ids)
            self._leases[lease] = start + hold_s
            return lease, start

    def give_back(self, lease: int) -> None:
        with self._lock:
            self._leases.pop(lease, None)

    def _expire(self, now: float) -> None:
        for lease in [k for k, until in self._leases.items() if until <= now]:
            del self._leases[lease]


class LimitActor:
    """The cluster's book, in one Ray actor (async: a waiting ``acquire`` blocks nobody).
    Its clock alone spaces requests, so nodes' clocks need not agree."""

    def __init__(self, concurrency: int | None, rps: float | None) -> None:
        import asyncio

        self._book = LimitBook(ClusterLimit(concurrency, rps))
        self._changed = asyncio.Condition()

    async def acquire(self, hold_s: float) -> int:
        import asyncio

        async with self._changed:
            while True:
                lease, at = self._book.take(time.monotonic(), hold_s)
                if lease is not None:
                    break
                with suppress(TimeoutError):  # then a lease may have expired: look again
                    await asyncio.wait_for(self._changed.wait(), timeout=at)
        await _sleep_until(at)
        return lease

    async def release(self, lease: int) -> None:
        async with self._changed:
            self._book.give_back(lease)
            self._changed.notify_all()


def start_actor(limit: ClusterLimit, name: str) -> Any:
    """The driver's limiter: named (``ray list actors`` shows it), owned by the driver's
    job so it ends with it, on no CPU of its own."""
    import ray

    actor_class: Any = ray.remote(LimitActor)
    options = {"name": name, "num_cpus": 0, "max_concurrency": 10_000}
    return actor_class.options(**options).remote(limit.concurrency, limit.rps)


# -- what a worker process uses ---------------------------------------------------------------

_installed: Any = None  # the driver's limiter, while a Ray task runs
_local: LimitBook | None = None
_local_guard = threading.Lock()


@contextmanager
def installed(actor: Any) -> Iterator[None]:
    """Route this process's requests through the driver's ``actor`` (None: there is no
    cluster limit) while one Ray task runs; a Ray worker runs one task at a time."""
    global _installed
    previous, _installed = _installed, actor
    try:
        yield
    finally:
        _installed = previous


@asynccontextmanager
async def slot(timeout_s: float) -> AsyncIterator[None]:
    """Hold one of the limit's slots for one request attempt of at most ``timeout_s``."""
    hold_s = timeout_s + LEASE_MARGIN_S
    actor = _installed
    if actor is not None:
        lease = await actor.acquire.remote(hold_s)
        try:
            yield
        finally:
            await actor.release.remote(lease)
        return
    book = _local_book()
    if book is None:
        yield
        return
    lease = await _take_locally(book, hold_s)
    try:
        yield
    finally:
        book.give_back(lease)


async def _take_locally(book: LimitBook, hold_s: float) -> int:
    import asyncio

    while True:
        lease, at = book.take(time.monotonic(), hold_s)
        if lease is not None:
            await _sleep_until(at)
            return lease
        await asyncio.sleep(min(at, POLL_S * 5))


async def _sleep_until(at: float) -> None:
    import asyncio

    delay = at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


def _local_book() -> LimitBook | None:
    """Outside a Ray task the limit holds per process (one warning line says so)."""
    global _local
    limit = limit_from_env()
    if not limit.active:
        return None
    with _local_guard:
        if _local is None or _local.limit != limit:
            if _local is None:
                sys.stderr.write(
                    f"warning: {CONCURRENCY_ENV}/{RPS_ENV} limit LLM requests across a Ray "
                    "cluster only under --executor ray; here each process keeps the limit "
                    "for itself.\n"
                )
            _local = LimitBook(limit)
        return _local
