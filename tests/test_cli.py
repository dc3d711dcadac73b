"""The command line as a user meets it: exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench.cli import cli

FAST = ["--dataset", "massive_scenario", "--known-ratio", "0.5", "--encoder", "bag-of-words"]


@pytest.fixture
def gcd(tmp_path, shared_data):
    """Invoke ``gcdbench`` in-process against the shared data and a fresh results store."""
    results = tmp_path / "results"

    def invoke(*args: str, data: Path | None = shared_data, results_dir: Path = results):
        argv = list(args)
        if argv and argv[0] in {"run", "show", "leaderboard"}:
            argv += ["--results-dir", str(results_dir)]
        if argv and argv[0] == "run" and data is not None:
            argv += ["--data-dir", str(data)]
        return CliRunner().invoke(cli, argv, catch_exceptions=False)

    invoke.results = results
    return invoke


def _assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    for needle in needles:
        assert needle in errors[0]


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["run", "kmean"], ["unknown method 'kmean'", "Did you mean 'kmeans'"]),
        (["run", "kmeans", "--dataset", "bankng"], ["unknown dataset", "'banking'"]),
        (["run", "kmeans", "--ablate", "x"], ["declares no components", "drop --ablate"]),
        (["run", "kmeans", "--known-ratio", "1.5"], ["--known-ratio must be in (0, 1]"]),
        (["run", "kmeans", "--known-ratio", "0"], ["--known-ratio must be in (0, 1]"]),
        (["run", "kmeans", "--labeled-ratio", "-0.1"], ["--labeled-ratio"]),
        (["run", "kmeans", "--param", "n_init=ten"], ["must be int", "n_init"]),
        (["run", "kmeans", "--param", "ninit=3"], ["Did you mean 'n_init'"]),
        (["run", "kmeans", "--encoder", "minilm"], ["unknown encoder"]),
        (["run", "kmeans", "--preset", "cpu"], ["declares no presets"]),
        (["run", "kmeans", "--executor", "slurm"], ["unknown executor"]),
        (["run", "kmeans", "--seed", "x"], ["--seed takes integers"]),
        (["list", "method"], ["Did you mean 'methods'"]),
    ],
)
def test_bad_requests_fail_before_anything_is_written(gcd, args, needles):
    _assert_user_error(gcd(*args), *needles)
    assert not gcd.results.exists()


def test_known_ratio_without_known_classes(gcd):
    result = gcd("run", "kmeans", "--dataset", "stackoverflow", "--known-ratio", "0.02")
    _assert_user_error(result, "yields no known class", "20 classes")
    assert not list(gcd.results.rglob("record.json"))


def test_missing_data_dir(gcd, tmp_path):
    result = gcd("run", "kmeans", data=tmp_path / "nowhere")
    _assert_user_error(result, "nowhere", "not an existing folder")
    assert not list(gcd.results.rglob("*.json"))


def test_malformed_data_is_reported_with_its_line(gcd, tmp_path, shared_data):
    data = tmp_path / "data"
    shutil.copytree(shared_data / "banking", data / "banking")
    with open(data / "banking" / "train.tsv", "a", encoding="utf-8") as fh:
        fh.write("a row without a label\n")
    result = gcd("run", "kmeans", "--encoder", "bag-of-words", data=data)
    _assert_user_error(result, "train.tsv", "line")
    assert not list(gcd.results.rglob("*.json"))


def test_unwritable_results_dir(gcd, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = gcd("run", "kmeans", *FAST, results_dir=blocker / "results")
    _assert_user_error(result, "not writable", "--results-dir")


def test_three_seeds_to_a_leaderboard(gcd, tmp_path):
    result = gcd("run", "kmeans", *FAST, "--seeds", "0-2")
    assert result.exit_code == 0, result.output
    assert result.output.count(" done ") == 3 or result.output.count("done") >= 3
    records = sorted(gcd.results.rglob("record.json"))
    assert len(records) == 3

    again = gcd("run", "kmeans", *FAST, "--seeds", "0,1,2")
    assert again.exit_code == 0 and again.output.count("skipped") >= 3

    board = tmp_path / "board.md"
    result = gcd("leaderboard", "--out", str(board))
    assert result.exit_code == 0, result.output
    text = board.read_text()
    accs = [json.loads(p.read_text())["metrics"]["acc"] for p in records]
    import numpy as np

    cell = f"{np.mean(accs):.2f}±{np.std(accs, ddof=1):.2f}"
    assert cell in text and "## Known-class ratio 50%" in text
    row = next(line for line in text.splitlines() if line.startswith("| kmeans"))
    assert "| 3 |" in row

    run_id = json.loads(records[0].read_text())["run_id"][:10]
    shown = gcd("show", run_id)
    assert shown.exit_code == 0 and "known ratio 0.5" in shown.output
    listing = gcd("show")
    assert listing.output.count("kmeans") >= 3


def test_list_and_plugins_commands(gcd):
    methods = gcd("list", "methods", "--json")
    assert methods.exit_code == 0
    kmeans = next(m for m in json.loads(methods.output) if m["name"] == "kmeans")
    assert kmeans["uses"] == ["encoder"] and kmeans["params"]["n_init"] == 10
    plugins = json.loads(gcd("plugins", "--json").output)
    assert {"builtin-kmeans", "builtin-datasets"} <= {p["name"] for p in plugins}
    datasets = gcd("list", "datasets").output
    for name in ("banking", "clinc", "stackoverflow", "mtop_intent"):
        assert name in datasets


@pytest.fixture
def mirror(shared_data):
    """A real HTTP server on 127.0.0.1 serving the data folder as <name>/<file>."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_first_use_downloads_into_the_cache(gcd, tmp_path, monkeypatch, mirror):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GCDBENCH_CACHE", str(cache))
    monkeypatch.delenv("GCDBENCH_DATA", raising=False)
    monkeypatch.setenv("GCDBENCH_DATA_MIRROR", mirror)
    result = gcd("run", "kmeans", *FAST, data=None)
    assert result.exit_code == 0, result.output
    assert (cache / "data" / "massive_scenario" / "small.jsonl").is_file()
    record = json.loads(next(gcd.results.rglob("record.json")).read_text())
    assert record["data"]["data_root_origin"] == "cache"
    assert record["data"]["files"][0]["verified"] is True


