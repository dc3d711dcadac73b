"""Keeping a feedback ledger: select answers, prune them, export and import them as JSON Lines,
merge other ledgers in.

A selection filters by model, query kind, template, age and status; a value that no answer in
the ledger has is refused (a typo would otherwise match nothing, silently). Every write is one
transaction and keeps the ledger's rule: the first answer stored for a key wins, so importing
or merging never replaces an answer a run may already have used. Everything a file holds is
checked before anything is written. docs/ledger.md describes the file and these commands.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gcdbench.api.spec import canonical_json
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.ledger import COLUMNS, Ledger
from gcdbench.llm.models import PACKAGED_GGUFS

#: ``advance(n)``: n more rows done (progress only).
Advance = Callable[[int], None]
_SQLITE_MAGIC = b"SQLite format 3\x00"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_KEY = re.compile(r"[0-9a-f]{64}")
# The provider drops identity fields named like these before anything is keyed or stored.
_SECRET_WORDS = ("key", "token", "secret", "password")
_CHUNK = 1000  # rows per fetch when streaming a ledger


# -- selecting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which answers: every field that is set must match (None: any)."""

    model: str | None = None  # "backend:model" as `ledger stats` shows it, or the model alone
    kind: str | None = None
    template: str | None = None  # a template id, e.g. select-category/glean-v2
    older_than: str | None = None  # a duration: 90s, 45m, 12h, 30d, 2w
    status: str | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def describe(self) -> str:
        set_ = [f"{f.name}={getattr(self, f.name)}" for f in fields(self)]
        return ", ".join(s for s in set_ if not s.endswith("=None")) or "every answer"


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``45m``, ``90s``, ``2w`` in seconds; anything else fails."""
    match = _DURATION.fullmatch(text.strip().lower())
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)] if match else 0.0
    if not match or seconds <= 0:
        raise GcdbenchError(
            f"--older-than takes a positive duration such as 30d, 12h, 45m, 90s or 2w; "
            f"got {text!r}."
        )
    return seconds


def model_name(identity: Mapping[str, Any]) -> str:
    """How `ledger stats` names the model of an identity: ``backend:model``."""
    return f"{identity.get('backend', '?')}:{identity.get('model', '?')}"


def where(ledger: Ledger, selection: Selection, now: float | None = None) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) for ``selection``, after checking each value
    against what the ledger holds."""
    db = ledger.connection
    clauses: list[str] = []
    params: list[Any] = []
    if selection.model is not None:
        identities = _identities_of_model(db, selection.model)
        clauses.append(f"identity IN ({','.join('?' * len(identities))})")
        params.extend(identities)
    for flag, column, value in (
        ("--kind", "kind", selection.kind),
        ("--template", "template_id", selection.template),
        ("--status", "status", selection.status),
    ):
        if value is not None:
            _check_value(db, flag, column, value)
            clauses.append(f"{column} = ?")
            params.append(value)
    if selection.older_than is not None:
        seconds = parse_duration(selection.older_than)
        clauses.append("created_at < ?")
        params.append((time.time() if now is None else now) - seconds)
    return (" AND ".join(clauses) or "1"), params


def _check_value(db: sqlite3.Connection, flag: str, column: str, value: str) -> None:
    _require_text(flag, value)
    held = [r[0] for r in db.execute(f"SELECT DISTINCT {column} FROM answers ORDER BY 1")]
    if value not in held:
        raise GcdbenchError(
            f"{flag} {value!r}: no answer in the ledger has it; it holds "
            f"{_listing(held)}. Pass one of those (`gcdbench llm ledger stats` lists them)."
        )


def _identities_of_model(db: sqlite3.Connection, model: str) -> list[str]:
    _require_text("--model", model)
    found: list[str] = []
    names: set[str] = set()
    for (identity,) in db.execute("SELECT DISTINCT identity FROM answers"):
        parsed = json.loads(identity)
        names.add(model_name(parsed))
        if model in _names_of(parsed):
            found.append(identity)
    if not found:
        raise GcdbenchError(
            f"--model {model!r}: no answer in the ledger is from it; it holds "
            f"{_listing(sorted(names))}. Pass one as `ledger stats` shows it (backend:model), "
            "the model alone or a packaged model's alias (llamacpp:smollm2-135m)."
        )
    return found


