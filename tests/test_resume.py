"""A training run killed mid-round resumes from its last finished round and ends with the
record an uninterrupted run makes (docs/resume.md; gcdbench/training/checkpoint.py).

Real ``gcdbench run`` subprocesses (this file, run as a script, registers the BANKING slices
and is the command line) on the tiny random BERT: no-llm, GLEAN with gold-label feedback and
MTP-CLNN (a plugin that calls the round loop itself), two slices, two seeds. Each command is
SIGKILLed by its PID once a checkpoint of a round before the last appears and at least one
of its runs is recorded, then run again; the records must equal those of uninterrupted
commands in another results folder, and the second command's outcome line for the resumed
run says where it resumed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.api.encoder import Encoder
from gcdbench.api.progress import Reporter
from gcdbench.api.spec import RunSpec
from gcdbench.cli import cli
from gcdbench.runner.context import RunContext
from gcdbench.testing import tiny_task
from gcdbench.training.checkpoint import ResumableBatches, _read
from gcdbench.training.optim import cycling_batches
from tests.banking_slices import SlicePlugin, write_slices
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
SLICES = {"banking-slice6": 6, "banking-slice4": 4}
ROUNDS = 5  # epochs, one round each: kills land between the first and the last checkpoint
COMMON = (
    *("--known-ratio", "0.5", "--seeds", "0,1", "--preset", "smoke"),
    *("-p", f"epochs={ROUNDS}", "-p", "update_per_epoch=1", "-p", "max_steps_per_epoch=4"),
)
COMMANDS = {
    "no-llm": ("no-llm",),
    "glean": ("glean", "--llm", "oracle"),
    "mtp-clnn": ("mtp-clnn",),
}


@pytest.fixture
def one_thread():
    """One torch/OpenMP thread for the runs made in this process (the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


# -- the pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "batch"), [(0, 3), (5, 5), (7, 3), (8, 32)])
def test_resumable_batches_draw_as_cycling_batches_and_resume_mid_cycle(size, batch):
    reference = cycling_batches(size, batch, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    batches = ResumableBatches(size, batch, rng)
    drawn = [next(batches) for _ in range(5)]
    saved, rng_state = batches.state(), rng.bit_generator.state
    later = [next(batches) for _ in range(6)]
    for ours in [*drawn, *later]:
        assert np.array_equal(ours, next(reference))
    rng.bit_generator.state = rng_state
    again = ResumableBatches(size, batch, rng)
    again.restore(saved)
    assert all(
        np.array_equal(a, b) for a, b in zip(later, [next(again) for _ in range(6)], strict=True)
    )


class _Touch:
    """Pickles as a call that creates a file: what a planted checkpoint could run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_naming_code_is_refused_without_running_it(tmp_path):
    planted = tmp_path / "rounds-0001.ckpt"
    marker = tmp_path / "ran"
    planted.write_bytes(pickle.dumps({"format": 1, "state": _Touch(marker)}))
    payload, why = _read(planted)
    assert payload is None and "pathlib" in why and not marker.exists()
    # The same shape with plain values reads back.
    planted.write_bytes(pickle.dumps({"format": 1, "state": {"rounds": [1, 2]}}))
    assert _read(planted)[0] == {"format": 1, "state": {"rounds": [1, 2]}}


def _no_encoder() -> Encoder:
    raise AssertionError("no-llm fine-tunes a backbone; it embeds nothing")


class _Lines(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)


def test_progress_says_where_a_run_resumed_and_another_loop_starts_over(
    tmp_path,
    tiny_bert,  # noqa: F811
    one_thread,
):
    task, _, parts = tiny_task()
    method = registry.get("method", "no-llm")
    spec = RunSpec("no-llm", "tiny", 0.5, 0, 0.5, encoder=str(tiny_bert))
    texts = {p.file.sha256: list(p.texts) for p in (parts.train, parts.dev, parts.test)}
    folder = tmp_path / "checkpoints"

    def run(params: Any) -> tuple[Any, list[str], RunContext]:
        reporter = _Lines()
        ctx = RunContext(spec, texts, _no_encoder, tmp_path, reporter, checkpoint_dir=folder)
        return method(params).run(task, ctx), reporter.lines, ctx

    params = method.resolve_params("smoke", {"epochs": 2, "update_per_epoch": 1})
    first, _, ctx = run(params)
    # Only the newest checkpoint is kept; the engine leaves it for the runner to remove.
    assert not ctx.resumed and [p.name for p in folder.iterdir()] == ["rounds-0002.ckpt"]
    again, lines, ctx = run(params)
    assert any(line.startswith("resumed from round 2/2") for line in lines), lines
    assert ctx.resumed[0]["epochs_trained"] == 0 and ctx.describe()["resumed"] == ctx.resumed
    assert np.array_equal(again.test_assignments, first.test_assignments)
    assert again.diagnostics["rounds"] == first.diagnostics["rounds"]
    # Another loop of the same run (here: another learning rate) never takes it over.
    _, lines, ctx = run(dataclasses.replace(params, lr=params.lr * 2))
    assert not ctx.resumed and any("another round loop" in line for line in lines), lines


# -- kill, resume, compare --------------------------------------------------------------------


@pytest.fixture(scope="module")
def slices(shared_data, tmp_path_factory) -> Iterator[Path]:
    """The slices' data root; registered here too, for the uninterrupted runs in-process."""
    root = tmp_path_factory.mktemp("resume-slices")
    write_slices(shared_data, root, SLICES)
    registry.register_plugin(SlicePlugin(SLICES), "test-banking-slices")
    yield root
    registry.unregister_plugin("test-banking-slices")


def _argv(method: str, results: Path, data: Path, bert: Path) -> list[str]:
    argv = ["run", *COMMANDS[method], *COMMON, "-d", ",".join(SLICES), "--encoder", str(bert)]
    return [*argv, "--data-dir", str(data), "--results-dir", str(results)]


def _start(method: str, results: Path, data: Path, bert: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    argv = [sys.executable, __file__, *_argv(method, results, data, bert)]
    with log.open("w") as err:  # the child keeps its own copy
        return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)


def _finish(proc: subprocess.Popen, log: Path) -> None:
    proc.wait(timeout=180)
    assert proc.returncode == 0, log.read_text()[-3000:]


def _records(results: Path, method: str) -> dict[tuple[str, int], Path]:
    found = {}
    for path in (results / "runs").glob(f"*/{method}/*/record.json"):
        if not path.parent.name.startswith("."):
            spec = json.loads(path.read_text())["spec"]
            found[(spec["dataset"], spec["seed"])] = path
    return found


def _kill_mid_round(proc: subprocess.Popen, results: Path, method: str) -> Path:
    """SIGKILL ``proc`` (the PID we started) once one of its runs is recorded and another
    has a checkpoint of a round before the last; the checkpoint's folder."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the command finished before it could be killed"
        if _records(results, method):
            for path in (results / ".checkpoints").glob("*/rounds-*.ckpt"):
                if 1 <= int(path.stem.split("-")[1]) < ROUNDS:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
                    assert proc.returncode == -signal.SIGKILL
                    return path.parent
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    raise AssertionError("no mid-run checkpoint appeared")


def _without_durations(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_durations(v) for k, v in value.items() if "duration" not in k}
    if isinstance(value, list):
        return [_without_durations(v) for v in value]
    return value


#: What a run asked, apart from where the answers came from (the backend or the ledger).
ASKED = ("queries", "requests", "statuses", "chosen_positions")


def _same_result(resumed: Path, uninterrupted: Path, *, same_spend: bool = True) -> None:
    """``same_spend=False``: answers the ledger kept at a kill come back as ledger hits, so
    only what was asked is compared, not what the backend was paid for."""
    a, b = json.loads(resumed.read_text()), json.loads(uninterrupted.read_text())
    assert a["identity"] == b["identity"]
    assert a["metrics"] == b["metrics"]
    assert (resumed.parent / "predictions.csv").read_bytes() == (
        uninterrupted.parent / "predictions.csv"
    ).read_bytes()
    # Every round's plan, cluster sizes and per-epoch losses (5 decimals: a restore that
    # misses one generator moves them), the feedback log's scores and the question counts.
    diagnostics = ("rounds", "glean", "feedback_quality")
    for key in diagnostics:
        assert _without_durations(a["diagnostics"].get(key)) == _without_durations(
            b["diagnostics"].get(key)
        ), key
    if b["feedback"] is not None and same_spend:
        assert a["feedback"]["stats"] == b["feedback"]["stats"]
    elif b["feedback"] is not None:
        mine, theirs = a["feedback"]["stats"], b["feedback"]["stats"]
        for part in ("total", *theirs["per_kind"]):
            x = mine["total"] if part == "total" else mine["per_kind"].get(part, {})
            y = theirs["total"] if part == "total" else theirs["per_kind"][part]
            assert {k: x.get(k) for k in ASKED} == {k: y.get(k) for k in ASKED}, part
    assert a["clusters"] == b["clusters"]


def test_killed_runs_resume_to_the_uninterrupted_records(
    tmp_path,
    slices,
    tiny_bert,  # noqa: F811
    monkeypatch,
    one_thread,
):
    monkeypatch.setenv("GCDBENCH_CACHE", str(tmp_path / "cache"))
    full, killed = tmp_path / "full", tmp_path / "killed"
    for method in COMMANDS:  # uninterrupted, in this process: the same command line
        done = CliRunner().invoke(cli, _argv(method, full, slices, tiny_bert))
        assert done.exit_code == 0, done.output
        assert len(_records(full, method)) == 4

    for method in COMMANDS:
        first_log, second_log = tmp_path / f"{method}-1.log", tmp_path / f"{method}-2.log"
        folder = _kill_mid_round(
            _start(method, killed, slices, tiny_bert, first_log), killed, method
        )
        finished = {key: path.read_bytes() for key, path in _records(killed, method).items()}
        assert finished and len(finished) < 4 and list(folder.glob("rounds-*.ckpt"))

        _finish(_start(method, killed, slices, tiny_bert, second_log), second_log)
        records = _records(killed, method)
        assert len(records) == 4
        # Finished runs are skipped, not redone: their records are the same bytes.
        assert {key: records[key].read_bytes() for key in finished} == finished
        resumed = [
            key
            for key, path in records.items()
            if "resumed" in json.loads(path.read_text())["provenance"]
        ]
        assert len(resumed) == 1 and resumed[0] not in finished
        (where,) = json.loads(records[resumed[0]].read_text())["provenance"]["resumed"]
        # Finished rounds are not redone: only the epochs after the checkpoint train.
        assert 1 <= where["from_round"] < ROUNDS and where["rounds"] == ROUNDS
        assert where["epochs_restored"] == where["from_round"]
        assert where["epochs_trained"] == ROUNDS - where["from_round"]
        assert Path(where["checkpoint"]).parent == folder
        # The checkpoints go once the record is written.
        assert not folder.exists()
        # A plan's runs report through a silent reporter: the outcome line says it instead.
        notes = [line for line in second_log.read_text().splitlines() if "resumed from" in line]
        assert len(notes) == 1 and notes[0].startswith("done "), notes
        assert notes[0].endswith(f"(resumed from round {where['from_round']})"), notes

        expected = _records(full, method)
        assert set(records) == set(expected)
        for key, path in records.items():
            _same_result(path, expected[key])


if __name__ == "__main__":  # the subprocess: `gcdbench` with the BANKING slices registered
    registry.register_plugin(SlicePlugin(SLICES), "test-banking-slices")
    cli.main(sys.argv[1:], prog_name="gcdbench")
