"""Keeping the feedback ledger: `gcdbench llm ledger prune | export | import | merge`, and the
old `gcdbench llm ledger [stats|path]` forms. Real SQLite files, real JSON Lines files, the
real command line; one test asks a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gcdbench.api.feedback import FeedbackEnv, Query
from gcdbench.api.spec import sha256_hex
from gcdbench.cli import cli
from gcdbench.feedback.ledger import COLUMNS, Entry, Ledger
from gcdbench.feedback.resolve import open_feedback
from gcdbench.llm.models import SMOLLM2_135M

QWEN = {"backend": "llamacpp", "model": "Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF", "sha256": "q"}
SMOL = {"backend": "llamacpp", "model": SMOLLM2_135M.hub_id, "sha256": SMOLLM2_135M.sha256}
DAY = 86400.0


def entry(n: int, kind: str, identity: dict[str, str], text: str = "", status: str = "ok"):
    return Entry(
        key=sha256_hex(f"{kind}-{identity['model']}-{n}"),
        kind=kind,
        identity=identity,
        template_id=f"{kind}/v1",
        template_sha256="t" * 64,
        raw_text=text or f"Choice {n % 3 + 1}",
        value=n % 3,
        status=status,
        confidence=0.5 + n / 100,
        option_logprobs={"A": -0.1, "B": -2.0} if n % 2 else None,
        prompt_tokens=100 + n,
        completion_tokens=3,
        latency_s=0.25,
        cost_usd=None if n % 2 else 0.001,
        run_hash="r",
    )


def filled(path: Path, *, big: bool = False) -> Path:
    """A ledger of 30 answers: 10 instance choices and 10 categories from Qwen (3 of them
    parse failures), 10 instance choices from SmolLM2."""
    text = "x" * 20_000 if big else ""
    ledger = Ledger(path)
    ledger.put_many(entry(n, "select-similar-instance", QWEN, text) for n in range(10))
    ledger.put_many(
        entry(n, "select-category", QWEN, text, "parse-failure" if n < 3 else "ok")
        for n in range(10)
    )
    ledger.put_many(entry(n, "select-similar-instance", SMOL, text) for n in range(10))
    ledger.close()
    return path


def table(path: Path) -> dict[str, tuple[object, ...]]:
    with closing(sqlite3.connect(path)) as db:
        return {r[0]: r for r in db.execute(f"SELECT {','.join(COLUMNS)} FROM answers")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gcd(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["llm", "ledger", *map(str, args)])


def flat(result: Result) -> str:
    """The output without rich's wrapping."""
    return " ".join(result.output.split())


def age(path: Path, keys: list[str], days: float) -> None:
    with closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "UPDATE answers SET created_at = created_at - ? WHERE key = ?",
            [(days * DAY, k) for k in keys],
        )


# -- the old forms --------------------------------------------------------------------------


def test_stats_and_path_keep_their_forms(tmp_path, monkeypatch):
    path = filled(tmp_path / "l.sqlite")
    for args in (["--ledger", path], ["stats", "--ledger", path], ["--ledger", path, "stats"]):
        result = gcd(*args)
        assert result.exit_code == 0, result.output
        assert f"30 answers in {path}" in flat(result)
    assert gcd("path", "--ledger", path).output.strip() == str(path)
    monkeypatch.setenv("GCDBENCH_LEDGER", str(tmp_path / "env.sqlite"))
    assert gcd("path").output.strip() == str(tmp_path / "env.sqlite")
    assert "no ledger at" in gcd().output and not (tmp_path / "env.sqlite").exists()
    unknown = gcd("statz", "--ledger", path)
    assert unknown.exit_code == 2 and "statz" in unknown.stderr


