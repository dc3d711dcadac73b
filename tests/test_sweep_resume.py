"""A sweep killed mid-round resumes without redoing what it finished (issue #16, "Done when"):
a plan of 2 methods × 2 data sets × 3 seeds (GLEAN asking a chat-completions server on
127.0.0.1, and its no-LLM control) runs as ``gcdbench sweep`` in its own process and is
SIGKILLed once some of its runs are recorded and another has a checkpoint of a round before
the last; the same command then runs to its end.

Checked against the same sweep run uninterrupted in another tree: the same twelve records
(identity, metrics, ``predictions.csv`` bytes, every round's diagnostics); the runs recorded
before the kill are not run again (their record files keep their bytes); the killed run
resumes from its checkpoint and trains only the rounds after it; the ledger ends with the
uninterrupted sweep's questions, and the server answered none of the questions the ledger
had kept (at most the requests in flight at the kill are asked again); nothing temporary is
left. The single-run version of this, for three methods, is tests/test_resume.py.

Run as a script, this file is ``gcdbench`` with the two BANKING slices registered.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests import test_reliability_kills as kills
from tests.test_reliability_kills import (
    CONCURRENCY,
    Gcdbench,
    ServerCount,
    Tree,
    ledger_keys,
    leftovers,
    llm_spec,
    wait_for,
)
from tests.test_resume import _same_result

SLICES = {"banking-slice6": 6, "banking-slice4": 4}
SEEDS = (0, 1, 2)
METHODS = ("glean", "no-llm")
ROUNDS = 4  # epochs, one round each: the kill lands between the first and the last checkpoint


#: The kill suite's chat server fixture, shared.
chat_server = kills.chat_server


class SweepCommand(Gcdbench):
    """``gcdbench`` run from this file: the command line with both slices registered."""

    script = __file__


def _plan(folder: Path, data: Path, bert: Path, llm: str, ledger: Path) -> Path:
    path = folder / "plan.toml"
    params = f"{{ epochs = {ROUNDS}, update_per_epoch = 1, max_steps_per_epoch = 4 }}"
    methods = "".join(
        f'\n[[methods]]\nname = "{name}"\npreset = "smoke"\nparams = {params}\n' for name in METHODS
    )
    path.write_text(
        textwrap.dedent(
            f"""\
            data_dir = "{data}"
            encoder = "{bert}"
            llm = "{llm}"
            ledger = "{ledger}"
            [axes]
            datasets = {json.dumps(list(SLICES))}
            known_ratios = [0.5]
            seeds = {list(SEEDS)}
            """
        )
        + methods,
        encoding="utf-8",
    )
    return path


def _records(results: Path) -> dict[tuple[str, str, int], Path]:
    found = {}
    for path in (results / "runs").glob("*/*/*/record.json"):
        if not path.parent.name.startswith("."):
            spec = json.loads(path.read_text(encoding="utf-8"))["spec"]
            found[(spec["method"], spec["dataset"], spec["seed"])] = path
    return found


def _mid_round_checkpoint(results: Path) -> Path | None:
    """A checkpoint folder holding a round before the last, once some run is recorded."""
    if not _records(results):
        return None
    for path in (results / ".checkpoints").glob("*/rounds-*.ckpt"):
        if 1 <= int(path.stem.split("-")[1]) < ROUNDS:
            return path.parent
    return None


@pytest.fixture(scope="module")
def inputs(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.banking_slices import write_slices
    from tests.training_fixtures import tiny_bert_folder

    root = tmp_path_factory.mktemp("sweep-resume-inputs")
    write_slices(shared_data, root / "slices", SLICES)
    return root / "slices", tiny_bert_folder(root / "bert")


def test_a_killed_sweep_resumes_to_the_uninterrupted_records(
    inputs: tuple[Path, Path], chat_server: Any, tmp_path: Path
) -> None:
    data, bert = inputs
    server = ServerCount(chat_server)
    trees = {name: Tree(tmp_path / name) for name in ("full", "killed")}
    args = {}
    for name, tree in trees.items():
        tree.root.mkdir()
        plan = _plan(tree.root, data, bert, llm_spec(chat_server.base_url), tree.ledger)
        args[name] = ["sweep", str(plan), "--results-dir", str(tree.results)]

    before = server.settle()
    uninterrupted = SweepCommand(trees["full"], args["full"])
    assert uninterrupted.finish() == 0, uninterrupted.stderr[-3000:]
    full_answers = server.settle() - before
    expected = _records(trees["full"].results)
    assert len(expected) == len(METHODS) * len(SLICES) * len(SEEDS)
    assert full_answers == len(ledger_keys(trees["full"].ledger)) > 0

    killed = trees["killed"]
    before = server.settle()
    sweep = SweepCommand(killed, args["killed"])
    found = wait_for(lambda: _mid_round_checkpoint(killed.results) is not None, sweep)
    folder = _mid_round_checkpoint(killed.results)
    assert found and folder is not None and sweep.kill(), "the sweep ended before its kill"
    finished = {key: path.read_bytes() for key, path in _records(killed.results).items()}
    kept = ledger_keys(killed.ledger)
    assert 0 < len(finished) < len(expected)
    asked_before_kill = server.settle() - before

    before = server.settle()
    resumed_sweep = SweepCommand(killed, args["killed"])
    assert resumed_sweep.finish() == 0, resumed_sweep.stderr[-3000:]
    assert resumed_sweep.tracebacks() == 0
    asked_after_kill = server.settle() - before

    records = _records(killed.results)
    assert set(records) == set(expected)
    for key, path in records.items():
        _same_result(path, expected[key], same_spend=False)
    # Finished runs are skipped, not redone: their record files keep their bytes.
    assert {key: records[key].read_bytes() for key in finished} == finished
    resumed = {
        key: json.loads(path.read_text(encoding="utf-8"))["provenance"]["resumed"]
        for key, path in records.items()
        if "resumed" in json.loads(path.read_text(encoding="utf-8"))["provenance"]
    }
    assert len(resumed) == 1 and set(resumed).isdisjoint(finished), resumed
    ((where,),) = resumed.values()
    # The plan runs GLEAN's specs first: the kill lands in a run that asks questions.
    assert next(iter(resumed))[0] == "glean", resumed
    # Finished rounds are not redone: only the epochs after the checkpoint train.
    assert 1 <= where["from_round"] < ROUNDS
    assert where["epochs_trained"] == ROUNDS - where["from_round"]
    assert Path(where["checkpoint"]).parent == folder
    # Answered questions are not asked again: the ledger's kept questions were not re-sent,
    # and both commands together asked the uninterrupted sweep's questions plus at most the
    # requests in flight at the kill.
    assert ledger_keys(killed.ledger) == ledger_keys(trees["full"].ledger)
    assert asked_after_kill <= full_answers - len(kept) + CONCURRENCY
    assert full_answers <= asked_before_kill + asked_after_kill <= full_answers + CONCURRENCY
    assert leftovers(killed) == []


if __name__ == "__main__":  # gcdbench, with both BANKING slices registered
    from gcdbench import registry
    from gcdbench.cli import cli
    from tests.banking_slices import SlicePlugin

    registry.register_plugin(SlicePlugin(SLICES), "test-sweep-resume-slices")
    cli.main(sys.argv[1:], prog_name="gcdbench")
