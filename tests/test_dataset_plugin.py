"""The example dataset plugin (examples/gcdbench-jsonl-dataset), installed the way a user
installs a third-party plugin and driven through the real command line, as
docs/plugins/datasets.md does.

It is installed into a private folder put on PYTHONPATH of the subprocesses only, so the
test environment's own plugin set (and every other test) never sees it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from example_packages import install_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gcdbench-jsonl-dataset"
NAME = "support_tickets"
DATA = Path("gcdbench_jsonl_dataset") / "data" / "tickets.jsonl"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a copy of the example's source, the folder it is installed into without deps)."""
    work = tmp_path_factory.mktemp("dataset-plugin")
    source, target = install_example(EXAMPLE, work)
    assert (target / DATA).is_file()  # the data file travels inside the package
    return source, target


def _gcdbench(site: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The whole environment goes through: GCDBENCH_CACHE (set by conftest) shares the
    # embedding cache between these runs and the rest of the session.
    full = {**os.environ, **env}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), full.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "gcdbench", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_shipped_file_matches_its_sha256_and_generator(
    example: tuple[Path, Path], tmp_path: Path
) -> None:
    source, site = example
    sys.path.insert(0, str(site))
    try:
        from gcdbench_jsonl_dataset import SUPPORT_TICKETS
    finally:
        sys.path.remove(str(site))
    [file] = SUPPORT_TICKETS.files
    assert file.name == DATA.name and file.url == ""
    assert hashlib.sha256((EXAMPLE / DATA).read_bytes()).hexdigest() == file.sha256
    (source / DATA).unlink()
    proc = subprocess.run([sys.executable, str(source / "make_tickets.py")], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert (source / DATA).read_bytes() == (EXAMPLE / DATA).read_bytes()


def test_plugins_lists_the_dataset(example: tuple[Path, Path]) -> None:
    proc = _gcdbench(example[1], "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    plugin = {p["name"]: p for p in json.loads(proc.stdout)}["jsonl-dataset"]
    assert plugin["distribution"] == "gcdbench-jsonl-dataset" and plugin["error"] is None
    assert plugin["registered"] == {"dataset": [NAME]}


def test_check_passes_even_with_a_data_root_that_lacks_it(
    example: tuple[Path, Path], shared_data: Path
) -> None:
    site = example[1]
    proc = _gcdbench(site, "data", "check", NAME, GCDBENCH_DATA=str(shared_data))
    assert proc.returncode == 0, proc.stderr
    assert f"{NAME}: 8 classes, 320 rows (train 224, dev 32, test 64)" in proc.stdout
    assert f"in {site / DATA.parent} (from plugin)" in proc.stdout
    assert "tickets.jsonl: sha256 96ebf9e4ee13… verified" in proc.stdout
    assert f"{NAME}: no problems found" in proc.stdout
    proc = _gcdbench(site, "data", "path", NAME, "--data-dir", str(shared_data))
    assert proc.stdout.strip() == f"{site / DATA.parent}\t(plugin)"
    proc = _gcdbench(site, "data", "download", NAME)
    assert proc.returncode == 0, proc.stderr
    assert "ships its files in" in proc.stdout


def test_run_kmeans(example: tuple[Path, Path], shared_data: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = _gcdbench(
        example[1],
        *("run", "kmeans", "-d", NAME, "--results-dir", str(results)),
        GCDBENCH_DATA=str(shared_data),
    )
    assert proc.returncode == 0, proc.stderr
    [path] = results.glob(f"runs/{NAME}/kmeans/*/record.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["data"]["num_classes"] == 8
    assert record["data"]["files"] == [
        {"name": "tickets.jsonl", "sha256": record["data"]["files"][0]["sha256"], "verified": True}
    ]
    assert record["split"]["num_test"] == 64 and record["split"]["num_known"] == 2
    assert 30.0 < record["metrics"]["acc"] <= 100.0  # 8 classes: chance is 12.5
