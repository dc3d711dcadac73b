"""API keys (docs/reliability.md, "Secrets"): a key comes from the environment only, reaches
the endpoint, and is written nowhere.

Every gcdbench command a user runs after an API run (``run``, a run the endpoint refuses,
``feedback eval``, ``show``, ``report``, ``leaderboard``, ``llm ledger``) runs as a real
subprocess with ``OPENAI_API_KEY`` set to a fresh sentinel and every folder it may write to
(home, temp, caches, results store, ledger, working folder) inside one tree. The scripted
chat server on 127.0.0.1 must receive the sentinel with every request; afterwards every file
in the tree (hidden ones, the ledger's -wal and -shm, which a reader held open keeps, logs,
reports) and every command's output is searched byte-wise for it: zero hits. A canary file
proves the search finds what is there.

Run as a script, this file is gcdbench with the test's BANKING slice registered.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from llm_servers import ScriptedChatServer, SuiteSummary, valid_content

REPO = Path(__file__).resolve().parents[1]
DATASET = "banking-slice4"
SENTINEL = f"sk-SENTINEL-{secrets.token_hex(16)}"
#: fast retries: the refused run gives up at once anyway (401 is not retried)
RETRIES = ("--llm-option=backoff=0.05", "--llm-option=max_retries=1")
OPTIONS = ("--option", "where is my new card", "--option", "close my account")
KEY_AS_OPTION = f"--llm-option=api_key={SENTINEL}"


@pytest.fixture(scope="module")
def summary() -> Iterator[SuiteSummary]:
    counts = SuiteSummary(
        "secrets",
        zero=("sentinel_hits", "tracebacks", "requests_without_key"),
        positive=("runs", "files_searched", "requests_with_key"),
    )
    yield counts
    counts.publish()
    assert not counts.problems(), counts.problems()


@dataclasses.dataclass
class World:
    """One tree that every command writes into, and what happened there."""

    root: Path
    summary: SuiteSummary
    #: where the texts are and what embeds them: ``--dataset ... --encoder ...``
    inputs: list[str]
    outputs: dict[str, bytes] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for folder in ("home", "tmp", "cache", "work", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def results(self) -> Path:
        return self.root / "results"

    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "GCDBENCH_"))}
        home = self.root / "home"
        return {
            **keep,
            "HOME": str(home),
            "TMPDIR": str(self.root / "tmp"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "MPLCONFIGDIR": str(home / ".config" / "matplotlib"),
            "HF_HUB_OFFLINE": "1",
            "GCDBENCH_CACHE": str(self.root / "cache"),
            "GCDBENCH_RESULTS": str(self.results),
            "GCDBENCH_LEDGER": str(self.ledger),
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
            "OPENAI_API_KEY": SENTINEL,
        }

    def gcdbench(self, name: str, *args: str, expect: int = 0) -> str:
        """``gcdbench ARGS`` in its own process, from the tree's working folder; its output,
        also kept as a log in the tree."""
        command = [sys.executable, __file__, *args]
        done = subprocess.run(
            command, cwd=self.root / "work", env=self.env(), capture_output=True, timeout=300
        )
        output = done.stdout + done.stderr
        (self.root / "logs" / f"{name}.log").write_bytes(output)
        self.outputs[name] = output
        text = output.decode(errors="replace")
        self.summary.count_run(text, None)
        assert done.returncode == expect, f"{name}: exit {done.returncode}\n{text[-3000:]}"
        return text

    def llm(self, server: ScriptedChatServer) -> list[str]:
        return ["--llm", "openai:scripted", f"--llm-option=base_url={server.base_url}", *RETRIES]


def search(root: Path, needle: bytes) -> tuple[dict[str, int], int]:
    """Byte-wise: hits per file (relative path) and the number of files read."""
    hits: dict[str, int] = {}
    files = 0
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            files += 1
            found = path.read_bytes().count(needle)
            if found:
                hits[str(path.relative_to(root))] = found
    return hits, files


@pytest.fixture(scope="module")
def world(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory, summary: SuiteSummary
) -> Iterator[tuple[World, ScriptedChatServer]]:
    from tests.banking_slices import write_slices
    from tests.training_fixtures import tiny_bert_folder

    root = tmp_path_factory.mktemp("secrets")
    write_slices(shared_data, root / "data", {DATASET: 4})
    bert = tiny_bert_folder(root / "bert")
    inputs = ["--dataset", DATASET, "--known-ratio", "0.5", "--data-dir", str(root / "data")]
    world = World(root / "tree", summary, [*inputs, "--encoder", str(bert), "--preset", "smoke"])
    with (
        ScriptedChatServer(content=valid_content) as server,
        ScriptedChatServer(lambda rid, attempt: "401") as refusing,
    ):
        world.gcdbench("run", "run", "glean", *world.inputs, *world.llm(server))
        # A reader holds the ledger open from here on, so the writers' -wal and -shm files
        # stay on disk to be searched (the last connection to close would remove them).
        with closing(sqlite3.connect(world.ledger)) as reader:
            reader.execute("SELECT COUNT(*) FROM answers").fetchone()
            run_all_commands(world, server, refusing)
            yield world, server


def run_all_commands(
    world: World, server: ScriptedChatServer, refusing: ScriptedChatServer
) -> None:
    llm = world.llm(server)
    # An endpoint that refuses the key and echoes it back (as some APIs do); the run stops
    # on its failure budget with one line, which must not carry the key either.
    line = world.gcdbench(
        "refused",
        *("run", "glean", *world.inputs, *world.llm(refusing), "--llm-option=max_failures=0"),
        expect=2,
    )
    assert "Incorrect API key provided: ***" in line, line
    world.gcdbench(
        "feedback-eval",
        *("feedback", "eval", *world.inputs, "--size", "4", *llm),
    )
    world.gcdbench("show", "show")
    world.gcdbench("report", "report", "--out", str(world.root / "report"), "--no-references")
    world.gcdbench("leaderboard", "leaderboard", "--no-references")
    world.gcdbench("leaderboard-out", "leaderboard", "--out", "LEADERBOARD.md")
    world.gcdbench("leaderboard-feedback", "leaderboard", "--feedback")
    world.gcdbench("ledger-stats", "llm", "ledger", "stats")
    world.gcdbench("ledger-export", "llm", "ledger", "export", "ledger-export.jsonl")
    question = ("select-similar-instance", "--query", "my card has not arrived", *OPTIONS)
    world.gcdbench("ask", "llm", "ask", *question, *llm)
    # The key typed as an option: refused before anything is written, by a line that does
    # not repeat it.
    world.gcdbench("key-as-option", "run", "glean", *world.inputs, *llm, KEY_AS_OPTION, expect=2)


def test_the_key_reaches_the_endpoint_with_every_request(world, summary):
    _, server = world
    sent = sum(server.bearers.values())
    summary.add(requests_with_key=server.bearers[SENTINEL])
    summary.add(requests_without_key=sent - server.bearers[SENTINEL])
    assert server.bearers[SENTINEL] == sent > 0, set(server.bearers) - {SENTINEL}


def test_no_file_and_no_output_holds_the_key(world, summary):
    tree, _ = world
    written = {
        "record": any(tree.results.rglob("record.json")),
        "feedback eval record": any(
            p for p in tree.results.rglob("*.json") if "feedback" in str(p)
        ),
        "ledger -wal": Path(f"{tree.ledger}-wal").is_file(),
        "ledger -shm": Path(f"{tree.ledger}-shm").is_file(),
        "report": (tree.root / "report" / "README.md").is_file(),
        "leaderboard": (tree.root / "work" / "LEADERBOARD.md").is_file(),
        "ledger export": (tree.root / "work" / "ledger-export.jsonl").is_file(),
    }
    assert all(written.values()), f"not written, so not searched: {written}"
    needle = SENTINEL.encode()
    hits, files = search(tree.root, needle)
    output_hits = {name: out.count(needle) for name, out in tree.outputs.items()}
    summary.add(files_searched=files, sentinel_hits=sum(hits.values()) + sum(output_hits.values()))
    assert not hits, f"the API key is written in {hits}"
    assert not any(output_hits.values()), f"the API key is printed by {output_hits}"
    assert files > 20

    # The search finds what is there: a canary holding the key among those files.
    canary = tree.root / "results" / ".canary"
    canary.write_bytes(b"prefix" + needle + b"suffix")
    try:
        assert search(tree.root, needle)[0] == {"results/.canary": 1}
    finally:
        canary.unlink()


def test_a_key_given_as_an_option_is_refused_without_repeating_it(world):
    tree, _ = world
    (line,) = [x for x in tree.outputs["key-as-option"].decode().splitlines() if x.strip()]
    assert line.startswith("error: ") and "'api_key'" in line and "api_key_env" in line, line
    assert SENTINEL not in line


if __name__ == "__main__":  # gcdbench, with the slice the tests run on
    from gcdbench import registry
    from gcdbench.cli import cli
    from tests.banking_slices import SlicePlugin

    registry.register_plugin(SlicePlugin({DATASET: 4}), "test-secrets-slices")
    cli.main(sys.argv[1:], prog_name="gcdbench")
