from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gcdbench.api import ResultRecord, RunSpec
from gcdbench.cli import cli
from gcdbench.report.leaderboard import (
    APART_HEADING,
    LEAKS,
    SIMULATED,
    STALE,
    aggregate,
    dropped_results,
    leaderboard_markdown,
    render_markdown,
    write_leaderboard,
)
from gcdbench.report.references import load_references, validate_reference
from gcdbench.runner.store import ResultsStore
from gcdbench.util import files

# (method, dataset) -> per-seed values for seeds 0, 1, 2. alpha wins ACC and NMI on
# banking, beta wins ARI on banking and everything on clinc.
VALUES = {
    ("alpha", "banking"): {
        "acc": [61.7, 62.9, 63.2],
        "ari": [40.1, 41.0, 39.5],
        "nmi": [80.0, 81.5, 80.9],
    },
    ("beta", "banking"): {
        "acc": [55.0, 57.3, 56.1],
        "ari": [44.4, 45.0, 43.9],
        "nmi": [78.2, 79.0, 77.7],
    },
    ("alpha", "clinc"): {
        "acc": [70.1, 71.4, 69.8],
        "ari": [60.0, 61.2, 59.1],
        "nmi": [88.0, 88.4, 87.9],
    },
    ("beta", "clinc"): {
        "acc": [75.5, 76.0, 74.2],
        "ari": [64.3, 63.1, 65.0],
        "nmi": [90.2, 90.9, 89.7],
    },
}
SEEDS = (0, 1, 2)
GLEAN_REF = {
    "method": "GLEAN",
    "dataset": "banking",
    "known_ratio": 0.25,
    "labeled_ratio": 0.1,
    "acc": 76.98,
    "ari": 66.0,
    "nmi": 85.62,
    "source": "Peng et al. 2025, GLEAN (arXiv 2502.18414)",
    "note": "",
}


def record(
    method: str,
    dataset: str,
    seed: int,
    metrics: dict[str, float],
    *,
    known_ratio: float = 0.25,
    finished_at: str = "2025-01-01T00:00:00+00:00",
    **spec: Any,
) -> ResultRecord:
    return ResultRecord(
        spec=RunSpec(method=method, dataset=dataset, known_ratio=known_ratio, seed=seed, **spec),
        metrics=metrics,
        split={},
        data={},
        method={},
        encoder=None,
        provenance={"finished_at": finished_at},
    )


def grid(known_ratio: float = 0.25) -> list[ResultRecord]:
    return [
        record(m, d, seed, {k: v[i] for k, v in values.items()}, known_ratio=known_ratio)
        for (m, d), values in VALUES.items()
        for i, seed in enumerate(SEEDS)
    ]


def expected_cell(method: str, dataset: str, metric: str) -> str:
    values = np.array(VALUES[method, dataset][metric])
    return f"{values.mean():.2f}±{values.std(ddof=1):.2f}"