# -- prune ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "at least one filter"),
        (["--kind", "select-instance"], "--kind 'select-instance'"),
        (["--model", "gpt-4o"], "--model 'gpt-4o'"),
        (["--model", " "], "--model is empty"),
        (["--status", "fine"], "--status 'fine'"),
        (["--template", "select-category/v9"], "--template"),
        (["--older-than", "30"], "--older-than"),
        (["--older-than", "-2d"], "--older-than"),
        (["--older-than", "0h"], "--older-than"),
    ],
)
def test_prune_refuses_bad_filters_and_writes_nothing(tmp_path, args, says):
    path = filled(tmp_path / "l.sqlite")
    before = digest(path)
    result = gcd("prune", *args, "--ledger", path)
    assert result.exit_code == 2, result.output
    assert says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert digest(path) == before


def test_prune_needs_an_existing_ledger(tmp_path):
    result = gcd("prune", "--kind", "x", "--ledger", tmp_path / "none.sqlite")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "none.sqlite").exists()


def test_dry_run_counts_per_kind_and_model_and_deletes_nothing(tmp_path):
    path = filled(tmp_path / "l.sqlite")
    before = digest(path)
    result = gcd("prune", "--kind", "select-similar-instance", "--dry-run", "--ledger", path)
    assert result.exit_code == 0, result.output
    out = flat(result)
    assert "would delete 20 answers" in out
    assert f"10 select-similar-instance llamacpp:{SMOLLM2_135M.hub_id}" in out
    assert f"10 select-similar-instance llamacpp:{QWEN['model']}" in out
    assert digest(path) == before and len(table(path)) == 30


def test_prune_deletes_what_the_filters_select_and_vacuums(tmp_path):
    path = filled(tmp_path / "l.sqlite", big=True)
    rows = table(path)
    size = path.stat().st_size
    # The SmolLM2 answers, named as --llm names the model.
    result = gcd("prune", "--model", "llamacpp:smollm2-135m", "--ledger", path)
    assert result.exit_code == 0, result.output
    assert "deleted 10 answers" in flat(result)
    left = table(path)
    assert len(left) == 20 and all(
        json.loads(r[2])["model"] != SMOL["model"] for r in left.values()
    )
    assert left == {k: r for k, r in rows.items() if k in left}  # the rest untouched
    assert path.stat().st_size < size * 0.8  # VACUUM gave the space back

    # Both filters must match: Qwen's parse failures of one kind, nothing else.
    result = gcd(
        "prune", "--status", "parse-failure", "--kind", "select-category", "--ledger", path
    )
    assert "deleted 3 answers" in flat(result)
    assert sorted(r[7] for r in table(path).values()).count("parse-failure") == 0


def test_older_than_selects_by_when_an_answer_was_stored(tmp_path):
    path = filled(tmp_path / "l.sqlite")
    old = sorted(table(path))[:7]
    age(path, old, days=40)
    for older_than, selected in (("30d", 7), ("41d", 0), ("12h", 7), ("1w", 7)):
        dry = gcd("prune", "--older-than", older_than, "--dry-run", "--ledger", path)
        assert f"would delete {selected} answers" in flat(dry), (older_than, dry.output)
    result = gcd("prune", "--older-than", "720h", "--ledger", path)
    assert "deleted 7 answers" in flat(result)
    assert not set(old) & set(table(path)) and len(table(path)) == 23


# -- export ---------------------------------------------------------------------------------


def test_export_writes_every_column_as_stored(tmp_path):
    path = filled(tmp_path / "l.sqlite")
    out = tmp_path / "out" / "all.jsonl"
    result = gcd("export", out, "--ledger", path)
    assert result.exit_code == 0 and "exported 30 answers" in flat(result)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert all(list(line) == list(COLUMNS) for line in lines)
    assert {row["key"]: tuple(row.values()) for row in lines} == table(path)
    assert not list(out.parent.glob(".*partial"))

    some = tmp_path / "cat.jsonl"
    result = gcd("export", some, "--kind", "select-category", "--status", "ok", "--ledger", path)
    assert result.exit_code == 0
    kept = [json.loads(line) for line in some.read_text().splitlines()]
    assert len(kept) == 7 and {(r["kind"], r["status"]) for r in kept} == {
        ("select-category", "ok")
    }


