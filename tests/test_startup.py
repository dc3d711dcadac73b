"""Commands that run no method start without the heavy libraries.

``gcdbench data list``, ``plugins`` and ``show`` load every plugin module, so each built-in
plugin module must import without torch, scikit-learn, SciPy, transformers,
sentence-transformers, pandas or an LLM backend's library, and so must every module those
commands and ``gcdbench --help`` reach. Each check runs in a fresh interpreter (this test
process has long since imported everything) and looks at ``sys.modules``; no timings are
asserted (benchmarks/startup.py measures them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench.api.spec import DEFAULT_ENCODER
from gcdbench.cli import cli

REPO = Path(__file__).resolve().parents[1]
#: What a command that runs no method must not import: the model, numerics and backend
#: libraries, each 0.1-2 s of start-up.
HEAVY = (
    "torch",
    "sklearn",
    "scipy",
    "transformers",
    "sentence_transformers",
    "pandas",
    "matplotlib",
    "llama_cpp",
    "openai",
    "vllm",
    "ray",
)


def _builtin_entry_points() -> dict[str, str]:
    """The built-in plugins, name -> module, as pyproject.toml declares them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return dict(project["project"]["entry-points"]["gcdbench"])


LOAD_ENTRY_POINT = """
import importlib.metadata as md, json, sys
md.EntryPoint(name=sys.argv[1], value=sys.argv[2], group="gcdbench").load()
print(json.dumps(sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)))
"""


def _fresh_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


@pytest.mark.parametrize(("name", "module"), sorted(_builtin_entry_points().items()))
def test_builtin_plugin_imports_no_heavy_library(name: str, module: str) -> None:
    proc = _fresh_python("-c", LOAD_ENTRY_POINT, name, module, json.dumps(HEAVY))
    assert proc.returncode == 0, proc.stderr
    heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == [], (
        f"loading plugin {name} ({module}) imports {', '.join(heavy)}; import them inside "
        "the functions that need them (python -X importtime -c 'import "
        f"{module}' shows the chain)"
    )


#: Runs the CLI as the ``gcdbench`` script does and writes, as the interpreter exits, which
#: heavy modules were imported (``main`` ends in ``sys.exit``, hence atexit).
RUN_CLI = """
import atexit, json, os, sys
heavy = json.loads(os.environ["PROBE_HEAVY"])
def report():
    with open(os.environ["PROBE_OUT"], "w") as out:
        json.dump(sorted(m for m in heavy if m in sys.modules), out)
atexit.register(report)
sys.argv = ["gcdbench", *sys.argv[1:]]
from gcdbench.cli import main
main()
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, str]:
    """A results store with one real run (K-means on bag-of-words: the cheapest there is)."""
    results = tmp_path_factory.mktemp("startup") / "results"
    args = ["run", "kmeans", "--dataset", "massive_scenario", "--known-ratio", "0.5"]
    args += ["--encoder", "bag-of-words", "-q", "--results-dir", str(results)]
    args += ["--data-dir", str(shared_data)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (record,) = results.glob("runs/*/*/*/record.json")
    return results, record.parent.name[:10]


@pytest.fixture(scope="module")
def default_encoder_store(
    store: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """The same run as if it had used the default encoder (all-MiniLM-L6-v2), without
    encoding the texts with it: ``show`` checks every record's encoder weights for staleness,
    and that must not load the encoder's model libraries either. ``RUN`` is the record's
    path."""
    results = tmp_path_factory.mktemp("startup-minilm") / "results"
    shutil.copytree(store[0], results)
    (path,) = results.glob("runs/*/*/*/record.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    record["spec"]["encoder"] = record["identity"]["spec"]["encoder"] = DEFAULT_ENCODER
    record["identity"]["models"]["encoder"] = "0" * 64  # weights "changed": compared, stale
    path.write_text(json.dumps(record), encoding="utf-8")
    return results, str(path)


COMMANDS = {
    "help": ["--help"],
    "data-list": ["data", "list"],
    "plugins": ["plugins"],
    "show": ["show"],
    "show-run": ["show", "RUN"],
}


@pytest.mark.parametrize(
    ("args", "with_default_encoder"),
    [
        *((args, False) for args in COMMANDS.values()),
        (COMMANDS["show"], True),
        (COMMANDS["show-run"], True),
    ],
    ids=[*COMMANDS, "show-default-encoder", "show-run-default-encoder"],
)
def test_command_imports_no_heavy_library(
    args: list[str],
    with_default_encoder: bool,
    request: pytest.FixtureRequest,
    shared_data: Path,
    tmp_path: Path,
) -> None:
    results, run_id = request.getfixturevalue(
        "default_encoder_store" if with_default_encoder else "store"
    )
    out = tmp_path / "heavy.json"
    env = dict(
        os.environ,
        GCDBENCH_DATA=str(shared_data),
        GCDBENCH_RESULTS=str(results),
        PROBE_OUT=str(out),
        PROBE_HEAVY=json.dumps(HEAVY),
    )
    argv = [run_id if a == "RUN" else a for a in args]
    proc = _fresh_python("-c", RUN_CLI, *argv, env=env)
    assert proc.returncode == 0, proc.stderr
    if args[0] == "show":
        assert "kmeans" in proc.stdout  # it did read the store
    heavy = json.loads(out.read_text())
    assert heavy == [], (
        f"`gcdbench {' '.join(args)}` imports {', '.join(heavy)}; "
        "import them inside the functions that need them"
    )
