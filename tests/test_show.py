"""``gcdbench show``: one run on one screen, the rest behind flags; a run list that never cuts
run ids; and the cluster table ``gcdbench run`` prints after a run that named its clusters."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from rich.console import Console

from gcdbench import registry
from gcdbench.api.feedback_log import CATEGORY, INSTANCE
from gcdbench.api.method import params_dict
from gcdbench.api.record import ResultRecord
from gcdbench.api.spec import RunSpec
from gcdbench.cli import cli, common
from gcdbench.cli.show import ID_CHARS, _run_id, print_clusters
from gcdbench.runner.store import ResultsStore, load_record

#: The default GLEAN run (README's main job): BANKING, K = 77, two rounds, 3080 test texts.
K, ROUNDS, TEST = 77, 2, 3080
SCREEN = 60


def _quality_row(asked: int) -> dict[str, Any]:
    statuses = {"ok": asked - 9, "inconsistent": 6, "low-confidence": 2, "parse-failure": 1}
    return {
        "answered": asked - 1,
        "asked": asked,
        "correct_available": 0.8667,
        "encoder_accuracy": 0.3,
        "encoder_accuracy_answered": 0.3103,
        "encoder_position_bias": [0.4, 0.2, 0.2, 0.1, 0.1],
        "fallback_rate": 0.3,
        "feedback_accuracy": 0.1724,
        "feedback_accuracy_used": 0.2,
        "filtered_rate": 0.2667,
        "parse_failure_rate": 0.0333,
        "position_bias": [0.1034, 0.069, 0.0345, 0.3793, 0.4138],
        "status_rates": {k: round(v / asked, 4) for k, v in statuses.items()},
        "statuses": statuses,
        "used": asked - 9,
    }


def _feedback_quality() -> dict[str, Any]:
    kinds = (CATEGORY, INSTANCE)
    return {
        "rounds": [
            {"kind": kind, "round": r, **_quality_row(30)} for r in range(ROUNDS) for kind in kinds
        ],
        "totals": {kind: _quality_row(30 * ROUNDS) for kind in kinds},
        "descriptions": {
            "encoder": {"name": "all-MiniLM-L6-v2"},
            "error": None,
            "num_classes": K,
            "rounds": [
                {
                    "classes_matched": 41,
                    "coverage": 0.5325,
                    "descriptions": K,
                    "fallbacks": 3,
                    "informativeness": 0.31,
                    "mean_best_cosine": 0.6123,
                    "round": r,
                    "uniformity": 0.9012,
                }
                for r in range(ROUNDS)
            ],
        },
    }


def _diagnostics() -> dict[str, Any]:
    epochs = [
        {"epoch": e, "steps": 141, "loss": {"ncl": 2.9, "ce": 1.2, "align": 0.2}, "lr_end": 1e-5}
        for e in range(3)
    ]
    rounds = [
        {
            "round": r,
            "plan": {"anchors": 30, INSTANCE: {"asked": 30, "used": 21}},
            "cluster_sizes": {"min": 12, "max": 190},
            "durations_s": {"extract": 40.1, "cluster": 3.2, "hook": 1450.3},
            "epochs": epochs,
        }
        for r in range(ROUNDS)
    ]
    training = {
        "backbone": {"ref": "all-MiniLM-L6-v2", "weights_sha256": "ab" * 32},
        "pretrain": {"dev_acc": [0.5 + i / 100 for i in range(30)], "best_epoch": 21},
        "deviations": ["a deviation explained in a long sentence " * 3],
    }
    return {
        "feedback_quality": _feedback_quality(),
        "training": training,
        "rounds": rounds,
        "glean": {"variant": "paper", "orderings": 2, "min_confidence": 0.8},
    }


def _clusters() -> list[dict[str, Any]]:
    return [
        {
            "id": c,
            "name": f"Card payment problems of kind {c} with a rather long generated name",
            "description": "Texts about a card payment that was declined, charged twice or "
            f"not shown in the app, variant {c}, described at length by the LLM.",
        }
        for c in range(K)
    ]


def write_glean_run(root: Path, *, clusters: list[dict[str, Any]] | None = None) -> Path:
    """A record shaped like the default GLEAN run's, with its predictions file."""
    params = params_dict(registry.get("method", "glean").resolve_params(None, {}))
    spec = RunSpec(
        method="glean", dataset="banking", known_ratio=0.25, seed=0, llm="llamacpp", params=params
    )
    record = ResultRecord(
        spec=spec,
        metrics={
            "acc": 61.2,
            "ari": 48.9,
            "nmi": 80.1,
            "known_acc": 70.0,
            "novel_acc": 58.0,
            "h_score": 63.4,
        },
        split={
            "hash": "f" * 64,
            "known_classes": [f"class_{i}" for i in range(19)],
            "num_known": 19,
            "num_labeled": 224,
            "num_unlabeled": 8779,
            "num_dev": 1000,
            "num_test": TEST,
        },
        data={"dataset": "banking", "num_classes": K},
        method={"name": "glean"},
        encoder={"name": "all-MiniLM-L6-v2", "fingerprint": "0" * 64},
        provenance={
            "finished_at": "2026-01-02T03:04:05+00:00",
            "durations_s": {
                "total": 3071.2,
                "feedback:select-category": 900.5,
                "feedback:select-similar-instance": 1100.0,
                "feedback:characterize-cluster": 1000.0,
            },
            "git": {"commit": "d174e2f7b08e35fcca7c332662f467ac6335988b", "dirty": False},
            "gcdbench_version": "0.1.0",
            "peak_rss_mb": 2345.6,
        },
        feedback={
            "provider": "llm",
            "simulated": False,
            "spec": "llamacpp",
            "stats": {
                "total": {
                    "queries": 274,
                    "requests": 394,
                    "backend_requests": 380,
                    "ledger_hits": 14,
                    "prompt_tokens": 812345,
                    "completion_tokens": 23456,
                    "cost_usd": 0.0,
                }
            },
        },
        clusters=clusters if clusters is not None else _clusters(),
        diagnostics=_diagnostics(),
    )
    predictions = [
        (row, f"gold_{row % 77 if row % 3 else 0}", (row * row) % K) for row in range(TEST)
    ]
    return ResultsStore(root).write(
        record,
        pd.DataFrame(predictions, columns=["test_row", "gold", "cluster"]),
    )


