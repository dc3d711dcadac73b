"""The SQLite ledger on its own: WAL, first writer wins, several processes at once."""

from __future__ import annotations

import multiprocessing
import sqlite3

from gcdbench.feedback.ledger import Entry, Ledger, default_path, ledger_key
from gcdbench.llm.api import ChatMessage, ChatRequest

IDENTITY = {"backend": "test", "model": "m", "sha256": "abc"}


def _entry(key: str, text: str = "Choice 1", run: str = "") -> Entry:
    return Entry(
        key,
        "select-similar-instance",
        IDENTITY,
        "t/v1",
        "h",
        text,
        0,
        "ok",
        0.9,
        None,
        10,
        2,
        0.1,
        0.0,
        run,
    )


def _request(content: str, **decoding) -> ChatRequest:
    return ChatRequest((ChatMessage("user", content),), **decoding)


def test_key_covers_identity_template_messages_decoding_and_seed():
    base = ledger_key(IDENTITY, "t/v1", "h", _request("q"))
    assert base == ledger_key(dict(IDENTITY), "t/v1", "h", _request("q"))
    changed = [
        ledger_key({**IDENTITY, "sha256": "other"}, "t/v1", "h", _request("q")),
        ledger_key(IDENTITY, "t/v2", "h", _request("q")),
        ledger_key(IDENTITY, "t/v1", "h2", _request("q")),
        ledger_key(IDENTITY, "t/v1", "h", _request("q2")),
        ledger_key(IDENTITY, "t/v1", "h", _request("q", temperature=0.7)),
        ledger_key(IDENTITY, "t/v1", "h", _request("q", seed=1)),
        ledger_key(IDENTITY, "t/v1", "h", _request("q", choices=("Choice 1",))),
    ]
    assert len({base, *changed}) == 8


def test_wal_and_first_writer_wins(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    assert ledger.journal_mode == "wal"
    assert ledger.put_many([_entry("k1", "first")]) == 1
    assert ledger.put_many([_entry("k1", "second"), _entry("k2")]) == 1
    got = ledger.get_many(["k1", "k2", "missing"])
    assert set(got) == {"k1", "k2"} and got["k1"].raw_text == "first"
    assert got["k1"].identity == IDENTITY and got["k1"].value == 0


def test_default_path_follows_flag_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GCDBENCH_LEDGER", str(tmp_path / "env.sqlite"))
    assert default_path() == tmp_path / "env.sqlite"
    assert default_path(tmp_path / "flag.sqlite") == tmp_path / "flag.sqlite"
    monkeypatch.delenv("GCDBENCH_LEDGER")
    assert default_path().name == "ledger.sqlite"


def _writer(path: str, worker: int, n: int) -> None:
    ledger = Ledger(path)
    for start in range(0, n, 10):
        # Half the keys are shared by every worker, half are the worker's own.
        keys = [f"shared-{i}" if i % 2 else f"w{worker}-{i}" for i in range(start, start + 10)]
        ledger.put_many([_entry(k, run=f"w{worker}") for k in keys])
    ledger.close()


def test_concurrent_processes_neither_duplicate_nor_lose_rows(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    Ledger(path).close()
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    db = sqlite3.connect(path)
    keys = [row[0] for row in db.execute("SELECT key FROM answers")]
    assert len(keys) == len(set(keys)) == 4 * 100 + 100  # own keys + shared keys once
