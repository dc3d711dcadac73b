"""The example method plugin (examples/gcdbench-seeded-kmeans), installed the way a user
installs a third-party plugin and driven through the real command line.

It is installed into a private folder put on PYTHONPATH of the subprocesses only, so the
test environment's own plugin set (and every other test) never sees it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from example_packages import install_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gcdbench-seeded-kmeans"
RUN = ["run", "seeded-kmeans", "--dataset", "massive_scenario", "--known-ratio", "0.5"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed (no dependencies: gcdbench is the one under test) into a
    folder of its own."""
    work = tmp_path_factory.mktemp("example-plugin")
    _, target = install_example(EXAMPLE, work)
    assert (target / "gcdbench_seeded_kmeans.py").is_file()
    return target


def _run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # The whole environment goes through: GCDBENCH_CACHE (set by conftest) shares the
    # embedding cache between these runs and the rest of the session.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=600
    )


def _records(results: Path) -> list[dict]:
    paths = sorted(results.glob("runs/massive_scenario/seeded-kmeans/*/record.json"))
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def test_plugins_lists_the_installed_example(site: Path) -> None:
    proc = _run(site, "-m", "gcdbench", "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    by_name = {p["name"]: p for p in json.loads(proc.stdout)}
    plugin = by_name.get("seeded-kmeans")
    assert plugin is not None, sorted(by_name)
    assert plugin["distribution"] == "gcdbench-seeded-kmeans"
    assert plugin["version"] == "0.1.0"
    assert plugin["error"] is None
    assert plugin["registered"] == {"method": ["seeded-kmeans"]}


def test_run_and_ablate(site: Path, shared_data: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    where = ["--seed", "0", "--data-dir", str(shared_data), "--results-dir", str(results)]

    proc = _run(site, "-m", "gcdbench", *RUN, *where)
    assert proc.returncode == 0, proc.stderr
    [record] = _records(results)
    assert record["method"]["plugin"]["distribution"] == "gcdbench-seeded-kmeans"
    assert record["method"]["plugin"]["version"] == "0.1.0"
    assert record["diagnostics"]["seeded_centroids"] > 0
    assert 0.0 < record["metrics"]["acc"] <= 100.0

    proc = _run(site, "-m", "gcdbench", *RUN, *where, "--ablate", "seeding")
    assert proc.returncode == 0, proc.stderr
    ablated = [r for r in _records(results) if r["spec"]["ablations"]]
    assert len(ablated) == 1
    assert ablated[0]["method"]["ablated_components"] == ["seeding"]
    assert ablated[0]["diagnostics"]["seeded_centroids"] == 0

    proc = _run(site, "-m", "gcdbench", *RUN, *where, "--ablate", "nope")
    assert proc.returncode == 2, proc.stderr
    assert "unknown component of method 'seeded-kmeans' 'nope'" in proc.stderr
    assert "Available: seeding" in proc.stderr
    assert len(_records(results)) == 2  # the bad request wrote nothing


def test_conformance(site: Path) -> None:
    code = (
        "from gcdbench.testing import check_method; import gcdbench_seeded_kmeans as m; "
        "check_method(m.SeededKMeans)"
    )
    proc = _run(site, "-c", code)
    assert proc.returncode == 0, proc.stderr
