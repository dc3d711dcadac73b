"""Publishing a cache folder (``gcdbench.util.files.atomic_dir``, used by the pre-training
and model caches): a killed writer's temp folder is removed by the next publish, a live
writer's is never touched, and writers racing in one process or several all end with the one
whole folder and nothing else beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from gcdbench.util.files import atomic_dir, remove_abandoned_temp_dirs

DONE = "complete"

#: A writer in its own process: fills a temp folder, says so, then waits inside atomic_dir
#: (to be killed, or to publish when the file ``go`` appears).
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from gcdbench.util.files import atomic_dir
    target, go = Path(sys.argv[1]), Path(sys.argv[2])
    with atomic_dir(target, "complete") as tmp:
        (tmp / "weights").write_text("w")
        print(tmp, flush=True)
        while not go.exists():
            time.sleep(0.02)
        (tmp / "complete").write_text("ok")
    """
)


def _writer(target: Path, go: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(go)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, Path(proc.stdout.readline().strip())


def _publish(target: Path) -> None:
    with atomic_dir(target, DONE) as tmp:
        (tmp / DONE).write_text("ok")


def test_a_killed_writers_temp_folder_goes_at_the_next_publish(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "key-a"
    proc, tmp = _writer(target, tmp_path / "never")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tmp.is_dir(), "the kill left nothing: the test exercised nothing"
    # Another key's publish in the same folder cleans it too: a kill's leftover need not wait
    # for the same key to come again.
    _publish(tmp_path / "cache" / "key-b")
    assert sorted(os.listdir(tmp_path / "cache")) == ["key-b"]


def test_a_live_writers_temp_folder_is_kept_and_then_published(tmp_path: Path) -> None:
    target, go = tmp_path / "cache" / "key", tmp_path / "go"
    proc, tmp = _writer(target, go)
    try:
        assert remove_abandoned_temp_dirs(target.parent) == []
        _publish(tmp_path / "cache" / "other")
        assert tmp.is_dir() and (tmp / "weights").is_file()
        go.touch()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert sorted(os.listdir(target.parent)) == ["key", "other"]
    assert sorted(os.listdir(target)) == [DONE, "weights"]


def _race(target: Path, racers: int = 8) -> list[Exception]:
    """``racers`` threads publish ``target`` at once; the exceptions they raised."""
    errors: list[Exception] = []
    start = threading.Barrier(racers)

    def race() -> None:
        try:
            start.wait()
            with atomic_dir(target, DONE) as tmp:
                (tmp / "weights").write_text("w")
                (tmp / DONE).write_text("ok")
        except Exception as exc:  # a failure in a thread must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_threads_racing_to_publish_one_key_leave_one_whole_folder(tmp_path: Path) -> None:
    # Many short races: a cleaner taking a racer's folder between its mkdtemp and its lock
    # is rare in one race (it failed about one race in ten before that window was handled).
    for trial in range(50):
        target = tmp_path / str(trial) / "key"
        assert _race(target) == [], trial
        assert os.listdir(target.parent) == ["key"]
        assert sorted(os.listdir(target)) == [DONE, "weights"]
