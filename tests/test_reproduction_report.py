"""benchmarks/reproduction.py on real smoke runs: the plan runs through the runner, and the
report's tables hold the right rows with mean±std computed from the records' metrics."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from gcdbench.api.record import ResultRecord
from gcdbench.runner.store import ResultsStore, load_record
from tests import training_fixtures

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import reproduction
import reproduction_tables

tiny_bert = training_fixtures.tiny_bert  # shared fixture


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory, shared_data, tiny_bert) -> tuple[Path, list[str]]:
    """GLEAN (oracle) seeds 0 and 1 and the no-LLM control seed 0, smoke preset."""
    results = tmp_path_factory.mktemp("repro")
    common = ["--llm", "oracle", "--preset-override", "smoke", "--encoder", str(tiny_bert)]
    # Head mode (no MTP, cached pooled features): the tables, not the training, are tested.
    common += ["-p", "mode=head", "--datasets", "banking", "--results-dir", str(results)]
    with pytest.MonkeyPatch.context() as env:
        # Module fixtures start before conftest's per-test cache isolation; isolate here too.
        env.setenv("GCDBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "gcdbench-cache"))
        env.setenv("GCDBENCH_DATA", str(shared_data))
        for methods, seeds in (("glean", "0-1"), ("no-llm", "0")):
            argv = ["run", "--config", "a", "--methods", methods, "--seeds", seeds, *common]
            assert reproduction.main(argv) == 0
    return results, common


def _report(results: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert reproduction.main(["report", "--results-dir", str(results)]) == 0
    return capsys.readouterr().out


def _section(text: str, title: str) -> str:
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def _metrics(results: Path, method: str) -> list[dict[str, float]]:
    paths = sorted((results / "runs" / "banking" / method).glob("*/record.json"))
    return [json.loads(p.read_text())["metrics"] for p in paths]


def test_main_table_rows_and_mean_std_from_records(smoke_results, capsys):
    results, _ = smoke_results
    main = _section(_report(results, capsys), "Main results")
    glean, control = _metrics(results, "glean"), _metrics(results, "no-llm")
    assert len(glean) == 2 and len(control) == 1
    cells = []
    for metric in ("acc", "ari", "nmi"):
        values = np.array([m[metric] for m in glean])
        cells.append(f"{values.mean():.2f}±{values.std(ddof=1):.2f}")
    assert f"| glean | banking | 0,1 | {' | '.join(cells)} |" in main
    single = " | ".join(f"{control[0][m]:.2f} (n=1)" for m in ("acc", "ari", "nmi"))
    # The control asks no feedback, yet it sits in the oracle configuration's table.
    assert f"| no-llm | banking | 0 | {single} |" in main
    assert main.count("### ") == 1
    assert "| GLEAN (paper) | banking | – | 76.98 | 66.00 | 85.62 | – |" in main


def test_feedback_and_cost_tables(smoke_results, capsys):
    results, _ = smoke_results
    text = _report(results, capsys)
    quality = _section(text, "Feedback quality")
    for kind in ("select-similar-instance", "select-category", "characterize-cluster"):
        assert f"| glean | banking | {kind} | 0,1 |" in quality
    assert "| no-llm |" not in quality  # no questions, no quality row
    cost = _section(text, "Cost per run")
    rows = [line for line in cost.splitlines() if line.startswith(("| glean", "| no-llm"))]
    assert len(rows) == 3
    record = load_record(next((results / "runs" / "banking" / "glean").glob("*/record.json")))
    queries = record.feedback["stats"]["per_kind"]["select-similar-instance"]["queries"]
    assert queries > 0 and f"instance {queries}" in cost
    assert "## Ablation" in text and "| glean w/o" not in text  # no ablated runs yet


def test_printed_command_reproduces_the_specs(smoke_results, capsys):
    results, _ = smoke_results
    main = _section(_report(results, capsys), "Main results")
    (command,) = [line.strip("`") for line in main.splitlines() if "reproduction.py run" in line]
    assert "--methods glean,no-llm" in command and "--seeds 0,1" in command
    argv = shlex.split(command)[2:]  # drop "python benchmarks/reproduction.py"
    planned = {spec.hash for spec in reproduction.plan(reproduction.parser().parse_args(argv))}
    recorded = {r.spec.hash for r in ResultsStore(results).records()}
    assert recorded <= planned  # the plan adds no-llm seed 1, never a different spec


def test_ablation_delta_and_paper_reference(smoke_results):
    results, _ = smoke_results
    full = [r for r in ResultsStore(results).records() if r.spec.method == "glean"]
    # The same runs relabelled as "w/o cluster-instance" with ACC 3 points lower.
    ablated = [
        ResultRecord.from_dict(
            {
                **r.to_dict(),
                "spec": r.spec.with_(ablations=("cluster-instance",)).to_dict(),
                "metrics": {**r.metrics, "acc": r.metrics["acc"] - 3.0},
            }
        )
        for r in full
    ]
    key = reproduction_tables.config_key(full[0])
    lines = reproduction_tables.ablation_table([*full, *ablated], key)
    (row,) = [line for line in lines if line.startswith("| glean w/o cluster-instance")]
    assert row.endswith("| -3.00 | 73.75 | -3.23 |")
    assert any(line.startswith("| glean | banking |") and "76.98" in line for line in lines)


def test_mean_std_format():
    assert reproduction_tables.mean_std([1.0, 2.0, 3.0]) == "2.00±1.00"
    assert reproduction_tables.mean_std([5.0]) == "5.00 (n=1)"
    assert reproduction_tables.mean_std([]) == "–"


def test_bad_plans_stop_with_one_line(tmp_path, capsys):
    no_glean = ["run", "--config", "b", "--methods", "loop", "--ablations"]
    assert reproduction.main([*no_glean, "--results-dir", str(tmp_path)]) == 2
    assert "add glean to --methods" in capsys.readouterr().err
    unknown = ["run", "--config", "b", "--methods", "loop", "-p", "glean.epochs=1"]
    assert reproduction.main([*unknown, "--results-dir", str(tmp_path)]) == 2
    assert "'glean' is not in --methods" in capsys.readouterr().err
    assert reproduction.main(["report", "--results-dir", str(tmp_path)]) == 2
    assert "no run records" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
