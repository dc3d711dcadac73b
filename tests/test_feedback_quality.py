"""Feedback quality scored against gold: hand-built logs whose every figure is known."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gcdbench import hookimpl, registry
from gcdbench.api import GCDTask, Method, MethodOutput, ResultRecord, RunSpec
from gcdbench.api.feedback_log import CATEGORY, INSTANCE, ChoiceLog, DescriptionLog, FeedbackLog
from gcdbench.api.task import Gold
from gcdbench.cli import cli
from gcdbench.encoders.bag_of_words import BagOfWordsEncoder
from gcdbench.errors import GcdbenchError
from gcdbench.report.feedback_quality import cluster_majority, score_feedback_log
from gcdbench.runner.context import RunContext
from gcdbench.runner.run import RunOptions, execute, resolve_spec
from gcdbench.runner.store import ResultsStore, load_record

# 12 pool samples, 3 classes, 4 each.
GOLD = Gold(
    classes=("card_lost", "top_up", "refund"),
    class_names={"card_lost": "card_lost", "top_up": "top_up", "refund": "refund"},
    known_ids=np.array([0, 1]),
    train_y=np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]),
    test_y=np.array([0, 1, 2]),
)
# Cluster majorities: 0 -> class 0 (3 of 4); 1 -> class 1 (2 of 4); 2 = {7, 9} is a 1-1 tie
# between classes 1 and 2 -> class 1 (lowest id); 3 -> class 2; 4 has no members.
ASSIGNMENTS = np.array([0, 0, 0, 1, 0, 1, 1, 2, 1, 2, 3, 3])


def _instance_round_1() -> ChoiceLog:
    return ChoiceLog(
        kind=INSTANCE,
        round=1,
        anchors=[0, 4, 8, 9],
        # option labels: [0,1,2], [0,1,2], [0,0,0] (none right), [2,1,0]
        options=[[1, 4, 8], [0, 5, 9], [1, 2, 3], [10, 4, 0]],
        chosen=[0, 2, -1, 0],  # right, wrong, none, right
        statuses=["ok", "ok", "parse-failure", "low-confidence"],
        confidences=[0.9, 0.8, None, 0.3],
        encoder_choice=[1, 1, 0, 0],  # wrong, right, wrong, right
        used=[True, True, False, False],
    )


def _instance_round_2() -> ChoiceLog:
    return ChoiceLog(INSTANCE, 2, [1], [[2, 6]], [1], ["ok"], [0.7], [0], [True])


def _category_round_1() -> ChoiceLog:
    return ChoiceLog(
        kind=CATEGORY,
        round=1,
        anchors=[7, 9, 10],  # gold 1, 2, 2
        options=[[2, 0], [2, 3, 4], [4, 0]],  # majorities [1,0], [1,2,none], [none,0]
        chosen=[0, 0, 0],  # right (by the tie rule), wrong (by the tie rule), wrong (empty)
        statuses=["ok", "ok", "ok"],
        confidences=[0.9, 0.9, 0.9],
        encoder_choice=[1, 1, -1],  # wrong, right, none
        used=[True, True, True],
        assignments=ASSIGNMENTS,
    )


def _log(**kw) -> FeedbackLog:
    return FeedbackLog(
        choices=[_category_round_1(), _instance_round_2(), _instance_round_1()], **kw
    )


def _row(result: dict, kind: str, round_: int) -> dict:
    [row] = [r for r in result["rounds"] if r["kind"] == kind and r["round"] == round_]
    return row


def test_majority_ties_go_to_the_lowest_class_and_empty_clusters_have_none():
    assert cluster_majority(ASSIGNMENTS, GOLD.train_y, "t") == {0: 0, 1: 1, 2: 1, 3: 2}
    unassigned = ASSIGNMENTS.copy()
    unassigned[[3, 8]] = -1  # cluster 1 becomes {5, 6}: still class 1; -1 is not a cluster
    assert cluster_majority(unassigned, GOLD.train_y, "t") == {0: 0, 1: 1, 2: 1, 3: 2}


def test_instance_round_figures():
    row = _row(score_feedback_log(_log(), GOLD), INSTANCE, 1)
    assert (row["asked"], row["answered"], row["used"]) == (4, 3, 2)
    assert row["feedback_accuracy"] == 0.6667  # 2 of the 3 answered
    assert row["feedback_accuracy_used"] == 0.5  # 1 of the 2 used
    assert row["encoder_accuracy"] == 0.5  # 2 of 4 asked
    assert row["encoder_accuracy_answered"] == 0.6667  # 2 of the same 3 answered
    assert row["correct_available"] == 0.75
    assert row["statuses"]["ok"] == 2 and row["statuses"]["parse-failure"] == 1
    assert row["statuses"]["low-confidence"] == 1 and row["statuses"]["error"] == 0
    assert row["status_rates"]["ok"] == 0.5
    assert row["parse_failure_rate"] == 0.25
    assert row["fallback_rate"] == 0.5
    assert row["filtered_rate"] == 0.25  # the low-confidence one, answered but not used
    assert row["position_bias"] == [0.6667, 0.0, 0.3333]
    assert row["encoder_position_bias"] == [0.5, 0.5, 0.0]


def test_category_round_uses_pool_majority_with_the_tie_rule():
    row = _row(score_feedback_log(_log(), GOLD), CATEGORY, 1)
    assert (row["asked"], row["answered"], row["used"]) == (3, 3, 3)
    assert row["feedback_accuracy"] == 0.3333
    assert row["encoder_accuracy"] == 0.3333
    assert row["encoder_accuracy_answered"] == 0.3333
    assert row["correct_available"] == 0.6667
    assert row["fallback_rate"] == 0.0 and row["filtered_rate"] == 0.0
    assert row["position_bias"] == [1.0, 0.0, 0.0]
    assert row["encoder_position_bias"] == [0.0, 1.0, 0.0]  # the -1 is left out


def test_totals_pool_every_round_of_a_kind_and_rows_are_ordered():
    result = score_feedback_log(_log(), GOLD)
    assert [(r["round"], r["kind"]) for r in result["rounds"]] == [
        (1, CATEGORY),
        (1, INSTANCE),
        (2, INSTANCE),
    ]
    total = result["totals"][INSTANCE]
    assert (total["asked"], total["answered"], total["used"]) == (5, 4, 3)
    assert total["feedback_accuracy"] == 0.5
    assert total["feedback_accuracy_used"] == 0.3333
    assert total["encoder_accuracy"] == 0.6
    assert total["encoder_accuracy_answered"] == 0.75
    assert total["position_bias"] == [0.5, 0.25, 0.25]
    assert result["totals"][CATEGORY]["asked"] == 3
    assert "descriptions" not in result  # no descriptions logged, no encoder loaded
    json.loads(json.dumps(result))  # plain JSON, no numpy scalars


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"chosen": [0, 3, -1, 0]}, "only 3 options"),
        ({"anchors": [0, 4, 8, 12]}, "anchors outside the pool"),
        ({"options": [[1, 4, 8], [0, 5, 99], [1, 2, 3], [10, 4, 0]]}, "outside the pool"),
        ({"kind": "classify-into-labels"}, "unknown choice kind"),
    ],
)
def test_malformed_logs_fail_with_one_clear_message(change, needle):
    log = FeedbackLog(choices=[replace(_instance_round_1(), **change)])
    with pytest.raises(GcdbenchError, match=needle):
        score_feedback_log(log, GOLD)


def test_category_assignments_must_cover_the_pool():
    bad = replace(_category_round_1(), assignments=ASSIGNMENTS[:5])
    with pytest.raises(GcdbenchError, match="one cluster id per pool sample"):
        score_feedback_log(FeedbackLog(choices=[bad]), GOLD)


def test_descriptions_naming_every_class_cover_them_all():
    log = FeedbackLog(descriptions=[DescriptionLog(2, ["card lost", "top up", "refund"], 1)])
    desc = score_feedback_log(log, GOLD, describe_encoder=BagOfWordsEncoder())["descriptions"]
    assert desc["encoder"]["name"] == "bag-of-words" and desc["error"] is None
    [row] = desc["rounds"]
    assert row["coverage"] == 1.0 and row["classes_matched"] == 3
    assert row["mean_best_cosine"] == 1.0 and row["uniformity"] == 1.0
    assert row["fallbacks"] == 1


def test_identical_descriptions_cover_one_class():
    log = FeedbackLog(descriptions=[DescriptionLog(3, ["top up"] * 3)])
    desc = score_feedback_log(log, GOLD, describe_encoder=BagOfWordsEncoder)["descriptions"]
    [row] = desc["rounds"]
    assert row["coverage"] == 0.3333 and row["classes_matched"] == 1
    assert row["uniformity"] == 0.0 and row["informativeness"] == 0.0


def test_descriptions_are_scored_with_the_default_encoder_unless_told():
    replies = [
        "(Category Name: card lost, Description: the customer cannot find their card)",
        "(Category Name: top up, Description: adding money to the account)",
        "(Category Name: refund, Description: asking for money back for a purchase)",
    ]
    desc = score_feedback_log(FeedbackLog(descriptions=[DescriptionLog(2, replies)]), GOLD)
    desc = desc["descriptions"]
    assert desc["encoder"]["name"] == "all-MiniLM-L6-v2"
    assert desc["rounds"][0]["coverage"] == 1.0
    assert 0.3 < desc["rounds"][0]["mean_best_cosine"] < 1.0


def test_an_encoder_that_cannot_load_leaves_coverage_null_with_the_reason():
    def broken():
        raise OSError("model folder missing")

    log = FeedbackLog(descriptions=[DescriptionLog(2, ["refund"])])
    desc = score_feedback_log(log, GOLD, describe_encoder=broken)["descriptions"]
    assert desc["encoder"] is None and "model folder missing" in desc["error"]
    assert desc["rounds"][0]["coverage"] is None


# --- the run record and `gcdbench show` -----------------------------------------------------


def _store_record(tmp_path, diagnostics: dict) -> None:
    record = ResultRecord(
        spec=RunSpec("glean", "banking", 0.25, 0),
        metrics=dict.fromkeys(("acc", "ari", "nmi", "known_acc", "novel_acc", "h_score"), 50.0),
        split={},
        data={},
        method={},
        encoder=None,
        provenance={},
        diagnostics=diagnostics,
    )
    ResultsStore(tmp_path).write(record, pd.DataFrame({"cluster": [0]}))


def test_show_prints_feedback_tables_and_the_rest_of_diagnostics_once(tmp_path):
    log = _log(descriptions=[DescriptionLog(2, ["card lost", "top up", "refund"], 1)])
    quality = score_feedback_log(log, GOLD, describe_encoder=BagOfWordsEncoder())
    _store_record(tmp_path, {"feedback_quality": quality, "loss": 0.5, "per_query": [1] * 50})
    run_id = RunSpec("glean", "banking", 0.25, 0).hash[:10]
    args = ["show", run_id, "--results-dir", str(tmp_path), "--diagnostics"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "select-similar-instance feedback vs gold" in out
    assert "select-category feedback vs gold" in out
    assert "67/0/33" in out  # round 1 instance position bias, in whole %
    assert "66.7" in out and "33.3" in out
    assert "descriptions round 2" in out and "coverage 100.0%" in out
    assert '"loss": 0.5' in out and "<50 values" in out
    assert "encoder_position_bias" not in out  # the big block is not dumped as JSON


# --- through the runner --------------------------------------------------------------------


@dataclass(frozen=True)
class _NoParams:
    pass


class SelfChoosingMethod(Method):
    """Puts every test text in one cluster and logs questions whose first option is the
    anchor itself: feedback choosing it is right by construction, the encoder gave none."""

    name = "test-self-choosing"
    Params = _NoParams

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        anchors = list(range(10))
        log = ChoiceLog(
            INSTANCE,
            1,
            anchors,
            [[a, a + 1] for a in anchors],
            [0] * 10,
            ["ok"] * 10,
            [None] * 10,
            [-1] * 10,
            [True] * 10,
        )
        return MethodOutput(
            np.zeros(len(task.test), dtype=np.int64),
            diagnostics={"note": "kept"},
            feedback_log=FeedbackLog(choices=[log]),
        )


class _Plugin:
    @hookimpl
    def register_methods(self, register):
        register(SelfChoosingMethod)


def test_runner_scores_the_log_into_the_record(tmp_path, shared_data):
    registry.register_plugin(_Plugin(), "test-self-choosing")
    try:
        spec = resolve_spec(
            "test-self-choosing", "massive_scenario", 0.5, 0, encoder="bag-of-words"
        )
        options = RunOptions(results_dir=tmp_path / "r", data_dir=str(shared_data))
        record = load_record(Path(execute(spec, options).record_path))
    finally:
        registry.unregister_plugin("test-self-choosing")
    assert record.diagnostics["note"] == "kept"
    total = record.diagnostics["feedback_quality"]["totals"][INSTANCE]
    assert total["asked"] == 10 and total["feedback_accuracy"] == 1.0
    assert total["encoder_accuracy"] == 0.0 and total["correct_available"] == 1.0
    assert "feedback_quality" in record.provenance["durations_s"]