def _show(results: Path, *args: str, columns: int = 80, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setattr(common.console, "_width", columns)  # in case COLUMNS was read earlier
    result = CliRunner().invoke(
        cli, ["show", *args, "--results-dir", str(results)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_show_fits_one_screen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_glean_run(tmp_path)
    run_id = _run_id(load_record(path))[:ID_CHARS]
    text = _show(tmp_path, run_id, monkeypatch=monkeypatch)
    lines = text.splitlines()
    assert len(lines) <= SCREEN, text
    assert max(len(line) for line in lines) <= 80
    # spec, split, metrics, cost, feedback quality per kind and round, ten largest clusters
    assert "glean on banking" in lines[0]
    for needle in (
        "spec: ",
        "split ",
        "metrics",
        "cost: ",
        "feedback: 274 questions",
        f"{CATEGORY} feedback vs gold",
        f"{INSTANCE} feedback vs gold",
        "descriptions round 1",
        "the 10 largest of 77",
    ):
        assert needle in text, needle
    assert "more: --clusters (77), --diagnostics, --json" in text
    header = next(line for line in lines if "most common gold class" in line)
    assert header.split() == ["id", "size", "name", "most", "common", "gold", "class", "share"]
    assert '"rounds"' not in text and "variant 3, described" not in text


def test_show_clusters_and_diagnostics_on_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_glean_run(tmp_path)
    run_id = _run_id(load_record(path))[:ID_CHARS]
    everything = _show(tmp_path, run_id, "--clusters", monkeypatch=monkeypatch)
    assert "clusters on the test split: all 77" in everything
    assert everything.count("by the LLM.") == K  # every description, wrapped in its column
    diagnostics = _show(tmp_path, run_id, "--diagnostics", monkeypatch=monkeypatch)
    assert '"best_epoch": 21' in diagnostics and "<30 values; see --json>" in diagnostics
    record = json.loads(_show(tmp_path, run_id, "--json", monkeypatch=monkeypatch))
    assert len(record["clusters"]) == K


def test_run_list_never_cuts_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    write_glean_run(tmp_path)
    for seed in range(3):
        spec = RunSpec(
            method="glean",
            dataset="massive_scenario",
            known_ratio=0.25,
            seed=seed,
            ablations=("cluster-instance", "instance-instance"),
            encoder="all-mpnet-base-v2",
        )
        record = ResultRecord(
            spec,
            {"acc": 1.0, "ari": 2.0, "nmi": 3.0},
            {},
            {},
            {},
            None,
            {"finished_at": "2026-01-02T03:04:05+00:00"},
        )
        store.write(record, pd.DataFrame({"test_row": []}))
    ids = [_run_id(r)[:ID_CHARS] for r in store.records()]
    text = _show(tmp_path, columns=80, monkeypatch=monkeypatch)
    assert all(run_id in text for run_id in ids), text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_print_clusters_largest_first_with_gold_match(tmp_path: Path) -> None:
    named = [{"id": c, "name": f"name {c}", "description": ""} for c in range(3)]
    record_path = write_glean_run(tmp_path, clusters=named)
    # Overwrite the predictions: cluster 2 is largest (4 texts, 3 of them "b").
    rows = [
        (0, "a", 0),
        (1, "b", 2),
        (2, "b", 2),
        (3, "b", 2),
        (4, "c", 2),
        (5, "a", 1),
        (6, "a", 1),
        (7, "c", 0),
    ]
    with open(record_path.parent / "predictions.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([("test_row", "gold", "cluster"), *rows])
    buffer = io.StringIO()
    print_clusters(record_path, top=2, out=Console(file=buffer, width=80))
    lines = [line.split() for line in buffer.getvalue().splitlines() if line.strip()]
    body = [line for line in lines if line and line[0].isdigit()]
    assert body[0] == ["2", "4", "name", "2", "b", "75%"]
    assert body[1][:2] in (["0", "2"], ["1", "2"]) and len(body) == 2
    assert "largest 2 of 3" in buffer.getvalue() or "the 2 largest of 3" in buffer.getvalue()


def test_print_clusters_is_silent_without_names(tmp_path: Path) -> None:
    record_path = write_glean_run(tmp_path, clusters=[])
    buffer = io.StringIO()
    print_clusters(record_path, out=Console(file=buffer, width=80))
    assert buffer.getvalue() == ""