def _names_of(identity: Mapping[str, Any]) -> set[str]:
    """What ``--model`` may say for an identity: ``backend:model``, the model alone, and for a
    packaged GGUF the alias ``--llm`` takes (``llamacpp:smollm2-135m``)."""
    backend, model = str(identity.get("backend", "?")), str(identity.get("model", "?"))
    names = {f"{backend}:{model}", model}
    for alias, packaged in PACKAGED_GGUFS.items():
        if identity.get("sha256") == packaged.sha256:
            names |= {alias, f"{backend}:{alias}"}
    return names


def _require_text(flag: str, value: str) -> None:
    if not value.strip():
        raise GcdbenchError(f"{flag} is empty; pass a value or leave {flag} out.")


def _listing(values: Sequence[str]) -> str:
    if not values:
        return "no answers at all"
    return _first(values, 12)


def _first(values: Sequence[str], n: int) -> str:
    shown = ", ".join(values[:n])
    return shown + (f" and {len(values) - n} more" if len(values) > n else "")


def counts(
    ledger: Ledger, selection: Selection, now: float | None = None
) -> Counter[tuple[str, str]]:
    """How many selected answers there are per (kind, model)."""
    condition, params = where(ledger, selection, now)
    out: Counter[tuple[str, str]] = Counter()
    query = f"SELECT kind, identity, COUNT(*) FROM answers WHERE {condition} GROUP BY 1, 2"
    for kind, identity, n in ledger.connection.execute(query, params):
        out[(kind, model_name(json.loads(identity)))] += n
    return out


# -- pruning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pruned:
    per_kind_model: Counter[tuple[str, str]]
    deleted: int  # 0 on a dry run
    bytes_before: int
    bytes_after: int
    vacuum_error: str | None = None  # VACUUM could not run (another process reading)

    @property
    def selected(self) -> int:
        return sum(self.per_kind_model.values())


def prune(ledger: Ledger, selection: Selection, *, dry_run: bool = False) -> Pruned:
    """Delete the selected answers in one transaction, then VACUUM so the file shrinks; on a
    dry run only count them. At least one filter is required: emptying a whole ledger is
    deleting its file, which needs no command."""
    if selection.empty:
        raise GcdbenchError(
            "prune needs at least one filter (--model, --kind, --template, --older-than, "
            "--status); to drop every answer, delete the ledger file itself."
        )
    now = time.time()  # one instant, so --older-than counts and deletes the same rows
    selected = counts(ledger, selection, now)
    before = _size(ledger.path)
    if dry_run or not selected:
        return Pruned(selected, 0, before, before)
    condition, params = where(ledger, selection, now)
    with ledger.transaction() as db:
        deleted = db.execute(f"DELETE FROM answers WHERE {condition}", params).rowcount
    try:
        ledger.connection.execute("VACUUM")
        # In WAL mode VACUUM writes to the log; the checkpoint gives the space back.
        ledger.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.OperationalError as exc:  # the deletion stands; the space waits
        return Pruned(selected, deleted, before, _size(ledger.path), str(exc))
    return Pruned(selected, deleted, before, _size(ledger.path))


def _size(path: Path) -> int:
    """The ledger's bytes on disk, its write-ahead log included."""
    total = 0
    for suffix in ("", "-wal"):
        part = Path(f"{path}{suffix}")
        total += part.stat().st_size if part.is_file() else 0
    return total


# -- export ---------------------------------------------------------------------------------


def export(ledger: Ledger, selection: Selection, out: Path, advance: Advance | None = None) -> int:
    """Write the selected rows to ``out`` as JSON Lines, one row per line with every column
    as stored (identity, value and log-probabilities stay the JSON strings they are in the
    ledger). The file appears whole or not at all. Returns the number of rows."""
    condition, params = where(ledger, selection)
    query = f"SELECT {','.join(COLUMNS)} FROM answers WHERE {condition} ORDER BY created_at, key"
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    written = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("w", encoding="utf-8") as handle:
            cursor = ledger.connection.execute(query, params)
            while chunk := cursor.fetchmany(_CHUNK):
                for row in chunk:
                    line = json.dumps(dict(zip(COLUMNS, row, strict=True)), ensure_ascii=False)
                    handle.write(line + "\n")
                written += len(chunk)
                if advance is not None:
                    advance(len(chunk))
        partial.replace(out)
    except OSError as exc:
        raise GcdbenchError(f"cannot write {out} ({exc.strerror}); pass a writable path.") from None
    finally:
        partial.unlink(missing_ok=True)
    return written