def test_export_refuses_bad_filters_without_a_file(tmp_path):
    path = filled(tmp_path / "l.sqlite")
    result = gcd("export", tmp_path / "x.jsonl", "--older-than", "soon", "--ledger", path)
    assert result.exit_code == 2 and "--older-than" in result.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_no_api_key_reaches_the_ledger_or_an_export(scripted_server, tmp_path, monkeypatch):
    pytest.importorskip("openai", reason="the openai SDK is an optional dependency")
    sentinel = "sk-sentinel-" + "7" * 40
    monkeypatch.setenv("OPENAI_API_KEY", sentinel)
    server = scripted_server()
    path = tmp_path / "l.sqlite"
    spec = f"openai:m;base_url={server.base_url}"
    provider = open_feedback(spec, FeedbackEnv(ledger_path=path))
    try:
        assert provider.backend._api_key == sentinel  # type: ignore[attr-defined]  (in use)
        options = ["top up", "new card", "close account"]
        provider.answer(
            [Query("select-similar-instance", {"query": "id=1 card", "options": options})]
        )
    finally:
        provider.close()
    assert sum(server.answered.values()) == 1 and len(table(path)) == 1
    out = tmp_path / "all.jsonl"
    assert gcd("export", out, "--ledger", path).exit_code == 0
    assert json.loads(out.read_text())["identity"] == json.dumps(
        {"backend": "openai", "host": server.base_url.split("/")[2], "model": "m",
         "provider": "openai-compatible"}, separators=(",", ":"), sort_keys=True,
    )  # fmt: skip
    for written in (out, path, *tmp_path.glob("l.sqlite-*")):
        assert sentinel.encode() not in written.read_bytes(), written


# -- import ---------------------------------------------------------------------------------


def test_import_round_trips_and_the_first_answer_wins(tmp_path):
    source = filled(tmp_path / "a.sqlite")
    out = tmp_path / "a.jsonl"
    gcd("export", out, "--ledger", source)
    target = tmp_path / "new" / "b.sqlite"
    result = gcd("import", out, "--ledger", target)
    assert result.exit_code == 0, result.output
    assert "30 added, 0 already present, 0 invalid lines" in flat(result)
    assert table(target) == table(source)  # every column, created_at included

    # A changed answer for a key already held does not replace it, nor does a repeat.
    lines = out.read_text().splitlines()
    changed = json.loads(lines[0]) | {"raw_text": "Choice 3", "value_json": "2"}
    fresh = json.loads(lines[1]) | {"key": "f" * 64}
    extra = tmp_path / "extra.jsonl"
    rows = [changed, fresh, fresh | {"raw_text": "later"}]
    extra.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    result = gcd("import", extra, "--ledger", target)
    assert "1 added, 2 already present, 0 invalid lines" in flat(result)
    got = table(target)
    assert got[changed["key"]] == table(source)[changed["key"]]
    assert got["f" * 64][5] == fresh["raw_text"]


def test_import_counts_invalid_lines_and_skips_them(tmp_path):
    lines = [json.dumps(dict(zip(COLUMNS, row, strict=True)))
             for row in table(filled(tmp_path / "a.sqlite")).values()][:3]  # fmt: skip
    row = json.loads(lines[0])
    bad = [
        {k: v for k, v in row.items() if k != "status"},  # a column missing
        row | {"key": "not-a-hash"},
        row | {"prompt_tokens": -1},
        row
        | {
            "identity": json.dumps(
                {"model": "m", "api_key": "sk-x"}, separators=(",", ":"), sort_keys=True
            )
        },
        row | {"identity": '{"model": "m"}'},  # not the canonical form keys are made from
        row | {"extra": 1},
    ]
    file = tmp_path / "mixed.jsonl"
    file.write_text("\n".join([*lines, *map(json.dumps, bad)]) + "\n")
    result = gcd("import", file, "--ledger", tmp_path / "b.sqlite")
    assert result.exit_code == 0, result.output
    out = flat(result)
    assert "3 added, 0 already present, 6 invalid lines" in out
    assert "line 4: missing status" in out and "line 7: identity has a secret-like field" in out
    assert len(table(tmp_path / "b.sqlite")) == 3


