"""The method contract's newer declarations: the query kinds a method asks (``asks``,
shown by ``gcdbench list methods`` and checked by conformance), the one-kind-per-batch
``gcdbench.api.asking.ask``, and ``--refine``'s place in the run identity (absent when
unused, so the ids of unrefined runs do not move)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.api import GCDTask, Method, MethodOutput, Query, RunContext
from gcdbench.api.asking import ask
from gcdbench.api.feedback_log import FeedbackLog
from gcdbench.api.spec import RunSpec
from gcdbench.cli import cli
from gcdbench.errors import GcdbenchError
from gcdbench.testing import ConformanceError, _context, method_checks, tiny_task

sys.path.insert(0, str(Path(__file__).parent / "plugins"))
import same_category


@pytest.fixture
def pairwise_plugin():
    registry.register_plugin(same_category, "test-same-category-contract")
    yield
    registry.unregister_plugin("test-same-category-contract")


def test_list_methods_shows_the_kinds_each_method_asks():
    rows = json.loads(CliRunner().invoke(cli, ["list", "methods", "--json"]).output)
    asks = {row["name"]: row["asks"] for row in rows}
    assert asks["glean"] == ["select-similar-instance", "select-category", "characterize-cluster"]
    assert asks["loop"] == ["select-similar-instance", "characterize-cluster"]
    assert asks["kmeans"] == []
    registered = set(registry.names("query-kind"))
    for row in rows:  # every declared kind is one a plugin registers
        assert set(row["asks"]) <= registered, row["name"]
        if "feedback" in row["uses"]:
            assert row["asks"], f"{row['name']} asks feedback but declares no kind"


def test_a_spec_without_refine_keeps_its_dict_and_hash():
    plain = RunSpec("kmeans", "banking", 0.25, 0)
    assert not {"refine", "refine_params", "refine_version"} & set(plain.to_dict())
    assert RunSpec.from_dict(plain.to_dict()).hash == plain.hash
    refined = plain.with_(refine="silr", refine_params={"iterations": 2}, refine_version="1")
    assert refined.hash != plain.hash
    assert RunSpec.from_dict(refined.to_dict()) == refined
    assert refined.label == "kmeans +silr"


def test_refine_param_without_refine_is_one_line(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["run", "kmeans", "--refine-param", "iterations=2", "--results-dir", str(tmp_path / "r")],
    )
    assert result.exit_code == 2
    assert "--refine-param needs --refine" in result.output
    assert not (tmp_path / "r").exists()


def test_ask_takes_one_kind_per_batch():
    queries = [Query("a", {"x": 1}), Query("b", {"x": 2})]
    with pytest.raises(GcdbenchError, match="one kind per batch"):
        ask(None, queries)  # type: ignore[arg-type]  # refused before the context is used


def test_ask_logs_the_batch(pairwise_plugin):
    task, gold, parts = tiny_task(0)
    method_cls = registry.get("method", "same-category-demo")
    params = method_cls.resolve_params(None, {"questions": 3})
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _context(method_cls, params, 0, parts, None, Path(tmp), gold, "oracle")
        queries = [
            Query(
                "same-category",
                {"first": task.test.texts[i], "second": task.test.texts[i + 1]},
                {"first": i, "second": i + 1, "part": "test"},
            )
            for i in range(3)
        ]
        log = FeedbackLog()
        asked = ask(ctx, queries, log=log, encoder_values=[None, None, None])
        ctx.feedback.close()
    assert log.asked == [asked] and len(asked.answers) == 3
    assert all(a.ok for a in asked.answers)


class _Undeclared(Method):
    """Asks a kind it does not declare in ``asks``."""

    name = "undeclared-asker"
    uses = ("encoder", "feedback")
    asks = ("select-similar-instance",)

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        log = FeedbackLog()
        query = Query(
            "same-category",
            {"first": task.test.texts[0], "second": task.test.texts[1]},
            {"first": 0, "second": 1, "part": "test"},
        )
        ask(ctx, [query], log=log)
        return MethodOutput(np.zeros(len(task.test), dtype=np.int64), feedback_log=log)


def test_conformance_catches_an_undeclared_kind(pairwise_plugin):
    checks = {c.__name__: c for c in method_checks(_Undeclared)}
    with pytest.raises(ConformanceError, match="which `asks` does not list"):
        checks["check_output"]()


def test_conformance_requires_labeled_assignments_of_pseudo_labellers():
    class Labeller(Method):
        name = "labeller-without-labeled"
        uses = ("encoder",)
        pseudo_labels = True

        def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
            return MethodOutput(np.zeros(len(task.test), dtype=np.int64))

    checks = {c.__name__: c for c in method_checks(Labeller)}
    with pytest.raises(ConformanceError, match="must return labeled_assignments"):
        checks["check_pseudo_labels"]()
