"""What survives a kill: records, --force replacements, scratch folders and run locks,
checked with real processes and real SIGKILLs (gcdbench/runner/store.py, locks.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from gcdbench.runner import store as store_module
from gcdbench.runner.run import RunOptions, execute, resolve_spec
from gcdbench.runner.store import RECORD, ResultsStore, load_record

REPO = Path(__file__).resolve().parents[1]
DATASET = "massive_scenario"  # the quickest real set
RUN_ARGS = ("-d", DATASET, "--known-ratio", "0.5", "--encoder", "bag-of-words", "-p", "n_init=1")

#: Rewrites one run's record forever, each version's number in its record and predictions;
#: argv: results dir, "swap" or "fallback" (the path taken where folders cannot be swapped).
WRITER = """
import sys
from pathlib import Path
import pandas as pd
from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import RunSpec
from gcdbench.runner import store as store_module

if sys.argv[2] == "fallback":
    store_module._exchange = lambda a, b: False
store = store_module.ResultsStore(Path(sys.argv[1]))
spec = RunSpec("kmeans", "banking", 0.25, 0)
version = 0
while True:
    record = ResultRecord(
        spec=spec, metrics={"acc": float(version)}, split={}, data={}, method={},
        encoder=None, provenance={"version": version}, identity={"probe": "kill"},
    )
    store.write(record, pd.DataFrame({"version": [version] * 20}))
    if version == 0:
        print("ready", flush=True)
    version += 1
"""

#: Holds one run's lock until killed; argv: results dir, run id.
HOLDER = """
import sys, time
from pathlib import Path
from gcdbench.runner.locks import lock_file, run_lock

with run_lock(lock_file(Path(sys.argv[1]) / "locks", sys.argv[2]), sys.argv[2][:10]):
    print("held", flush=True)
    time.sleep(600)
