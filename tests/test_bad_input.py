"""Bad input stops before anything is written: one line naming the problem and the fix,
exit code 2, and no results or split folder left behind."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.api.method import Method, param, param_rule, param_schema
from gcdbench.cli import cli
from gcdbench.cli.common import count_ints, parse_int_ranges
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.resolve import DEFAULT_LLM, resolve_llm
from gcdbench.runner.executors import LocalExecutor, ProcessExecutor

BUILTIN_METHODS = ("kmeans", "mtp", "no-llm", "glean", "loop")
CHEAP = ["--encoder", "bag-of-words"]  # should a check slip, the run stays short


def _invoke(tmp_path: Path, data: Path, *args: str):
    results = tmp_path / "results"
    argv = ["run", *args, "--results-dir", str(results), "--data-dir", str(data)]
    return CliRunner().invoke(cli, argv, catch_exceptions=False), results


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def _nothing_written(results: Path) -> None:
    assert not (results / "splits").exists()
    assert not results.exists() or not [p for p in results.rglob("*") if p.is_file()]


BAD_ARGUMENTS = [
    # the cases
    (["kmeans", "-p", "n_init=0", *CHEAP], ["n_init", ">= 1", "got 0", "-p n_init="]),
    (["kmeans", "--workers", "-1", *CHEAP], ["--workers", "at least 1", "-1"]),
    (["kmeans", "--workers", "-1", "--executor", "processes"], ["--workers", "at least 1"]),
    (["kmeans", "--workers", "0", "--executor", "processes"], ["--workers", "at least 1"]),
    (["kmeans", "--seeds", "0-100000000"], ["100000001 runs", "--max-runs"]),
    (["kmeans", "--seed", ""], ["--seed", "empty"]),
    (["kmeans", "-d", ""], ["--dataset", "empty"]),
    (["kmeans", "-d", ","], ["--dataset", "empty"]),
    (["kmeans", "--known-ratio", ""], ["--known-ratio", "empty"]),
    (["glean", "--llm", ""], ["--llm", "names nothing"]),
    (["glean", "--llm", "openai:"], ["openai:", "names nothing after it", "gpt-4o-mini"]),
    # the other empty values
    (["kmeans", "--encoder", ""], ["--encoder is empty"]),
    (["glean", "--preset", ""], ["--preset is empty"]),
    (["kmeans", "--seeds", "0,,1"], ["--seed", "empty"]),
    (["glean", "--llm-budget", "", "--llm", "oracle"], ["--llm-budget is empty"]),
    # plan size, seeds and ratios
    (["kmeans", "--seeds", "0-2", "--max-runs", "2", *CHEAP], ["3 runs", "--max-runs 3"]),
    (["kmeans", "--max-runs", "0"], ["--max-runs must be at least 1"]),
    (["kmeans", "--seed", "-1"], ["--seed -1", "[0, 4294967295]"]),
    (["kmeans", "--seeds", "4294967296"], ["--seed 4294967296", "[0, 4294967295]"]),
    (["kmeans", "--seeds", "5-1"], ["runs backwards"]),
    (["kmeans", "--labeled-ratio", "0"], ["--labeled-ratio must be in (0, 1]"]),
    (["kmeans", "--labeled-ratio", "1.5"], ["--labeled-ratio must be in (0, 1]"]),
    (["kmeans", "--labeled-ratio", "nan"], ["--labeled-ratio must be in (0, 1]"]),
    (["kmeans", "--known-ratio", "nan"], ["--known-ratio must be in (0, 1]"]),
    # --llm specs
    (["glean", "--llm", "noisy-oracle:1.5"], ["noisy-oracle", "probability in [0, 1]"]),
    (["glean", "--llm", "noisy-oracle:"], ["noisy-oracle:0.8"]),
    (["glean", "--llm", "noisy-oracle:nan"], ["probability in [0, 1]"]),
    (["glean", "--llm", "oracle:"], ["drop the colon"]),
    (["glean", "--llm", "gpt4"], ["unknown LLM backend or feedback provider 'gpt4'"]),
    (["loop", "--llm", "llm:"], ["--llm", "names nothing"]),
    # method parameters: type, range, choices, unknown keys, presets, variants
    (["kmeans", "-p", "n_init=1.5"], ["n_init must be int", "got '1.5'"]),
    (["kmeans", "-p", "max_iter=-3"], ["max_iter must be >= 1", "got -3"]),
    (["kmeans", "-p", "normalize=maybe"], ["normalize must be bool"]),
    (["kmeans", "-p", "nosuch=1"], ["unknown parameter of method 'kmeans' 'nosuch'"]),
    (["kmeans", "-p", "=1"], ["--param takes KEY=VALUE"]),
    (["glean", "--preset", "nosuch"], ["unknown preset of method 'glean'", "smoke"]),
    (["kmeans", "--variant", "bad"], ["--variant", "'bad' is not one of"]),
    (["kmeans", "--variant", "official"], ["has no paper/official variant"]),
    (["kmeans", "--workers", "x"], ["--workers", "not a valid integer"]),
    (["no-llm", "-p", "mode=top-x"], ["unknown mode 'top-x'", "-p mode="]),
    (["no-llm", "-p", "mode=top-0"], ["unknown mode 'top-0'"]),
    (["no-llm", "-p", "precision=fp8"], ["unknown precision 'fp8'", "fp32"]),
    (["no-llm", "-p", "pooling=max"], ["unknown pooling 'max'"]),
    (["no-llm", "-p", "lr=nan"], ["lr must be float", "nan"]),
    (["no-llm", "-p", "epochs=0"], ["epochs must be >= 1"]),
    (["no-llm", "-p", "temperature=0"], ["temperature must be > 0"]),
    (["mtp", "-p", "mode=head"], ["trains nothing"]),
    (["glean", "-p", "category_ratio=0", "--llm", "oracle"], ["category_ratio", "(0, 1]"]),
    (["glean", "-p", "filter_threshold=1.5", "--llm", "oracle"], ["filter_threshold", "[0, 1]"]),
    (["glean", "-p", "sampling=nosuch", "--llm", "oracle"], ["unknown miner 'nosuch'", "entropy"]),
    (["glean", "-p", "options=100", "--llm", "oracle"], ["options = 100", "K = 77"]),
    (["loop", "--variant", "official", "-p", "options=3", "--llm", "oracle"], ["options=2"]),
    (["loop", "-p", "options=1", "--llm", "oracle"], ["options must be >= 2"]),
]


@pytest.mark.parametrize(("args", "needles"), BAD_ARGUMENTS, ids=lambda v: " ".join(v)[:60])
def test_bad_argument_stops_before_anything_is_written(tmp_path, shared_data, args, needles):
    result, results = _invoke(tmp_path, shared_data, *args)
    line = _one_error_line(result)
    for needle in needles:
        assert needle in line, line
    _nothing_written(results)


def test_missing_data_dir_fails_before_the_results_dir_is_made(tmp_path):
    result, results = _invoke(tmp_path, tmp_path / "nowhere", "kmeans", *CHEAP)
    assert "not an existing folder" in _one_error_line(result)
    assert not results.exists()


def test_boundary_values_still_run(tmp_path, shared_data):
    args = ["kmeans", "-d", "banking", "-p", "n_init=1", "-p", "max_iter=1", *CHEAP]
    result, results = _invoke(tmp_path, shared_data, *args, "--seed", "4294967295")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(p.read_text()) for p in results.rglob("record.json")]
    assert record["spec"]["params"] == {"n_init": 1, "max_iter": 1, "normalize": False}
    assert record["spec"]["seed"] == 2**32 - 1


def test_a_plan_exactly_at_max_runs_is_allowed(tmp_path, shared_data):
    fast = ["-d", "massive_scenario", "--known-ratio", "0.5", *CHEAP]
    result, results = _invoke(
        tmp_path, shared_data, "kmeans", *fast, "--seeds", "0-1", "--max-runs", "2"
    )
    assert result.exit_code == 0, result.output
    assert len(list(results.rglob("record.json"))) == 2


# -- the pieces behind the CLI -----------------------------------------------------------------


def test_seed_ranges_are_counted_without_being_expanded():
    ranges = parse_int_ranges(("0-100000000", "5,7", "100000001-100000002"), "--seed")
    assert ranges == [(0, 100000002)]
    assert count_ints(ranges) == 100000003
    assert parse_int_ranges(("3,1", "2", "9-10"), "--seed") == [(1, 3), (9, 10)]


@pytest.mark.parametrize("workers", [0, -1, True, 1.5])
def test_executors_refuse_bad_worker_counts(workers):
    for executor in (LocalExecutor, ProcessExecutor):
        with pytest.raises(GcdbenchError, match="--workers must be an integer of at least 1"):
            executor(workers=workers)
    assert ProcessExecutor(workers=1).workers == 1 and ProcessExecutor().workers is None


@pytest.mark.parametrize("method", BUILTIN_METHODS)
def test_every_builtin_parameter_declares_its_schema(method):
    cls = registry.get("method", method)
    for fld in dataclasses.fields(cls.Params):
        assert param_rule(fld).help, f"{method}: parameter {fld.name} has no help"
    for preset in [None, *cls.presets]:
        cls.resolve_params(preset, {})  # defaults and every preset pass their own schema
    schema = {entry["name"]: entry for entry in param_schema(cls.Params)}
    assert set(schema) == {f.name for f in dataclasses.fields(cls.Params)}


def test_schema_values_for_display():
    schema = {e["name"]: e for e in param_schema(registry.get("method", "glean").Params)}
    assert schema["filter_threshold"]["range"] == {"ge": 0, "le": 1}
    assert schema["filter_threshold"]["allowed"] == "[0, 1]"
    assert schema["variant"]["choices"] == ["paper", "official"]
    assert schema["mode"]["allowed"].startswith("full")
    assert schema["sampling"]["allowed"] == "a registered miner"
    assert schema["options"]["type"] == "int" and schema["options"]["default"] == 5


def test_list_methods_shows_the_schema_on_request():
    runner = CliRunner()
    compact = runner.invoke(cli, ["list", "methods"])
    assert compact.exit_code == 0 and "K-means restarts" not in compact.output
    shown = runner.invoke(cli, ["list", "methods", "kmeans", "--params"], terminal_width=200)
    assert shown.exit_code == 0 and "K-means restarts" in shown.output and ">= 1" in shown.output
    data = json.loads(runner.invoke(cli, ["list", "methods", "glean", "--params", "--json"]).output)
    assert [row["name"] for row in data] == ["glean"]
    assert {e["name"] for e in data[0]["schema"]} >= {"options", "mode", "variant"}
    wrong = runner.invoke(cli, ["list", "datasets", "--params"])
    assert "--params applies to methods and refiners" in _one_error_line(wrong)


@dataclass(frozen=True)
class _OptionalParams:
    limit: int | None = param(None, ge=1, help="an optional cap")
    scale: float = param(1.0, gt=0, help="a positive scale")


class _Optional(Method):
    name = "optional-params"
    Params = _OptionalParams

    def run(self, task, ctx):  # pragma: no cover - never run
        raise NotImplementedError


def test_optional_int_parameters_coerce_and_validate():
    assert _Optional.resolve_params(None, {}).limit is None
    assert _Optional.resolve_params(None, {"limit": "none"}).limit is None
    assert _Optional.resolve_params(None, {"limit": "3"}).limit == 3
    assert _Optional.resolve_params(None, {"scale": "2"}).scale == 2.0
    with pytest.raises(GcdbenchError, match=r"limit must be >= 1, got 0; e\.g\. -p limit=1"):
        _Optional.resolve_params(None, {"limit": "0"})
    with pytest.raises(GcdbenchError, match=r"limit must be int \| None, got 'x'"):
        _Optional.resolve_params(None, {"limit": "x"})
    with pytest.raises(GcdbenchError, match="scale must be > 0"):
        _Optional.resolve_params(None, {"scale": "-1"})


def test_valid_llm_specs_keep_their_canonical_strings():
    backend = registry.get("llm", DEFAULT_LLM)
    assert resolve_llm(None) == f"{DEFAULT_LLM}:{backend.default_model}"
    assert resolve_llm("llamacpp") == resolve_llm(None)
    assert resolve_llm("openai:gpt-4o-mini") == "openai:gpt-4o-mini"
    assert resolve_llm("noisy-oracle:0.8") == "noisy-oracle:0.8"
    assert resolve_llm("oracle") == "oracle"
    assert resolve_llm("llm:openai:gpt-4o-mini", {"temperature": "0.5"}) == (
        "openai:gpt-4o-mini;temperature=0.5"
    )