def table_rows(text: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell (the first table only if labels repeat)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| Method"):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            rows.setdefault(cells[0], cells[1:])
    return rows


def header(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("| Method"))
    return [c.strip() for c in line.strip("|").split(" | ")][1:]


def cell(text: str, row: str, column: str) -> str:
    return table_rows(text)[row][header(text).index(column)]


def test_aggregate_mean_std_match_numpy() -> None:
    df = aggregate(grid())
    assert len(df) == 4
    for (method, dataset), values in VALUES.items():
        row = df[(df["row"] == method) & (df["dataset"] == dataset)].iloc[0]
        assert row["n"] == 3
        assert row["seeds"] == [0, 1, 2]
        for metric, numbers in values.items():
            assert row[f"{metric}_mean"] == pytest.approx(np.mean(numbers))
            assert row[f"{metric}_std"] == pytest.approx(np.std(numbers, ddof=1))


def test_rendered_cells_match_numpy_and_show_n() -> None:
    text = render_markdown(aggregate(grid()), references=[])
    assert header(text)[:7] == [
        "banking ACC",
        "banking ARI",
        "banking NMI",
        "banking K-ACC",
        "banking N-ACC",
        "banking H",
        "banking n",
    ]
    for method, dataset in VALUES:
        for metric in ("acc", "ari", "nmi"):
            shown = cell(text, method, f"{dataset} {metric.upper()}")
            assert expected_cell(method, dataset, metric) in shown
        assert cell(text, method, f"{dataset} n") == "3"
    assert "mean±std over the n seeds" in text


def test_best_bold_second_underlined() -> None:
    text = render_markdown(aggregate(grid()), references=[])
    acc = expected_cell("alpha", "banking", "acc")
    assert cell(text, "alpha", "banking ACC") == f"**{acc}**"
    assert cell(text, "beta", "banking ACC") == f"<u>{expected_cell('beta', 'banking', 'acc')}</u>"
    assert cell(text, "beta", "banking ARI").startswith("**")
    assert cell(text, "alpha", "banking ARI").startswith("<u>")
    assert cell(text, "beta", "clinc NMI").startswith("**")


def test_ties_are_all_bold_and_third_is_plain() -> None:
    records = [
        record("a", "banking", 0, {"acc": 50.0, "ari": 1.0, "nmi": 1.0}),
        record("b", "banking", 0, {"acc": 50.001, "ari": 1.0, "nmi": 1.0}),  # prints 50.00
        record("c", "banking", 0, {"acc": 40.0, "ari": 1.0, "nmi": 1.0}),
        record("d", "banking", 0, {"acc": 30.0, "ari": 1.0, "nmi": 1.0}),
    ]
    text = render_markdown(aggregate(records), references=[])
    assert cell(text, "a", "banking ACC") == "**50.00**"
    assert cell(text, "b", "banking ACC") == "**50.00**"
    assert cell(text, "c", "banking ACC") == "<u>40.00</u>"
    assert cell(text, "d", "banking ACC") == "30.00"


def test_single_seed_has_no_std_and_no_lone_bold() -> None:
    df = aggregate([record("solo", "banking", 7, {"acc": 62.614, "ari": 50.0, "nmi": 70.0})])
    assert math.isnan(df.iloc[0]["acc_std"])
    text = render_markdown(df, references=[])
    assert cell(text, "solo", "banking ACC") == "62.61"
    assert cell(text, "solo", "banking n") == "1"


def test_reference_row_marked_reported_never_ranked() -> None:
    ref = {**GLEAN_REF, "acc": 99.0}  # above every reproduced row, still not bold
    text = render_markdown(aggregate(grid()), references=[ref])
    cells = table_rows(text)["*GLEAN (reported)*[^1]"]
    assert cells[:7] == ["*99.00*", "*66.00*", "*85.62*", "–", "–", "–", "–"]
    assert all("**" not in c and "<u>" not in c for c in cells)
    assert cells[7:] == ["–"] * 7  # no clinc numbers reported
    assert "[^1]: Peng et al. 2025, GLEAN (arXiv 2502.18414)" in text
    assert cell(text, "alpha", "banking ACC").startswith("**")
    # Reference rows come beneath the reproduced ones.
    lines = text.splitlines()
    assert lines.index(next(x for x in lines if x.startswith("| *GLEAN"))) > lines.index(
        next(x for x in lines if x.startswith("| beta"))
    )


def test_bundled_references() -> None:
    refs = load_references()
    glean = next(r for r in refs if r["method"] == "GLEAN" and r["dataset"] == "banking")
    assert (glean["known_ratio"], glean["labeled_ratio"]) == (0.25, 0.1)
    assert (glean["acc"], glean["ari"], glean["nmi"]) == (76.98, 66.0, 85.62)
    assert "2502.18414" in glean["source"]
    text = render_markdown(aggregate(grid()))  # None -> the bundled references
    assert "*GLEAN (reported)*" in text


@pytest.mark.parametrize(
    ("drop", "change", "message"),
    [
        ("ari", {}, "missing key"),
        (None, {"accuracy": 1.0}, "unknown key"),
        (None, {"acc": "76.98"}, "percentage"),
        (None, {"known_ratio": 25}, "known_ratio"),
    ],
)
def test_reference_validation(
    tmp_path: Path, drop: str | None, change: dict[str, object], message: str
) -> None:
    row = {k: v for k, v in GLEAN_REF.items() if k != drop} | change
    path = tmp_path / "refs.json"
    path.write_text(json.dumps({"rows": [row]}), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_references(path)


def test_two_known_ratios_give_two_tables() -> None:
    text = render_markdown(aggregate(grid(0.25) + grid(0.5)), references=[GLEAN_REF])
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Known-class ratio 25%", "## Known-class ratio 50%"]
    second_table = text.split("## Known-class ratio 50%")[1]
    assert "GLEAN" not in second_table.split("[^1]:")[0]  # the 25% reference stays in its table


def test_duplicate_seed_keeps_newest() -> None:
    old = record(
        "alpha",
        "banking",
        0,
        {"acc": 10.0, "ari": 10.0, "nmi": 10.0},
        finished_at="2025-01-01T00:00:00+00:00",
    )
    new = record(
        "alpha",
        "banking",
        0,
        {"acc": 30.0, "ari": 30.0, "nmi": 30.0},
        finished_at="2025-03-01T00:00:00+00:00",
    )
    other = record("alpha", "banking", 1, {"acc": 50.0, "ari": 50.0, "nmi": 50.0})
    for order in ([old, new, other], [new, other, old]):
        row = aggregate(order).iloc[0]
        assert row["n"] == 2
        assert row["seeds"] == [0, 1]
        assert row["acc_mean"] == pytest.approx(40.0)


def test_row_key_names_non_default_settings() -> None:
    metrics = {"acc": 1.0, "ari": 1.0, "nmi": 1.0}
    records = [
        record("kmeans", "banking", 0, metrics),
        record("kmeans", "banking", 0, metrics, encoder="all-mpnet-base-v2"),
        record("glean", "banking", 0, metrics, llm="gpt-4o-mini", ablations=("llm",)),
        record("kmeans", "banking", 0, metrics, labeled_ratio=0.05),
    ]
    assert sorted(aggregate(records)["row"]) == [
        "glean w/o llm [llm=gpt-4o-mini]",
        "kmeans",
        "kmeans [encoder=all-mpnet-base-v2]",
        "kmeans [labeled=5%]",
    ]


def test_different_params_are_not_pooled() -> None:
    metrics = {"acc": 1.0, "ari": 1.0, "nmi": 1.0}
    records = [
        record("kmeans", "banking", 0, metrics, params={"n_init": 10}),
        record("kmeans", "banking", 1, metrics, params={"n_init": 10}),
        record("kmeans", "banking", 0, metrics, params={"n_init": 1}),
    ]
    df = aggregate(records)
    assert len(df) == 2
    assert sorted(df["n"]) == [1, 2]
    assert all(name.startswith("kmeans [config=") for name in df["row"])


def test_output_is_deterministic() -> None:
    records = grid(0.25) + grid(0.5)
    first = render_markdown(aggregate(records), references=[GLEAN_REF])
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    assert render_markdown(aggregate(shuffled), references=[GLEAN_REF]) == first
    assert first.startswith("# gcdbench leaderboard\n")
    assert "`gcdbench leaderboard`" in first
    assert "20" not in first.split("## ")[0]  # no date in the preamble


def test_empty_input() -> None:
    text = render_markdown(aggregate([]), references=[])
    assert "No result records yet." in text


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "deep" / "er" / "leaderboard.md"
    path = write_leaderboard(grid(), out, references=[GLEAN_REF])
    assert path == out
    expected = render_markdown(aggregate(grid()), references=[GLEAN_REF])
    written = out.read_text(encoding="utf-8")
    assert written.startswith(expected)
    # The tables are followed by the commands that reproduce them.
    assert written[len(expected) :].startswith("\n## Reproduce\n\n```bash\ngcdbench run alpha")
    assert [p.name for p in out.parent.iterdir()] == ["leaderboard.md"]
    expected = written

    # A failure before the rename leaves the old file whole and no temp file behind.
    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_leaderboard(grid(0.5), out, references=[])
    assert out.read_text(encoding="utf-8") == expected
    assert [p.name for p in out.parent.iterdir()] == ["leaderboard.md"]


def test_runs_that_read_novel_labels_are_marked_and_kept_apart() -> None:
    metrics = {"acc": 70.0, "ari": 50.0, "nmi": 80.0}
    clean = record("glean", "banking", 0, metrics)
    leaky = record("glean", "banking", 1, metrics, params={"leaky_category_demos": True})
    leaky.provenance["leaks_labels"] = ["glean leaky_category_demos"]
    rows = sorted(aggregate([clean, leaky])["row"])
    assert len(rows) == 2
    assert ["LEAKS NOVEL LABELS" in row for row in rows] == [False, True]


def test_a_method_without_an_encoder_gets_no_encoder_qualifier() -> None:
    metrics = {"acc": 1.0, "ari": 1.0, "nmi": 1.0}
    df = aggregate([record("llm-only", "banking", 0, metrics, encoder=None)])
    assert list(df["row"]) == ["llm-only"]


# -- simulated feedback and leaked labels are ranked apart ----------------------------------


def _apart_records() -> list[ResultRecord]:
    real = {"acc": 60.0, "ari": 40.0, "nmi": 80.0}
    return [
        record("kmeans", "banking", 0, real),
        record("glean", "banking", 0, {"acc": 55.0, "ari": 45.0, "nmi": 79.0}, llm="llamacpp"),
        record("glean", "banking", 0, {"acc": 90.0, "ari": 80.0, "nmi": 95.0}, llm="oracle"),
        record(
            "glean", "banking", 0, {"acc": 85.0, "ari": 75.0, "nmi": 93.0}, llm="noisy-oracle:0.8"
        ),
    ]


def _split_tables(text: str) -> tuple[str, str]:
    main, _, apart = text.partition(APART_HEADING)
    return main, apart


def test_simulated_feedback_is_marked_and_never_best_among_real_runs() -> None:
    text = render_markdown(aggregate(_apart_records()), references=[])
    main, apart = _split_tables(text)
    assert apart, "simulated rows get a table of their own"
    assert "oracle" not in main.split("## Known-class ratio")[1]
    assert cell(main, "kmeans", "banking ACC") == "**60.00**"
    assert cell(main, "glean [llm=llamacpp]", "banking ACC") == "<u>55.00</u>"
    rows = table_rows(apart)
    oracle = f"glean [llm=oracle, {SIMULATED}]"
    noisy = f"glean [llm=noisy-oracle:0.8, {SIMULATED}]"
    assert set(rows) == {oracle, noisy}
    # Ranked among themselves only.
    assert rows[oracle][0] == "**90.00**" and rows[noisy][0] == "<u>85.00</u>"


def test_a_provider_that_says_it_is_simulated_is_apart() -> None:
    simulated = record("glean", "banking", 0, {"acc": 99.0, "ari": 1.0, "nmi": 1.0}, llm="sim")
    simulated.feedback = {"provider": "sim", "simulated": True}
    others = [
        record(m, "banking", 0, {"acc": 50.0 + i, "ari": 1.0, "nmi": 1.0})
        for i, m in enumerate(("a", "b"))
    ]
    df = aggregate([simulated, *others])
    assert df.set_index("row")["apart"].to_dict() == {
        f"glean [llm=sim, {SIMULATED}]": True,
        "a": False,
        "b": False,
    }
    main, _ = _split_tables(render_markdown(df, references=[]))
    assert cell(main, "b", "banking ACC") == "**51.00**"


def test_leaking_runs_are_ranked_apart() -> None:
    metrics = {"acc": 99.0, "ari": 99.0, "nmi": 99.0}
    leaky = record("glean", "banking", 0, metrics, params={"leaky_category_demos": True})
    leaky.provenance["leaks_labels"] = ["glean leaky_category_demos"]
    text = render_markdown(aggregate([leaky, *grid()]), references=[])
    main, apart = _split_tables(text)
    assert LEAKS not in main and f"glean [{LEAKS}]" in table_rows(apart)
    assert cell(main, "alpha", "banking ACC").startswith("**")


# -- writing: stdout by default, never dropping results silently -----------------------------


def _store(root: Path, records: list[ResultRecord]) -> Path:
    store = ResultsStore(root)
    for r in records:
        store.write(r, pd.DataFrame({"test_row": []}))
    return root


@pytest.fixture(autouse=True)
def _current(monkeypatch: pytest.MonkeyPatch) -> None:
    """The synthetic records have no run identity and name methods nobody installed, so
    they would all be stale; here they count as current unless a test says otherwise."""
    monkeypatch.setattr("gcdbench.cli.leaderboard.stale_reasons", lambda record: [])


def _leaderboard(*args: str):
    return CliRunner().invoke(cli, ["leaderboard", *args], catch_exceptions=False)


def test_stale_runs_are_left_out_or_marked_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _store(tmp_path / "results", grid())
    monkeypatch.setattr(
        "gcdbench.cli.leaderboard.stale_reasons",
        lambda record: ["engine version 1 (installed: 2)"] if record.spec.method == "beta" else [],
    )
    default = _leaderboard("--results-dir", str(results), "--no-references")
    assert default.exit_code == 0 and "left out 6 stale run(s)" in default.stderr
    assert "| beta" not in default.stdout and "| alpha" in default.stdout
    shown = _leaderboard("--results-dir", str(results), "--no-references", "--include-stale")
    assert shown.exit_code == 0
    beta_rows = [line for line in shown.stdout.splitlines() if line.startswith("| beta")]
    assert beta_rows and all(f"[{STALE}]" in line for line in beta_rows)
    # Ranked apart: no stale row is bold, whatever its numbers.
    assert all("**" not in line for line in beta_rows)


def test_default_prints_and_leaves_files_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = _store(tmp_path / "results", grid())
    committed = tmp_path / "leaderboards" / "README.md"
    committed.parent.mkdir()
    committed.write_text("# committed\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = _leaderboard("--results-dir", str(results), "--no-references")
    assert result.exit_code == 0, result.output
    assert result.stdout == leaderboard_markdown(grid(), [])
    assert committed.read_text(encoding="utf-8") == "# committed\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leaderboards", "results"]


def test_out_refuses_to_drop_results_unless_replace(tmp_path: Path) -> None:
    board = tmp_path / "board.md"
    everything = _store(tmp_path / "all", grid())
    assert _leaderboard("--results-dir", str(everything), "--out", str(board)).exit_code == 0
    before = board.read_text(encoding="utf-8")
    # A store with alpha's runs only: beta's banking and clinc results would go.
    alpha_only = _store(tmp_path / "alpha", [r for r in grid() if r.spec.method == "alpha"])
    refused = _leaderboard("--results-dir", str(alpha_only), "--out", str(board))
    assert refused.exit_code == 2
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "2 results in 1 row" in lines[0] and "--replace" in lines[0]
    assert board.read_text(encoding="utf-8") == before
    # Regenerating from a store with everything is fine; --replace drops on purpose.
    assert _leaderboard("--results-dir", str(everything), "--out", str(board)).exit_code == 0
    replaced = _leaderboard("--results-dir", str(alpha_only), "--out", str(board), "--replace")
    assert replaced.exit_code == 0
    assert "| beta |" not in board.read_text(encoding="utf-8")


def test_out_refuses_a_file_that_is_not_a_leaderboard(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# my project\n", encoding="utf-8")
    results = _store(tmp_path / "results", grid())
    refused = _leaderboard("--results-dir", str(results), "--out", str(readme))
    assert refused.exit_code == 2 and "not a gcdbench leaderboard" in refused.stderr
    assert readme.read_text(encoding="utf-8") == "# my project\n"


def test_dropped_results_ignore_reported_rows() -> None:
    old = render_markdown(aggregate(grid()), references=[GLEAN_REF])
    new = render_markdown(aggregate(grid()[:3]), references=[])  # alpha on banking only
    dropped = dropped_results(old, new)
    assert {(row, dataset) for _, row, dataset in dropped} == {
        ("alpha", "clinc"),
        ("beta", "banking"),
        ("beta", "clinc"),
    }
    assert dropped_results(old, old) == []


def test_known_novel_acc_and_h_score_columns() -> None:
    # The DPN/TAN/SDC papers rank by H-score: the harmonic mean of known- and novel-class ACC.
    records = [
        record(m, "banking", s, {"acc": 60.0, "known_acc": k, "novel_acc": n, "h_score": h})
        for m, per_seed in {
            "high-h": [(80.0, 50.0, 61.54), (82.0, 52.0, 63.64)],
            "low-h": [(90.0, 30.0, 45.0), (92.0, 28.0, 42.93)],
        }.items()
        for s, (k, n, h) in enumerate(per_seed)
    ]
    text = render_markdown(aggregate(records), references=[])
    assert (
        cell(text, "high-h", "banking H") == f"**{62.59:.2f}±{np.std([61.54, 63.64], ddof=1):.2f}**"
    )
    assert cell(text, "low-h", "banking K-ACC").startswith("**91.00±")
    assert cell(text, "high-h", "banking N-ACC").startswith("**51.00±")
    assert cell(text, "low-h", "banking H").startswith("<u>")
    assert "harmonic mean (H)" in text


def test_reference_row_with_h_score_only() -> None:
    dpn = {
        **GLEAN_REF,
        "method": "DPN",
        "known_ratio": 0.75,
        "acc": None,
        "ari": None,
        "nmi": None,
        "known_acc": 80.93,
        "novel_acc": 48.60,
        "h_score": 60.73,
        "source": "An et al. 2023, DPN (AAAI)",
    }
    text = render_markdown(aggregate([]), references=[dpn, GLEAN_REF])
    rows = table_rows(text)
    assert rows["*DPN (reported)*[^2]"][:7] == ["–", "–", "–", "*80.93*", "*48.60*", "*60.73*", "–"]
    # A row without the optional keys reads them as not reported.
    assert rows["*GLEAN (reported)*[^1]"][3:6] == ["–", "–", "–"]


@pytest.mark.parametrize("bad", [101.0, -1.0, "60", True])
def test_reference_h_score_must_be_a_percentage(bad: Any) -> None:
    with pytest.raises(ValueError, match="'h_score' must be a percentage"):
        validate_reference({**GLEAN_REF, "h_score": bad})


def test_older_three_metric_leaderboards_still_parse() -> None:
    # A leaderboard written before the K-ACC / N-ACC / H columns existed: its n cells sit
    # at other positions, and regenerating must not report its results as dropped.
    new = render_markdown(aggregate(grid()), references=[])
    old_lines = []
    for line in new.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            keep = [cells[0]] + [c for i, c in enumerate(cells[1:]) if i % 7 in (0, 1, 2, 6)]
            line = "| " + " | ".join(keep) + " |"
        old_lines.append(line)
    old = "\n".join(old_lines)
    assert "| Method | banking ACC | banking ARI | banking NMI | banking n |" in old
    assert dropped_results(old, new) == []
    assert len(dropped_results(old, render_markdown(aggregate(grid()[:3]), references=[]))) == 3
