"""The feedback bank and ``gcdbench feedback eval`` (issue 15): banks mined the way GLEAN
mines, hashed and cached without changing a bit; scores that follow from the answers; one
record per evaluation id; bad input stopped before anything is written; the ranking.

Runs use a 6-class slice of the real BANKING data, the smoke preset and the tiny random BERT,
so the questions are real texts and a bank builds in seconds; the scores of oracles are
checked against their definitions, never against fixed numbers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.api.feedback import NO_CORRECT_OPTION, OK, Answer
from gcdbench.cli import cli
from gcdbench.data.split import build_task, make_split
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.bank import CATEGORY, INSTANCE, Bank, BankQuestion
from gcdbench.feedback.bank_eval import ece, score_kind
from gcdbench.report.feedback_board import feedback_markdown
from gcdbench.runner.bank import BankParams, bank_path, build_bank
from tests.banking_slices import SlicePlugin, write_slices
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

SLICE = "banking-bank6"


@pytest.fixture(scope="module")
def root(shared_data, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bank-slices")
    write_slices(shared_data, folder, {SLICE: 6})
    registry.register_plugin(SlicePlugin({SLICE: 6}), "test-bank-slices")
    yield folder
    registry.unregister_plugin("test-bank-slices")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bank-results")


def _eval(root: Path, bert: Path, results: Path, *extra: str, size: int = 10) -> Any:
    args = [
        "feedback", "eval", "-d", SLICE, "--known-ratio", "0.5", "--preset", "smoke",
        "--size", str(size), "--encoder", str(bert), "--data-dir", str(root),
        "--results-dir", str(results), "--ledger", str(results / "ledger.sqlite"), "-q", *extra,
    ]  # fmt: skip
    return CliRunner().invoke(cli, args, catch_exceptions=False)


def _records(results: Path) -> dict[str, dict[str, Any]]:
    return {
        p.parent.name: json.loads(p.read_text())
        for p in sorted((results / "feedback").glob("*/*/record.json"))
    }


def _answers(record_dir: Path) -> list[dict[str, str]]:
    with open(record_dir / "answers.csv", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_oracle_is_right_wherever_a_right_option_exists(root, tiny_bert, results):  # noqa: F811
    outcome = _eval(root, tiny_bert, results, "--llm", "oracle")
    assert outcome.exit_code == 0, outcome.output
    (folder,) = [p.parent for p in (results / "feedback").glob("*/*/record.json")]
    record = json.loads((folder / "record.json").read_text())
    rows = _answers(folder)
    for kind in (INSTANCE, CATEGORY):
        s = record["kinds"][kind]
        mine = [r for r in rows if r["kind"] == kind]
        assert s["questions"] == len(mine) == 10
        solvable = [r for r in mine if json.loads(r["correct"])]
        assert s["answered"] == len(solvable) == round(s["ceiling"] * 10)
        if solvable:
            assert s["accuracy"] == 1.0
        encoder_right = sum(int(r["encoder_choice"]) in json.loads(r["correct"]) for r in mine)
        assert s["encoder_accuracy"] == encoder_right / 10
        # Kept answers are all right, so the fallback is right wherever either is.
        either = sum(
            bool(json.loads(r["correct"])) or int(r["encoder_choice"]) in json.loads(r["correct"])
            for r in mine
        )
        assert s["accuracy_with_fallback"] == either / 10
        assert s["gain"] == pytest.approx(s["accuracy_with_fallback"] - s["encoder_accuracy"])
    # The oracle's category descriptions were written from the clusters' representatives.
    assert len(record["descriptions"]) == 6


def test_a_noisy_oracle_scores_lower_under_its_own_id(root, tiny_bert, results):  # noqa: F811
    before = set(_records(results))
    outcome = _eval(root, tiny_bert, results, "--llm", "noisy-oracle:0.2")
    assert outcome.exit_code == 0, outcome.output
    new = {k: v for k, v in _records(results).items() if k not in before}
    assert len(new) == 1
    (record,) = new.values()
    accuracies = [record["kinds"][k]["accuracy"] for k in (INSTANCE, CATEGORY)]
    assert any(a is not None and a < 1.0 for a in accuracies)


def test_fusion_with_the_oracle_follows_it(root, tiny_bert, tmp_path):  # noqa: F811
    """Fitted on labeled questions, the fusion learns to trust a provider that is always
    right, and is never below the encoder on the bank."""
    outcome = _eval(root, tiny_bert, tmp_path, "--llm", "oracle", "--fusion")
    assert outcome.exit_code == 0, outcome.output
    (path,) = (tmp_path / "feedback").glob("*/*/record.json")
    record = json.loads(path.read_text())
    assert record["fusion"] is True and record["calibration_bank"]["bank_id"]
    for kind in (INSTANCE, CATEGORY):
        fused = record["kinds"][kind]["fusion"]
        if fused["fused_accuracy"] is None:
            continue  # the slice's calibration questions taught nothing for this kind
        assert fused["coefficients"]["provider_probability"] > 0
        assert fused["fused_accuracy"] >= fused["encoder_accuracy"]


def test_a_stored_evaluation_is_not_asked_again(root, tiny_bert, results):  # noqa: F811
    outcome = _eval(root, tiny_bert, results, "--llm", "oracle")
    assert outcome.exit_code == 0
    assert "already stored" in outcome.output
    records = _records(results)
    forced = _eval(root, tiny_bert, results, "--llm", "oracle", "--force")
    assert forced.exit_code == 0 and "wrote" in forced.output
    assert set(_records(results)) == set(records)
    assert not [
        p for p in (results / "feedback").rglob(".*") if p.name.startswith((".tmp", ".old"))
    ]


def test_the_bank_is_the_same_built_cold_or_read_warm(root, tiny_bert):  # noqa: F811
    params = BankParams.for_preset("smoke", 6)
    kwargs = {"encoder": str(tiny_bert), "params": params, "data_dir": str(root)}
    first = build_bank(SLICE, 0.5, 1, **kwargs, calibration=True)
    path = bank_path(dict(first.bank.source))
    assert path.is_file()
    warm = build_bank(SLICE, 0.5, 1, **kwargs, calibration=True)
    path.unlink()
    cold = build_bank(SLICE, 0.5, 1, **kwargs, calibration=True)
    assert first.bank.bank_id == warm.bank.bank_id == cold.bank.bank_id
    assert first.bank.to_dict() == cold.bank.to_dict()
    assert first.calibration is not None and cold.calibration is not None
    assert first.calibration.to_dict() == cold.calibration.to_dict()
    assert first.calibration.bank_id != first.bank.bank_id
    # Calibration questions are about labeled texts only, judged by their labels.
    definition = registry.get("dataset", SLICE)
    parts = definition.load(root / SLICE)
    split = make_split(parts, known_ratio=0.5, labeled_ratio=0.1, seed=1)
    task, _ = build_task(parts, split)
    instance = cold.calibration.questions[INSTANCE]
    assert instance
    for q in instance:
        assert q.anchor < task.num_labeled and max(q.options) < task.num_labeled
        same = [i for i, o in enumerate(q.options) if task.labeled_y[o] == task.labeled_y[q.anchor]]
        assert list(q.correct) == same
    # Another seed is another split, so another bank.
    other = build_bank(SLICE, 0.5, 2, **kwargs)
    assert other.bank.bank_id != first.bank.bank_id


def test_an_edited_bank_is_refused(root, tiny_bert, tmp_path):  # noqa: F811
    built = build_bank(
        SLICE,
        0.5,
        1,
        encoder=str(tiny_bert),
        params=BankParams.for_preset("smoke", 6),
        data_dir=str(root),
    )
    data = built.bank.to_dict()
    data["questions"][INSTANCE][0]["correct"] = [0, 1, 2]
    path = tmp_path / "bank.json"
    path.write_text(json.dumps(data))
    with pytest.raises(GcdbenchError, match="does not match its content"):
        Bank.load(path)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--ask", "orderings=0"), "orderings must be >= 1"),
        (("--ask", "colour=blue"), "--ask colour"),
        (("--ask", "min_confidence=high"), "--ask min_confidence"),
        (("--llm", "nosuch"), "nosuch"),
        (("--size", "0"), "--size"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(root, tiny_bert, tmp_path, extra, needle):  # noqa: F811
    outcome = _eval(root, tiny_bert, tmp_path / "r", *extra)
    assert outcome.exit_code == 2, outcome.output
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], outcome.stderr
    assert not (tmp_path / "r" / "feedback").exists()


def test_the_leaderboard_ranks_providers_by_gain(root, tiny_bert, results, tmp_path):  # noqa: F811
    records = list(_records(results).values())
    assert len(records) >= 2
    markdown = feedback_markdown(records)
    for kind in (INSTANCE, CATEGORY):
        section = markdown.split(f": {kind}\n", 1)[1].split("\n## ", 1)[0]
        rows = [line for line in section.splitlines() if line.startswith("| `")]
        gains = [float(row.split(" | ")[8]) for row in rows]
        assert gains == sorted(gains, reverse=True)
    outcome = CliRunner().invoke(
        cli, ["leaderboard", "--feedback", "--results-dir", str(results)], catch_exceptions=False
    )
    assert outcome.exit_code == 0 and "`oracle`" in outcome.output
    other = tmp_path / "notes.md"
    other.write_text("my notes\n")
    refused = CliRunner().invoke(
        cli, ["leaderboard", "--feedback", "--results-dir", str(results), "--out", str(other)]
    )
    assert refused.exit_code == 2 and other.read_text() == "my notes\n"


def test_scores_follow_from_the_answers():
    questions = [
        BankQuestion(0, (1, 2, 3), (0,), 0, (0.9, 0.5, 0.1)),  # encoder right
        BankQuestion(1, (1, 2, 3), (2,), 0, (0.9, 0.5, 0.1)),  # encoder wrong
        BankQuestion(2, (1, 2, 3), (), 1, (0.1, 0.9, 0.5)),  # nothing right
        BankQuestion(3, (1, 2, 3), (1,), 1, (0.1, 0.9, 0.5)),  # encoder right
    ]
    answers = [
        Answer(1, OK, confidence=0.9),  # kept, wrong, disagrees
        Answer(2, OK, confidence=0.9),  # kept, right, disagrees
        Answer(None, NO_CORRECT_OPTION),
        Answer(1, "low-confidence", confidence=0.5),  # answered, right, not kept
    ]
    s = score_kind(questions, answers, {"1": 1, "2": 2, "3": 0})
    assert s["answered"] == 3 and s["kept"] == 2
    assert s["accuracy"] == round(2 / 3, 4)
    assert s["accuracy_kept"] == 0.5 and s["coverage_kept"] == 0.5
    assert s["encoder_accuracy"] == 0.5
    # kept answers on questions 0 and 1 (wrong, right), the encoder on 2 and 3 (wrong, right)
    assert s["accuracy_with_fallback"] == 0.5 and s["gain"] == 0.0
    assert s["disagree"] == {"kept": 2, "feedback_right": 0.5, "encoder_right": 0.5}
    assert s["positions"] == {"1": round(1 / 3, 4), "2": round(2 / 3, 4), "3": 0.0}


def test_expected_calibration_error():
    assert ece([1.0, 1.0], [True, True]) == 0.0
    assert ece([0.95] * 4, [True, False, False, False]) == pytest.approx(0.7)
    assert ece([0.25, 0.95], [False, True]) == pytest.approx((0.25 + 0.05) / 2)
    assert ece([None], [True]) is None


def test_the_tiny_real_model_answers_through_the_ledger(root, tiny_bert, tmp_path):  # noqa: F811
    """smollm2-135m (in process, llama.cpp): a second evaluation asks the backend nothing."""
    extra = (
        "--llm", "llamacpp:smollm2-135m", "--kind", INSTANCE, "--describe", "texts",
        "--ask", "orderings=1",
    )  # fmt: skip
    first = _eval(root, tiny_bert, tmp_path, *extra, size=2)
    assert first.exit_code == 0, first.output
    (path,) = (tmp_path / "feedback").glob("*/*/record.json")
    before = json.loads(path.read_text())
    stats = before["provider"]["stats"]["per_kind"][INSTANCE]
    assert stats["backend_requests"] == 2 and stats["prompt_tokens"] > 0
    rows = _answers(path.parent)
    again = _eval(root, tiny_bert, tmp_path, *extra, "--force", size=2)
    assert again.exit_code == 0
    after = json.loads(path.read_text())
    assert after["provider"]["stats"]["per_kind"][INSTANCE]["backend_requests"] == 0
    assert _answers(path.parent) == rows
    assert after["kinds"][INSTANCE]["accuracy"] == before["kinds"][INSTANCE]["accuracy"]
