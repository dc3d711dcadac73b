"""benchmarks/glean_break_even.py: which records are points and controls, and the paired
differences it reports (the figures in benchmarks/FEEDBACK.md come from it)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import RunSpec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import glean_break_even as be


def _record(
    method: str,
    seed: int,
    acc: float,
    llm: str | None = None,
    ablated: tuple[str, ...] = (),
    *,
    known: float = 0.25,
    answered: int = 60,
    params: dict[str, object] | None = None,
) -> ResultRecord:
    totals = {
        kind: {"feedback_accuracy": 0.5, "encoder_accuracy_answered": 0.25, "answered": answered,
               "asked": 60}
        for kind in be.KINDS
    }  # fmt: skip
    # The spec keeps what was typed (`--ablate llm`); the record, the expanded components.
    spec_ablations = ("llm",) if "llm" in ablated else ablated
    return ResultRecord(
        spec=RunSpec(
            method, "banking", known, seed, ablations=spec_ablations, llm=llm, params=params or {}
        ),
        metrics={"acc": acc},
        split={},
        data={},
        method={"version": "4", "ablated_components": sorted(ablated)},
        encoder=None,
        provenance={},
        diagnostics={"feedback_quality": {"totals": totals}} if llm else {},
    )


BOTH = ("cluster-instance", "instance-instance")


@pytest.mark.parametrize(
    ("ablated", "matched"),
    [(BOTH, True), (("llm", *BOTH), True), (("instance-instance",), False), ((), False)],
)
def test_the_matched_control_is_glean_with_both_feedback_kinds_off(ablated, matched):
    record = _record("glean", 0, 68.0, ablated=ablated)
    assert be._is_matched_control(record) is matched
    assert not be._is_control(record)  # that is no-llm's


def test_points_are_default_glean_runs_with_feedback():
    assert be._is_point(_record("glean", 0, 68.0, "noisy-oracle:0.5"))
    assert be._is_point(_record("glean", 0, 68.0, "llamacpp"))
    assert not be._is_point(_record("glean", 0, 68.0, "oracle", ("instance-instance",)))
    assert not be._is_point(_record("glean", 0, 68.0, "oracle", known=0.5))
    assert not be._is_point(_record("no-llm", 0, 68.0, "oracle"))


def test_rows_pair_each_seed_with_its_own_controls():
    points = [
        _record("glean", 0, 70.0, "noisy-oracle:0.5"),
        _record("glean", 1, 66.0, "noisy-oracle:0.5"),
        _record("glean", 0, 69.0, "oracle", answered=21),
        _record("glean", 0, 67.0, "llamacpp"),
    ]
    matched = {0: 68.0, 1: 67.0}
    no_llm = {0: 69.5}  # seed 1 has none: its difference is left out, not made up
    table = {row["label"]: row for row in be.rows(points, matched, no_llm)}
    half = table["0.5"]
    assert half["seeds"] == [0, 1] and half["acc"] == pytest.approx(68.0)
    assert half["diffs_matched"] == pytest.approx([2.0, -1.0])
    assert half["diffs_no_llm"] == pytest.approx([0.5])
    exact = table["oracle (abstains)"]
    assert exact["exact"] and exact["p"] == 1.0
    assert exact["select-category:answered"] == 21
    model = table["llamacpp (a model)"]
    assert model["p"] is None and not model["exact"]
    # simulated rows first, by P; the model's row last
    assert [row["label"] for row in be.rows(points, matched, no_llm)] == [
        "0.5", "oracle (abstains)", "llamacpp (a model)",
    ]  # fmt: skip
    text = be.markdown(be.rows(points, matched, no_llm), matched, no_llm)
    assert "| 0.5 | 4 | 0,1 | 68.00 ± 2.83 | +0.50 (+2.00, -1.00) | +0.50 |" in text


def test_a_run_away_from_the_defaults_is_a_row_of_its_own():
    v500 = {"query_samples": 500, "options": 5}  # options at its default: not a difference
    points = [
        _record("glean", 0, 70.0, "oracle"),
        _record("glean", 0, 71.0, "oracle", params=v500),
    ]
    table = be.rows(points, {0: 68.0}, {})
    assert [row["label"] for row in table] == [
        "oracle (abstains)", "oracle (abstains), -p query_samples=500",
    ]  # fmt: skip
    assert [row["diffs_matched"] for row in table] == [pytest.approx([2.0]), pytest.approx([3.0])]
    # A control must train at the defaults to be paired with them.
    assert not be._is_matched_control(_record("glean", 0, 68.0, ablated=BOTH, params={"epochs": 9}))
