"""``gcdbench sweep`` and ``gcdbench status`` as a user meets them (docs/sweeps.md): a plan
expands to the specs ``gcdbench run`` would build, a bad plan stops with one line and writes
nothing, a real sweep ends done, a failing run is recorded and retried, a spec whose data
changed shows stale, a spec held by another process shows running."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gcdbench.cli import cli
from gcdbench.cli.sweep import expand
from gcdbench.errors import GcdbenchError
from gcdbench.runner.plan_file import AXIS_KEYS, METHOD_KEYS, TOP_KEYS, load_plan, parse_plan

#: The cheapest real runs: bag-of-words features, smoke presets, gold-label feedback.
FAST = """
encoder = "bag-of-words"
llm = "oracle"
[axes]
datasets = ["massive_scenario"]
known_ratios = [0.5]
seeds = [0]
"""
KMEANS = '[[methods]]\nname = "kmeans"\nparams = { n_init = 1 }\n'


def _write(folder: Path, text: str, name: str = "plan.toml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


@pytest.fixture
def gcd(tmp_path, shared_data):
    """``gcdbench`` in-process, on a fresh results store and the shared data by default."""
    results = tmp_path / "results"

    def invoke(*args: str, data: Path | None = shared_data):
        argv = [*args, "--results-dir", str(results)]
        if data is not None:
            argv += ["--data-dir", str(data)]
        return CliRunner().invoke(cli, argv, catch_exceptions=False)

    invoke.results = results
    return invoke


def _records(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("runs/*/*/*/record.json"))]


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- expansion -------------------------------------------------------------------------------


def test_a_plan_expands_methods_x_ablations_x_axes(tmp_path):
    path = _write(
        tmp_path,
        """
        llm = "noisy-oracle:0.8"
        [axes]
        datasets = ["massive_scenario", "massive_intent"]
        known_ratios = [0.25, 0.5]
        seeds = "0-2"
        [[methods]]
        name = "glean"
        preset = "smoke"
        params = { query_samples = 10, filter_threshold = 0.5 }
        ablate = [[], ["cluster-instance"]]
        [[methods]]
        name = "kmeans"
        params = { n_init = 3 }
        seeds = [7]
        """,
    )
    planned = expand(load_plan(path))
    glean = [p.spec for p in planned if p.spec.method == "glean"]
    kmeans = [p.spec for p in planned if p.spec.method == "kmeans"]
    assert len(glean) == 2 * 2 * 2 * 3 and len(kmeans) == 2 * 2 * 1
    assert {s.ablations for s in glean} == {(), ("cluster-instance",)}
    assert {(s.dataset, s.known_ratio, s.seed) for s in glean} == {
        (d, r, s)
        for d in ("massive_scenario", "massive_intent")
        for r in (0.25, 0.5)
        for s in (0, 1, 2)
    }
    for spec in glean:
        assert spec.preset == "smoke" and spec.llm == "noisy-oracle:0.8"
        assert spec.params["query_samples"] == 10 and spec.params["filter_threshold"] == 0.5
    # The smoke preset's own values are in (it sets fewer rounds than the default).
    # (GLEAN fine-tunes its encoder: the default MiniLM, not FAST's bag of words.)
    plain = FAST.replace('encoder = "bag-of-words"\n', "")
    defaults = expand(
        load_plan(_write(tmp_path, plain + '[[methods]]\nname = "glean"\n', "d.toml"))
    )
    assert glean[0].params["epochs"] != defaults[0].spec.params["epochs"]
    # A top-level LLM default reaches only the methods that ask feedback.
    assert {(s.llm, s.params["n_init"], s.seed) for s in kmeans} == {(None, 3, 7)}
    assert len({s.hash for s in glean + kmeans}) == len(planned)


def test_dry_run_shows_every_spec_and_writes_nothing(gcd, tmp_path):
    path = _write(tmp_path, FAST.replace("seeds = [0]", 'seeds = "0-2"') + KMEANS)
    result = gcd("sweep", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    output = _one_line(result.output)
    assert "3 specs: 0 done, 0 running, 0 failed, 0 stale, 3 pending; a sweep would run 3" in output
    assert not gcd.results.exists()


REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_example_plan_expands_and_every_key_is_documented():
    planned = expand(load_plan(REPO / "examples" / "sweep-smoke.toml"))
    assert [p.spec.method for p in planned].count("glean") == 2 and len(planned) == 8
    docs = (REPO / "docs" / "sweeps.md").read_text(encoding="utf-8")
    for key in {*TOP_KEYS, *AXIS_KEYS, *METHOD_KEYS} - {"axes", "methods"}:
        assert f"`{key}`" in docs, key


# -- bad plans -------------------------------------------------------------------------------

GOOD_AXES = '[axes]\ndatasets = ["massive_scenario"]\nknown_ratios = [0.5]\nseeds = "0"\n'

BAD_PLANS = [
    ("knwon = 1\n" + GOOD_AXES + KMEANS, ["'knwon'", "unknown key"]),
    ('[axes]\ndataset = ["banking"]\n' + KMEANS, ["[axes] 'dataset'", "did you mean 'datasets'"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\nparam = {}\n', ["'param'", "'params'"]),
    (GOOD_AXES + "[[methods]\n", ["not valid TOML", "line 6"]),
    (GOOD_AXES + '[[methods]]\nname = "kmean"\n', ["#1 name", "Did you mean 'kmeans'"]),
    (GOOD_AXES.replace("massive_scenario", "bankng") + KMEANS, ["unknown dataset 'bankng'"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\nparams = { ninit = 3 }\n', ["'n_init'"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\nparams = { n_init = "ten" }\n', ["n_init", "int"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\nparams = { n_init = 0 }\n', ["n_init", ">= 1"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\nparams = { n_init = [1] }\n', ["params.n_init"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\npreset = "smoke"\n', ["declares no presets"]),
    (GOOD_AXES + '[[methods]]\nname = "glean"\npreset = "fast"\n', ["preset", "smoke"]),
    (GOOD_AXES + '[[methods]]\nname = "glean"\nablate = [["demos"]]\n', ["ablate ['demos']"]),
    (GOOD_AXES + '[[methods]]\nname = "glean"\nablate = ["demo"]\n', ["ablate", '[[], ["demo"]]']),
    ('llm = "orcale"\n' + GOOD_AXES + '[[methods]]\nname = "glean"\n', ["'orcale'", "oracle"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\nllm = "oracle"\n', ["asks no LLM", "drop"]),
    (GOOD_AXES + '[[methods]]\nname = "kmeans"\nvariant = "paper"\n', ["variant", "drop"]),
    (GOOD_AXES.replace('"0"', '"2-0"') + KMEANS, ["[axes] seeds", "backwards"]),
    (GOOD_AXES.replace('"0"', "[true]") + KMEANS, ["[axes] seeds", "integers"]),
    (GOOD_AXES.replace("[0.5]", "[1.5]") + KMEANS, ["known_ratios must be in (0, 1]"]),
    (GOOD_AXES + "labeled_ratio = 0\n" + KMEANS, ["labeled_ratio", "(0, 1]"]),
    ("max_runs = 2\n" + GOOD_AXES.replace('"0"', '"0-9"') + KMEANS, ["10 runs", "max_runs"]),
    (GOOD_AXES + KMEANS + KMEANS, ["#2", "already planned by [[methods]] #1"]),
    (GOOD_AXES, ["[[methods]]", "runs no method"]),
    ('[axes]\ndatasets = ["banking"]\n' + KMEANS, ["known_ratios", "set known_ratios in [axes]"]),
    ('data_dir = "/no/such/folder"\n' + GOOD_AXES + KMEANS, ["data_dir", "not an existing"]),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", ["too deeply"]),
]


BAD_PLAN_IDS = [
    "unknown-top-key",
    "unknown-axes-key",
    "unknown-method-key",
    "toml-syntax",
    "unknown-method",
    "unknown-dataset",
    "unknown-param",
    "param-type",
    "param-range",
    "param-shape",
    "no-presets",
    "unknown-preset",
    "unknown-ablation",
    "ablate-shape",
    "unknown-llm",
    "llm-on-kmeans",
    "variant-on-kmeans",
    "seeds-backwards",
    "seeds-type",
    "known-ratio-range",
    "labeled-ratio-range",
    "max-runs",
    "duplicate-spec",
    "no-methods",
    "missing-axis",
    "missing-data-dir",
    "too-deep",
]


@pytest.mark.parametrize(("text", "needles"), BAD_PLANS, ids=BAD_PLAN_IDS)
def test_a_bad_plan_stops_with_one_line_and_writes_nothing(gcd, tmp_path, text, needles):
    plan_results = tmp_path / "plan-results"
    path = _write(tmp_path, f'results_dir = "{plan_results}"\n' + text)
    for command in ("sweep", "status"):
        result = gcd(command, str(path), data=None)
        assert result.exit_code == 2, result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), result.stderr
        for needle in needles:
            assert needle in lines[0], lines[0]
    assert not gcd.results.exists() and not plan_results.exists()


def test_a_plan_file_that_cannot_be_read(gcd, tmp_path):
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    for path, needle in (
        (tmp_path / "missing.toml", "no such file"),
        (tmp_path, "is a folder"),
        (tmp_path / "latin1.toml", "not UTF-8"),
    ):
        result = gcd("sweep", str(path))
        assert result.exit_code == 2 and needle in result.stderr, result.stderr
    assert not gcd.results.exists()


SCALARS = st.one_of(
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["oracle", "noisy-oracle:0.8", "0-2", "9-1", "smoke", "merge", "0.5usd"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["n_init", "x"]), inner)
    ),
    max_leaves=4,
)
KEYS = [
    ("llm",),
    ("llm_budget",),
    ("max_runs",),
    ("axes", "datasets"),
    ("axes", "known_ratios"),
    ("axes", "seeds"),
    ("axes", "labeled_ratio"),
    ("methods", 0, "name"),
    ("methods", 0, "preset"),
    ("methods", 0, "params"),
    ("methods", 0, "ablate"),
    ("methods", 0, "llm_options"),
    ("methods", 1, "params", "n_init"),
    ("methods", 1, "seeds"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=2))
def test_any_plan_either_expands_or_fails_with_one_line(changes):
    raw: dict = {
        "llm": "oracle",
        "axes": {"datasets": ["massive_scenario"], "known_ratios": [0.5], "seeds": "0"},
        "methods": [{"name": "llm-cluster", "preset": "smoke"}, {"name": "kmeans", "params": {}}],
    }
    for key, value in changes:
        node = raw
        for part in key[:-1]:
            node = node[part] if isinstance(node, dict | list) else None
        if isinstance(node, dict):  # not where an earlier change put a scalar
            node[key[-1]] = value
    try:
        planned = expand(parse_plan(raw, Path("plan.toml")))
    except GcdbenchError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("plan.toml: ")
    else:
        assert planned and len({p.spec.hash for p in planned}) == len(planned)


# -- real sweeps -------------------------------------------------------------------------------


def test_a_small_sweep_ends_done_with_shared_splits(gcd, tmp_path):
    path = _write(
        tmp_path,
        FAST
        + """
        [[methods]]
        name = "llm-cluster"
        preset = "smoke"
        ablate = [[], ["merge"]]
        [[methods]]
        name = "kmeans"
        params = { n_init = 1 }
        seeds = "0-1"
        """,
    )
    result = gcd("sweep", str(path), "-q")
    assert result.exit_code == 0, result.output
    assert "4 specs, 4 to run" in _one_line(result.output)
    records = _records(gcd.results)
    assert len(records) == 4
    # One split artifact per (dataset, ratios, seed), shared by every method run on it.
    assert len(list((gcd.results / "splits").glob("*.json"))) == 2
    seed0 = {r["split"]["file"] for r in records if r["spec"]["seed"] == 0}
    assert len(seed0) == 1 and len([r for r in records if r["spec"]["seed"] == 0]) == 3

    status = gcd("status", str(path))
    assert status.exit_code == 0, status.output
    assert "4 done, 0 running, 0 failed, 0 stale, 0 pending" in _one_line(status.output)

    again = gcd("sweep", str(path), "-q")
    assert again.exit_code == 0 and "4 specs, 0 to run, 4 done" in _one_line(again.output)
    # The plan's spec is the one `gcdbench run` builds from the same request: same run id.
    run = gcd(
        *("run", "llm-cluster", "--preset", "smoke", "--llm", "oracle", "--ablate", "merge"),
        *("--encoder", "bag-of-words", "-d", "massive_scenario", "--known-ratio", "0.5", "-q"),
    )
    assert run.exit_code == 0 and "skipped" in run.output, run.output
    assert len(_records(gcd.results)) == 4


def test_a_failing_run_is_recorded_retried_and_a_changed_file_makes_it_stale(
    gcd, tmp_path, shared_data
):
    data = tmp_path / "data"
    shutil.copytree(shared_data / "massive_scenario", data / "massive_scenario")
    jsonl = data / "massive_scenario" / "small.jsonl"
    good = jsonl.read_bytes()
    jsonl.write_bytes(good + b"this row is not JSON\n")
    path = _write(tmp_path, FAST + KMEANS)

    failed = gcd("sweep", str(path), "-q", data=data)
    assert failed.exit_code == 1, failed.output
    assert not _records(gcd.results)
    [record] = [json.loads(p.read_text()) for p in (gcd.results / "failed").glob("*.json")]
    assert record["kind"] == "error" and record["attempts"] == 1
    assert record["reason"].startswith("DataError: ") and "not valid JSON" in record["reason"]
    assert record["spec"]["dataset"] == "massive_scenario"
    assert (gcd.results / record["traceback_file"]).read_text().startswith("Traceback")

    status = _one_line(gcd("status", str(path), data=data).output)
    assert "0 done, 0 running, 1 failed" in status
    assert "failed kmeans on massive_scenario kr=0.5 seed=0: DataError:" in status

    skipped = gcd("sweep", str(path), "-q", data=data)  # not retried without the flag
    assert skipped.exit_code == 1 and "1 failed (skipped; --retry-failed" in _one_line(
        skipped.output
    )
    assert json.loads(next((gcd.results / "failed").glob("*.json")).read_text())["attempts"] == 1

    jsonl.write_bytes(good)
    retried = gcd("sweep", str(path), "-q", "--retry-failed", data=data)
    assert retried.exit_code == 0, retried.output
    assert len(_records(gcd.results)) == 1 and not list((gcd.results / "failed").iterdir())
    assert "1 done, 0 running, 0 failed" in _one_line(gcd("status", str(path), data=data).output)

    # Other bytes in the data file: the same spec now has another run id.
    row = {"task": "x", "input": "wake me up at seven", "label": "alarm"}
    jsonl.write_bytes(good + (json.dumps(row) + "\n").encode())
    stale = _one_line(gcd("status", str(path), data=data).output)
    assert "0 done, 0 running, 0 failed, 1 stale, 0 pending" in stale
    assert "small.jsonl changed since the run" in stale
    rerun = gcd("sweep", str(path), "-q", data=data)
    assert rerun.exit_code == 0 and "1 to run" in _one_line(rerun.output)
    assert len(_records(gcd.results)) == 2  # the old record stays, under its own run id
    assert "1 done, 0 running, 0 failed, 0 stale" in _one_line(
        gcd("status", str(path), data=data).output
    )


HOLD = """
import sys
from pathlib import Path
from gcdbench.cli.sweep import expand
from gcdbench.runner.plan_file import load_plan
from gcdbench.runner.sweep_status import running_marker
[planned] = expand(load_plan(Path(sys.argv[1])))
with running_marker(Path(sys.argv[2]), planned.spec) as held:
    print("held" if held else "busy", flush=True)
    sys.stdin.read()
"""


def test_a_spec_another_process_runs_shows_running_and_is_left_alone(gcd, tmp_path):
    path = _write(tmp_path, FAST + KMEANS)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path), str(gcd.results)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert "0 done, 1 running" in _one_line(gcd("status", str(path)).output)
        swept = gcd("sweep", str(path), "-q")
        assert swept.exit_code == 0 and "1 running elsewhere (skipped)" in _one_line(swept.output)
        assert not _records(gcd.results)
    finally:
        holder.communicate("", timeout=60)  # it exits; the OS drops its lock
    assert "0 running, 0 failed, 0 stale, 1 pending" in _one_line(gcd("status", str(path)).output)
