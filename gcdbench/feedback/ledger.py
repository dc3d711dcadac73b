"""The feedback ledger: every answer a model gave, in SQLite, so no question is paid twice.

A row is keyed by the sha256 of the canonical JSON of everything that shapes the answer —
the backend's identity (provider, model id, weights hash or revision; never an API key), the
template id and hash, the rendered messages, the decoding parameters and the sample seed. A
re-run, a resumed run or another ablation asking the same question reads the stored answer.

WAL mode and a busy timeout let several processes share one file; ``INSERT OR IGNORE`` keeps
the first answer when two processes store the same key. Failed requests are not stored (a
later run asks again); unparseable replies are (the model's answer is the answer). The provider
stores each answer in its own short transaction as it arrives (:meth:`Ledger.put`), so a run
killed mid-batch keeps every answer it was sent. docs/ledger.md has the whole story.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gcdbench import paths
from gcdbench.api.spec import canonical_json, sha256_hex
from gcdbench.errors import GcdbenchError
from gcdbench.llm.api import ChatRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    identity TEXT NOT NULL,
    template_id TEXT NOT NULL,
    template_sha256 TEXT NOT NULL,
    raw_text TEXT NOT NULL,
    value_json TEXT,
    status TEXT NOT NULL,
    confidence REAL,
    option_logprobs_json TEXT,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    cost_usd REAL,
    created_at REAL NOT NULL,
    run_hash TEXT NOT NULL
)
"""
#: The columns of ``answers``, in table order (export files and merges carry every one).
COLUMNS = (
    "key",
    "kind",
    "identity",
    "template_id",
    "template_sha256",
    "raw_text",
    "value_json",
    "status",
    "confidence",
    "option_logprobs_json",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
    "cost_usd",
    "created_at",
    "run_hash",
)
_INSERT = f"INSERT OR IGNORE INTO answers ({','.join(COLUMNS)}) VALUES ({','.join('?' * 16)})"


def default_path(cli_value: str | Path | None = None) -> Path:
    """``--ledger``, else ``GCDBENCH_LEDGER``, else ``<cache>/ledger.sqlite``."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get("GCDBENCH_LEDGER")
    return Path(env).expanduser() if env else paths.cache_dir() / "ledger.sqlite"


def ledger_key(
    identity: Mapping[str, Any], template_id: str, template_sha256: str, request: ChatRequest
) -> str:
    return sha256_hex(
        canonical_json(
            {
                "identity": dict(identity),
                "template": {"id": template_id, "sha256": template_sha256},
                "messages": [[m.role, m.content] for m in request.messages],
                "decoding": request.decoding(),  # includes the sample seed
            }
        )
    )


@dataclass(frozen=True)
class Entry:
    key: str
    kind: str
    identity: Mapping[str, Any]
    template_id: str
    template_sha256: str
    raw_text: str
    value: Any
    status: str
    confidence: float | None
    option_logprobs: Mapping[str, float] | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cost_usd: float | None
    run_hash: str = ""
    created_at: float = 0.0


class Ledger:
    """One SQLite file; safe to open from several processes at once, and to use from the
    thread a backend reports its answers on (one lock serialises this object's use)."""

    def __init__(self, path: Path, *, timeout_s: float = 60.0) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise GcdbenchError(
                f"cannot open the feedback ledger {self.path} ({exc}); pass a writable file "
                "with --ledger or GCDBENCH_LEDGER."
            ) from None

    @property
    def journal_mode(self) -> str:
        with self._lock:
            return str(self._db.execute("PRAGMA journal_mode").fetchone()[0])

    @property
    def connection(self) -> sqlite3.Connection:
        """The open connection (autocommit; wrap writes in :meth:`transaction`)."""
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``) so a concurrent writer
        waits on the busy timeout instead of failing halfway; rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        out: dict[str, Entry] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # SQLite caps bound parameters per query
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                cursor = self._db.execute(f"SELECT * FROM answers WHERE key IN ({marks})", chunk)
                cols = [d[0] for d in cursor.description]
                for row in cursor.fetchall():
                    entry = _entry(dict(zip(cols, row, strict=True)))
                    out[entry.key] = entry
        return out

    def put(self, entry: Entry) -> bool:
        """Store one answer in its own transaction, committed on return (first writer wins);
        True if it was new. What the provider calls as each answer arrives."""
        return self.put_many([entry]) == 1

    def put_many(self, entries: Iterable[Entry]) -> int:
        """Store entries (first writer wins) in one transaction; returns how many were new."""
        now = time.time()
        return self.insert_rows(_row(e, now) for e in entries)

    def insert_rows(self, rows: Iterable[Sequence[Any]]) -> int:
        """Rows in :data:`COLUMNS` order, as stored, in one transaction (first writer wins);
        returns how many were new."""
        batch = list(rows)
        if not batch:
            return 0
        with self.transaction() as db:
            before = db.total_changes
            db.executemany(_INSERT, batch)
            return db.total_changes - before

    def stats(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT kind, identity, status, COUNT(*), SUM(prompt_tokens), "
                "SUM(completion_tokens), SUM(cost_usd) FROM answers "
                "GROUP BY kind, identity, status ORDER BY kind, identity, status"
            ).fetchall()
        keys = ("kind", "identity", "status", "answers", "prompt_tokens", "completion_tokens")
        return [{**dict(zip(keys, r[:6], strict=True)), "cost_usd": r[6]} for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _row(e: Entry, now: float) -> tuple[Any, ...]:
    """An entry as a row in :data:`COLUMNS` order, stamped ``now``."""
    return (
        e.key,
        e.kind,
        canonical_json(dict(e.identity)),
        e.template_id,
        e.template_sha256,
        e.raw_text,
        json.dumps(e.value) if e.value is not None else None,
        e.status,
        e.confidence,
        json.dumps(dict(e.option_logprobs)) if e.option_logprobs else None,
        e.prompt_tokens,
        e.completion_tokens,
        e.latency_s,
        e.cost_usd,
        now,
        e.run_hash,
    )


def _entry(row: Mapping[str, Any]) -> Entry:
    return Entry(
        key=row["key"],
        kind=row["kind"],
        identity=json.loads(row["identity"]),
        template_id=row["template_id"],
        template_sha256=row["template_sha256"],
        raw_text=row["raw_text"],
        value=json.loads(row["value_json"]) if row["value_json"] is not None else None,
        status=row["status"],
        confidence=row["confidence"],
        option_logprobs=json.loads(row["option_logprobs_json"])
        if row["option_logprobs_json"]
        else None,
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        latency_s=row["latency_s"],
        cost_usd=row["cost_usd"],
        run_hash=row["run_hash"],
        created_at=row["created_at"],
    )