# -- import ---------------------------------------------------------------------------------


@dataclass
class ImportFile:
    """A JSON Lines file, checked: its valid rows and why each other line is not one."""

    path: Path
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    invalid: list[tuple[int, str]] = field(default_factory=list)  # (line number, why)


@dataclass(frozen=True)
class Added:
    """What an import or a merge did: rows new to the ledger, rows whose key it already
    held (its answer kept), and lines that were not rows (imports only)."""

    source: Path
    added: int
    already_present: int
    invalid: int = 0


def read_export(path: Path) -> ImportFile:
    """Read and check every line of an export before anything is written. A file that is
    not JSON Lines of objects, or holds no valid row at all, stops with one line; an object
    that is not a valid row is counted and left out."""
    checked = ImportFile(path)
    for number, text in _lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GcdbenchError(
                f"{path} line {number} is not JSON ({exc.msg}); import takes the JSON Lines "
                "file `gcdbench llm ledger export` writes."
            ) from None
        if not isinstance(obj, dict):
            raise GcdbenchError(
                f"{path} line {number} is not a JSON object; import takes the JSON Lines file "
                "`gcdbench llm ledger export` writes."
            )
        problem = row_problem(obj)
        if problem is None:
            checked.rows.append(tuple(obj[c] for c in COLUMNS))
        else:
            checked.invalid.append((number, problem))
    if checked.invalid and not checked.rows:
        number, problem = checked.invalid[0]
        raise GcdbenchError(
            f"{path} holds no ledger row (line {number}: {problem}); import takes the JSON "
            "Lines file `gcdbench llm ledger export` writes."
        )
    return checked


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open("rb") as handle:
            if handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                raise GcdbenchError(
                    f"{path} is an SQLite file, not a JSON Lines export; to add another "
                    f"ledger's answers use `gcdbench llm ledger merge {path}`."
                )
            handle.seek(0)
            for number, raw in enumerate(handle, start=1):
                yield number, raw.decode("utf-8")
    except UnicodeDecodeError:
        raise GcdbenchError(
            f"{path} is not UTF-8 text; import takes the JSON Lines file "
            "`gcdbench llm ledger export` writes."
        ) from None
    except OSError as exc:
        raise GcdbenchError(
            f"cannot read {path} ({exc.strerror}); pass an existing file."
        ) from None


def row_problem(obj: Mapping[str, Any]) -> str | None:
    """Why ``obj`` is not a ledger row as export writes it; None if it is one."""
    missing = [c for c in COLUMNS if c not in obj]
    extra = sorted(set(obj) - set(COLUMNS))
    if missing or extra:
        return f"missing {_first(missing, 3)}" if missing else f"unknown {_first(extra, 3)}"
    for check in (_key_problem, _text_problem, _number_problem, _json_problem, _identity_problem):
        problem = check(obj)
        if problem is not None:
            return problem
    return None


def _key_problem(obj: Mapping[str, Any]) -> str | None:
    key = obj["key"]
    return None if isinstance(key, str) and _KEY.fullmatch(key) else "key is not a sha256 hex"


def _text_problem(obj: Mapping[str, Any]) -> str | None:
    for column in ("kind", "template_id", "template_sha256", "status"):
        if not isinstance(obj[column], str) or not obj[column]:
            return f"{column} is not a non-empty string"
    for column in ("raw_text", "run_hash"):
        if not isinstance(obj[column], str):
            return f"{column} is not a string"
    return None


def _number_problem(obj: Mapping[str, Any]) -> str | None:
    for column in ("prompt_tokens", "completion_tokens"):
        value = obj[column]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return f"{column} is not a count"
    for column, optional in (
        ("latency_s", False),
        ("created_at", False),
        ("confidence", True),
        ("cost_usd", True),
    ):
        value = obj[column]
        if value is None and optional:
            continue
        if not _is_number(value) or value < 0:
            return f"{column} is not a non-negative number"
    return None