def test_data_download_command(tmp_path, mirror):
    target = tmp_path / "data"
    target.mkdir()
    args = ["data", "download", "banking", "--data-dir", str(target), "--mirror", mirror]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (target / "banking").iterdir()) == [
        "dev.tsv",
        "test.tsv",
        "train.tsv",
    ]


def test_modified_data_is_flagged(gcd, tmp_path, shared_data):
    data = tmp_path / "data"
    shutil.copytree(shared_data / "massive_scenario", data / "massive_scenario")
    with open(data / "massive_scenario" / "small.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"task": "x", "input": "wake me up at seven", "label": "alarm"}\n')
    result = gcd("run", "kmeans", *FAST, data=data)
    assert result.exit_code == 0, result.output
    assert "differs from the published file" in " ".join(result.stderr.split())
    record = json.loads(next(gcd.results.rglob("record.json")).read_text())
    assert record["data"]["files"] == [
        {"name": "small.jsonl", "sha256": record["data"]["files"][0]["sha256"], "verified": False}
    ]


@pytest.mark.parametrize(("executor", "seeds"), [("processes", [7, 8]), ("ray", [20, 21])])
def test_parallel_executors_run_a_plan(gcd, executor, seeds):
    if executor == "ray":
        pytest.importorskip("ray")
    plan = ",".join(map(str, seeds))
    result = gcd("run", "kmeans", *FAST, "--seeds", plan, "--executor", executor, "--workers", "2")
    assert result.exit_code == 0, result.output
    written = sorted(
        json.loads(p.read_text())["spec"]["seed"] for p in gcd.results.rglob("record.json")
    )
    assert written == seeds


def test_a_crashing_run_does_not_stop_the_plan(gcd, monkeypatch):
    from gcdbench_builtins import kmeans

    real_run = kmeans.KMeans.run

    def flaky(self, task, ctx):
        if ctx.seed == 11:
            raise RuntimeError("boom")
        return real_run(self, task, ctx)

    monkeypatch.setattr(kmeans.KMeans, "run", flaky)
    result = gcd("run", "kmeans", *FAST, "--seeds", "10-12")
    assert result.exit_code == 1
    assert "crashed" in result.stderr and "RuntimeError: boom" in result.stderr
    seeds = sorted(
        json.loads(p.read_text())["spec"]["seed"] for p in gcd.results.rglob("record.json")
    )
    assert seeds == [10, 12]


def test_help_lists_every_subcommand_though_they_load_on_demand():
    result = CliRunner().invoke(cli, ["--help"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1].split()
    for command in ("data", "leaderboard", "list", "llm", "plugins", "run", "show"):
        assert command in listed, result.output


def test_a_mistyped_subcommand_gets_a_suggestion():
    result = CliRunner().invoke(cli, ["shwo"], catch_exceptions=False)
    _assert_user_error(result, "No such command 'shwo'", "Did you mean 'show'?")
