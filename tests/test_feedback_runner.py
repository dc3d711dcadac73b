"""A feedback-asking method through `gcdbench run`: --llm, the record's feedback section."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
from click.testing import CliRunner

from gcdbench import hookimpl, registry
from gcdbench.api import GCDTask, Method, MethodOutput
from gcdbench.api.feedback import Query
from gcdbench.cli import cli
from gcdbench.runner.context import RunContext

FAST = ["--dataset", "massive_scenario", "--known-ratio", "0.5", "--seed", "0"]


@dataclass(frozen=True)
class AskingParams:
    questions: int = 40


class AskingMethod(Method):
    """Classifies test texts into the known classes by asking its feedback provider."""

    name = "test-asking"
    uses = ("feedback",)
    Params = AskingParams

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        labels = list(task.known_class_names)
        n = min(self.params.questions, len(task.test))
        queries = [
            Query(
                "classify-into-labels",
                {"text": task.test.texts[i], "labels": labels},
                {"id": i, "part": "test"},
            )
            for i in range(n)
        ]
        pool = [
            Query(
                "select-similar-instance",
                {"query": task.train.texts[0], "options": list(task.train.texts[1:4])},
                {"anchor": 0, "options": [1, 2, 3]},
            )
        ]
        answers = ctx.feedback.answer(queries + pool)
        assignments = np.zeros(len(task.test), dtype=np.int64)
        for i, answer in enumerate(answers[:n]):
            assignments[i] = answer.value if answer.ok else 0
        return MethodOutput(assignments)


class _Plugin:
    @hookimpl
    def register_methods(self, register):
        register(AskingMethod)


@pytest.fixture
def asking_method():
    registry.register_plugin(_Plugin(), "test-asking")
    yield
    registry.unregister_plugin("test-asking")


def _run(tmp_path, shared_data, *args):
    argv = [
        "run",
        *args,
        *FAST,
        "--results-dir",
        str(tmp_path / "r"),
        "--data-dir",
        str(shared_data),
    ]
    return CliRunner().invoke(cli, argv, catch_exceptions=False)


def _records(tmp_path):
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "r").rglob("record.json"))]


def test_oracle_run_records_simulated_feedback(tmp_path, shared_data, asking_method):
    result = _run(tmp_path, shared_data, "test-asking", "--llm", "oracle")
    assert result.exit_code == 0, result.output
    [record] = _records(tmp_path)
    assert record["spec"]["llm"] == "oracle"
    feedback = record["feedback"]
    assert feedback["provider"] == "oracle" and feedback["simulated"] is True
    kinds = feedback["stats"]["per_kind"]
    assert kinds["classify-into-labels"]["queries"] == 40
    assert kinds["select-similar-instance"]["queries"] == 1
    statuses = kinds["classify-into-labels"]["statuses"]
    # Known-class texts are answered; novel ones have no right label among the known names.
    assert set(statuses) <= {"ok", "no-correct-option"} and statuses.get("ok", 0) > 0

    result = _run(tmp_path, shared_data, "test-asking", "--llm", "noisy-oracle:0.5")
    assert result.exit_code == 0, result.output
    records = _records(tmp_path)
    assert len({r["spec_hash"] for r in records}) == 2
    noisy = next(r for r in records if r["spec"]["llm"] == "noisy-oracle:0.5")
    assert noisy["feedback"]["accuracy"] == {"*": 0.5}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["test-asking", "--llm", "orcale"], "Did you mean 'oracle'"),
        (["test-asking", "--llm", "noisy-oracle:2"], "probability in [0, 1]"),
        (
            ["test-asking", "--llm", "oracle", "--llm-option", "temperature=0.5"],
            "takes no --llm-option",
        ),
        (["test-asking", "--llm", "oracle", "--llm-budget", "ten"], "--llm-budget takes"),
        (["kmeans", "--llm", "oracle"], "asks no LLM feedback"),
    ],
)
def test_bad_llm_requests_fail_before_anything_runs(
    tmp_path, shared_data, asking_method, args, needle
):
    result = _run(tmp_path, shared_data, *args)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert not (tmp_path / "r").exists()


def test_non_llm_spec_hashes_do_not_move():
    from gcdbench.runner.run import resolve_spec

    spec = resolve_spec("kmeans", "banking", 0.25, 0)
    assert spec.llm is None and "feedback" not in spec.to_dict()


class TrustingMethod(AskingMethod):
    """Uses every answer's value without looking at its status: breaks on a failed answer."""

    name = "test-trusting"

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        labels = list(task.known_class_names)
        queries = [
            Query("classify-into-labels", {"text": t, "labels": labels}, {"id": i, "part": "test"})
            for i, t in enumerate(task.test.texts)
        ]
        values = [answer.value for answer in ctx.feedback.answer(queries)]
        return MethodOutput(np.asarray(values, dtype=np.int64) + 0)


def test_conformance_adds_a_failing_provider_check_for_methods_that_ask():
    from gcdbench.testing import ConformanceError, method_checks

    names = [check.__name__ for check in method_checks(AskingMethod)]
    assert "check_failing_feedback" in names
    assert "check_failing_feedback" not in [
        check.__name__ for check in method_checks(registry.get("method", "kmeans"))
    ]
    [check] = [c for c in method_checks(AskingMethod) if c.__name__ == "check_failing_feedback"]
    check()  # falls back where an answer is not ok: passes, every error counted
    [check] = [c for c in method_checks(TrustingMethod) if c.__name__ == "check_failing_feedback"]
    with pytest.raises(ConformanceError, match=r"fall back where `answer\.ok` is false"):
        check()