def _is_number(value: Any) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok and math.isfinite(value)


def _json_problem(obj: Mapping[str, Any]) -> str | None:
    for column in ("value_json", "option_logprobs_json"):
        text = obj[column]
        if text is None:
            continue
        try:
            parsed = json.loads(text) if isinstance(text, str) else None
        except json.JSONDecodeError:
            parsed = None
        if parsed is None or (column == "option_logprobs_json" and not isinstance(parsed, dict)):
            return f"{column} is not JSON text as the ledger stores it"
    return None


def _identity_problem(obj: Mapping[str, Any]) -> str | None:
    text = obj["identity"]
    try:
        identity = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        identity = None
    if not isinstance(identity, dict) or canonical_json(identity) != text:
        return "identity is not the canonical JSON object the ledger stores"
    if any(word in str(k).lower() for k in identity for word in _SECRET_WORDS):
        return "identity has a secret-like field, which no gcdbench ledger stores"
    return None


def import_rows(ledger: Ledger, checked: ImportFile) -> Added:
    """Add the checked rows in one transaction; a key the ledger holds keeps its answer (and
    of two rows of the file with one key, the first wins)."""
    added = ledger.insert_rows(checked.rows)
    return Added(checked.path, added, len(checked.rows) - added, len(checked.invalid))


# -- merge ----------------------------------------------------------------------------------


def check_ledger_file(path: Path) -> None:
    """Refuse, with one line, a path that is not a gcdbench ledger (absent, not SQLite, or
    without the answers table and its columns)."""
    if not path.is_file():
        raise GcdbenchError(f"{path} does not exist; pass the path of a gcdbench ledger.")
    not_ledger = f"{path} is not a gcdbench ledger"
    try:
        with path.open("rb") as handle:
            if handle.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                raise GcdbenchError(f"{not_ledger} (not an SQLite file).")
        with closing(_read_only(path)) as db:
            columns = {row[1] for row in db.execute("PRAGMA table_info(answers)")}
    except (OSError, sqlite3.Error) as exc:
        raise GcdbenchError(f"{not_ledger} or cannot be read ({exc}).") from None
    if columns != set(COLUMNS):
        what = "no answers table" if not columns else "an answers table of other columns"
        raise GcdbenchError(f"{not_ledger} (an SQLite file with {what}).")


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=60)


def check_sources(target: Path, others: Sequence[Path]) -> None:
    """Every ledger to merge in is one, and none is the target itself."""
    if not others:
        raise GcdbenchError("merge needs at least one ledger to add; pass OTHER.sqlite.")
    for other in others:
        check_ledger_file(other)
        if other.resolve() == target.resolve():
            raise GcdbenchError(f"{other} is the --ledger itself; pass the other ledgers.")


def merge(ledger: Ledger, others: Sequence[Path], advance: Advance | None = None) -> list[Added]:
    """Add every answer of ``others`` (checked first, all of them) to ``ledger`` in one
    transaction; keys it already holds keep their answers."""
    check_sources(ledger.path, others)
    reports = []
    query = f"SELECT {','.join(COLUMNS)} FROM answers"
    try:
        with ledger.transaction():
            for other in others:
                added = present = 0
                with closing(_read_only(other)) as source:
                    cursor = source.execute(query)
                    while chunk := cursor.fetchmany(_CHUNK):
                        new = _insert(ledger, chunk)
                        added, present = added + new, present + len(chunk) - new
                        if advance is not None:
                            advance(len(chunk))
                reports.append(Added(other, added, present))
    except sqlite3.Error as exc:
        raise GcdbenchError(f"merge stopped, nothing was added ({exc}).") from None
    return reports


def _insert(ledger: Ledger, rows: Sequence[Sequence[Any]]) -> int:
    """Rows into an open transaction (see :meth:`Ledger.transaction`); how many were new."""
    db = ledger.connection
    before = db.total_changes
    marks = ",".join("?" * len(COLUMNS))
    db.executemany(f"INSERT OR IGNORE INTO answers ({','.join(COLUMNS)}) VALUES ({marks})", rows)
    return db.total_changes - before


def count_rows(path: Path) -> int:
    """Answers in a (checked) ledger file, for progress."""
    with closing(_read_only(path)) as db:
        return int(db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])