"""


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, cwd=REPO
    )


def _started(proc: subprocess.Popen[str], word: str) -> subprocess.Popen[str]:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == word, f"helper said {line!r}"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def _gcdbench(*args: str, results: Path, data: Path, tmpdir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "GCDBENCH_DATA": str(data), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmpdir)}
    command = [sys.executable, "-m", "gcdbench", "run", "kmeans", *args]
    return subprocess.Popen(
        [*command, "--results-dir", str(results)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


_STDERR: dict[int, str] = {}


def _stderr_has(proc: subprocess.Popen[str], text: str) -> bool:
    """Reads stderr line by line as it comes (the run blocks while it waits)."""
    assert proc.stderr is not None
    if text not in _STDERR.get(proc.pid, ""):
        assert proc.poll() is None, f"run ended early: {_STDERR.get(proc.pid)}"
        _STDERR[proc.pid] = _STDERR.get(proc.pid, "") + proc.stderr.readline()
    return text in _STDERR[proc.pid]


def _finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    out, err = proc.communicate(timeout=120)
    err = _STDERR.pop(proc.pid, "") + err
    assert proc.returncode == 0, err
    return out, err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record_path(results: Path) -> Path:
    """The one visible record (pathlib's ``*`` also matches hidden folders)."""
    (path,) = [
        p for p in (results / "runs").glob(f"*/*/*/{RECORD}") if not p.parent.name.startswith(".")
    ]
    return path


def _hidden(results: Path) -> list[Path]:
    """Every leftover a writer can leave: hidden run folders, scratch folders, lock files."""
    runs = [p for p in (results / "runs").rglob(".*") if p.is_dir()]
    return runs + list((results / ".tmp").glob("*")) + list((results / "locks").glob("*"))


def _the_record(results: Path) -> tuple[int, int]:
    """The one record's version and its predictions' version (they must agree)."""
    path = _record_path(results)
    version = int(load_record(path).provenance["version"])
    predictions = pd.read_csv(path.parent / "predictions.csv")
    return version, int(predictions["version"].iloc[0])


def _can_swap(tmp_path: Path) -> bool:
    a, b = tmp_path / "swap-a", tmp_path / "swap-b"
    a.mkdir()
    b.mkdir()
    return store_module._exchange(a, b)


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("mode", ["swap", "fallback"])
def test_force_replacement_survives_sigkill_at_any_moment(tmp_path: Path, mode: str) -> None:
    if mode == "swap" and not _can_swap(tmp_path):
        pytest.skip("this file system cannot swap folders in one step")
    results = tmp_path / "results"
    rng = random.Random(17)
    versions, left_behind = [], 0
    for _ in range(7):
        writer = _started(_python(WRITER, str(results), mode), "ready")
        deadline = time.monotonic() + rng.uniform(0.02, 0.4)
        while time.monotonic() < deadline:
            if mode == "swap":  # at every instant a reader finds a whole record, old or new
                path = _record_path(results)
                assert "version" in json.loads(path.read_text())["provenance"]
        _kill(writer)
        left_behind += bool(_hidden(results))
        if mode == "swap":
            _the_record(results)  # readable before any repair
        ResultsStore(results)  # the next open repairs what the killed writer left
        version, in_predictions = _the_record(results)
        assert version == in_predictions
        assert _hidden(results) == []
        versions.append(version)
    assert left_behind, "no kill landed inside a write: the test exercised nothing"
    assert versions[-1] > 0  # records were really replaced


def test_a_replacement_killed_between_its_renames_is_put_back(tmp_path: Path) -> None:
    # The state the two-rename fallback leaves when killed between them: the old record
    # under .old-, the new one complete under .tmp-, no visible record.
    results = tmp_path / "results"
    writer = _started(_python(WRITER, str(results), "fallback"), "ready")
    _kill(writer)
    ResultsStore(results)
    path = _record_path(results)
    before, record = path.read_text(), load_record(path)
    final, dead = path.parent, _dead_pid()
    os.rename(final, final.parent / f".old-{final.name}-{dead}-0a0a0a0a")
    (final.parent / f".tmp-{final.name}-{dead}-0b0b0b0b").mkdir()
    assert ResultsStore(results).find(record.spec, record.run_id) == path
    assert path.read_text() == before
    assert _hidden(results) == []


def test_a_live_writers_folders_are_left_alone(tmp_path: Path) -> None:
    results = tmp_path / "results"
    run_id = "ab" * 32
    holder = _started(_python(HOLDER, str(results), run_id), "held")
    try:
        writing = results / "runs" / "banking" / "kmeans" / f".tmp-{run_id[:16]}-{holder.pid}-1"
        scratch = results / ".tmp" / f"run-{run_id[:16]}-{holder.pid}-x"
        writing.mkdir(parents=True)
        scratch.mkdir(parents=True)
        ResultsStore(results)
        assert writing.is_dir() and scratch.is_dir()  # its lock is held: the writer is alive
    finally:
        _kill(holder)
    ResultsStore(results)
    assert _hidden(results) == []


def test_one_spec_started_twice_runs_once(tmp_path: Path, shared_data: Path) -> None:
    spec = resolve_spec(
        "kmeans", DATASET, 0.5, 0, encoder="bag-of-words", overrides={"n_init": "1"}
    )
    first = execute(spec, RunOptions(tmp_path / "elsewhere", str(shared_data)))
    assert first.record_path is not None
    run_id = load_record(Path(first.record_path)).run_id  # the id both runs will compute
    results, tmpdir = tmp_path / "results", tmp_path / "systmp"
    tmpdir.mkdir()

    # A process holds the run, as a first `gcdbench run` would; both runs wait for it. Its
    # SIGKILL (a failed first run) frees the lock: one of them runs, the other then skips.
    holder = _started(_python(HOLDER, str(results), run_id), "held")
    runs = [_gcdbench(*RUN_ARGS, results=results, data=shared_data, tmpdir=tmpdir) for _ in "ab"]
    waiting = f"waiting for run {run_id[:10]} running in pid {holder.pid}"
    try:
        _wait_until(lambda: all(_stderr_has(r, waiting) for r in runs), "both runs to wait")
    finally:
        _kill(holder)
    outputs = [_finish(run) for run in runs]
    statuses = sorted(out.split(": ", 1)[1].split()[0] for out, _ in outputs)
    assert statuses == ["done", "skipped"], outputs
    path = _record_path(results)
    assert "lock_wait" in load_record(path).provenance["durations_s"]
    assert _hidden(results) == []

    # --force waits for a holder too, then runs.
    holder = _started(_python(HOLDER, str(results), run_id), "held")
    forced = _gcdbench(*RUN_ARGS, "--force", results=results, data=shared_data, tmpdir=tmpdir)
    try:
        _wait_until(lambda: _stderr_has(forced, "waiting for run"), "--force to wait")
        assert forced.poll() is None
    finally:
        _kill(holder)
    out, _ = _finish(forced)
    assert ": done" in out
    assert not any(p.name.startswith("gcdbench") for p in tmpdir.iterdir())


def test_a_killed_runs_scratch_goes_when_the_next_run_starts(
    tmp_path: Path, shared_data: Path
) -> None:
    results, tmpdir = tmp_path / "results", tmp_path / "systmp"
    tmpdir.mkdir()
    # K-means on banking runs for seconds: long enough to be killed mid-run.
    slow = _gcdbench(
        "--encoder", "bag-of-words", "-q", results=results, data=shared_data, tmpdir=tmpdir
    )
    _wait_until(lambda: any((results / ".tmp").glob("run-*")), "the run's scratch folder")
    _kill(slow)
    left = _hidden(results)
    assert any(p.parent.name == ".tmp" for p in left) and any(p.suffix == ".lock" for p in left)
    assert not any(p.name.startswith("gcdbench") for p in tmpdir.iterdir())

    out, _ = _finish(_gcdbench(*RUN_ARGS, "-q", results=results, data=shared_data, tmpdir=tmpdir))
    assert ": done" in out
    assert _hidden(results) == []