@pytest.mark.parametrize(
    ("after_rows", "content", "says"),
    [
        (True, b'{"key": 1}\n{"key": \n', "line 32 is not JSON"),
        (True, b"[1, 2]\n", "line 31 is not a JSON object"),
        (True, b"\xff\xfe\x00", "not UTF-8"),
        (False, b'{"a": 1}\n', "holds no ledger row"),
        (False, b"SQLite format 3\x00" + b"\x00" * 100, "gcdbench llm ledger merge"),
    ],
)
def test_a_malformed_file_is_one_line_and_nothing_is_written(tmp_path, after_rows, content, says):
    good = tmp_path / "good.jsonl"
    gcd("export", good, "--ledger", filled(tmp_path / "a.sqlite"))
    file = tmp_path / "in.jsonl"
    # After 30 valid rows, a bad line still stops the import before anything is written.
    file.write_bytes((good.read_bytes() if after_rows else b"") + content)
    target = filled(tmp_path / "t.sqlite")
    with closing(sqlite3.connect(target)) as db, db:  # so the rows would be new to it
        db.execute("DELETE FROM answers WHERE kind = 'select-category'")
    before = digest(target)
    result = gcd("import", file, "--ledger", target)
    assert result.exit_code == 2 and says in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert digest(target) == before
    missing = gcd("import", file, "--ledger", tmp_path / "none.sqlite")
    assert missing.exit_code == 2 and not (tmp_path / "none.sqlite").exists()


# -- merge ----------------------------------------------------------------------------------


def test_merge_joins_ledgers_and_keeps_existing_answers(tmp_path):
    mine = Ledger(tmp_path / "mine.sqlite")
    mine.put_many(entry(n, "select-similar-instance", QWEN, "mine") for n in range(5))
    mine.close()
    theirs = Ledger(tmp_path / "theirs.sqlite")
    theirs.put_many(entry(n, "select-similar-instance", QWEN, "theirs") for n in range(3, 8))
    theirs.close()
    third = filled(tmp_path / "third.sqlite")
    result = gcd("merge", tmp_path / "theirs.sqlite", third, "--ledger", tmp_path / "mine.sqlite")
    assert result.exit_code == 0, result.output
    out = flat(result)
    assert "theirs.sqlite: 3 added, 2 already present" in out
    # third holds keys 0-9 of the same kind and model: 5-7 now come from theirs
    assert "third.sqlite: 22 added, 8 already present" in out
    assert "30 answers in" in out
    merged = table(tmp_path / "mine.sqlite")
    texts = {k: r[5] for k, r in merged.items()}
    key = entry(3, "select-similar-instance", QWEN).key
    assert texts[key] == "mine"  # the answer it held is kept
    assert texts[entry(6, "select-similar-instance", QWEN).key] == "theirs"
    assert all(
        merged[k] == r for k, r in table(third).items() if texts[k] not in ("mine", "theirs")
    )


def test_merge_refuses_a_file_that_is_not_a_ledger_and_writes_nothing(tmp_path):
    target = filled(tmp_path / "t.sqlite")
    good = tmp_path / "g.sqlite"
    Ledger(good).put(entry(99, "select-category", SMOL))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    other = tmp_path / "other.db"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE answers (key TEXT, answer TEXT)")
    before = digest(target)
    for bad, says in (
        (text, "not an SQLite file"),
        (other, "answers table of other columns"),
        (tmp_path / "gone.sqlite", "does not exist"),
        (target, "is the --ledger itself"),
    ):
        result = gcd("merge", good, bad, "--ledger", target)
        assert result.exit_code == 2 and says in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert digest(target) == before
    not_ledger = gcd("merge", good, "--ledger", text)
    assert not_ledger.exit_code == 2 and "not a gcdbench ledger" in not_ledger.stderr
    assert text.read_text() == "hello\n"
