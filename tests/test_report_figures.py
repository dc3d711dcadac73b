"""``gcdbench report`` (issue 16 item 4): a folder with the leaderboard, budget and paired
tables, PNG figures and an index, built from a store of real smoke runs.

The store holds K-means and GLEAN (smoke preset, noisy oracle at 0.8) on a six-class slice of
the real BANKING data with the tiny random BERT as encoder (tests/banking_slices.py,
tests/training_fixtures.py): three seeds at 50% known classes and two at 34%, so the paired
tests get three pairs at one ratio and two, "n too small", at the other. The weights are
random, so the tests check what the report says about the records — files, numbers that can
be recomputed by hand from record.json and predictions.csv — never how good the runs are.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from gcdbench import registry
from gcdbench.cli import cli
from gcdbench.encoders.cache import FeatureCache
from gcdbench.report.bundle import MARKER
from gcdbench.report.leaderboard import row_groups
from gcdbench.report.paired import paired_comparisons
from gcdbench.report.run_view import (
    frozen_features,
    locate_test_texts,
    read_predictions,
    top_class_confusion,
)
from gcdbench.runner.store import ResultsStore, load_record
from tests.banking_slices import SlicePlugin, write_slices
from tests.training_fixtures import tiny_bert  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[1]
SLICE = "banking-slice6"
SLICES = {SLICE: 6}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch/BLAS thread: the models are tiny and the machine's two cores are busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def slices(shared_data, tmp_path_factory) -> Iterator[Path]:
    """A data root holding the slice, registered as a dataset while this module runs."""
    root = tmp_path_factory.mktemp("report-slices")
    write_slices(shared_data, root, SLICES)
    registry.register_plugin(SlicePlugin(SLICES), "test-report-slices")
    yield root
    registry.unregister_plugin("test-report-slices")


def _cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def store(slices, tiny_bert, tmp_path_factory) -> Path:  # noqa: F811
    """K-means and GLEAN, each at 50% known classes (seeds 0-2) and 34% (seeds 0-1)."""
    results = tmp_path_factory.mktemp("report-store")
    common = ["-d", SLICE, "--encoder", str(tiny_bert), "--data-dir", str(slices)]
    common += ["--results-dir", str(results), "-q"]
    glean = ["glean", "--preset", "smoke", "--llm", "noisy-oracle:0.8"]
    for ratio, seeds in (("0.5", "0-2"), ("0.34", "0-1")):
        for method in (["kmeans"], glean):
            outcome = _cli("run", *method, "--known-ratio", ratio, "--seeds", seeds, *common)
            assert outcome.exit_code == 0, outcome.output
    return results


@pytest.fixture(scope="module")
def report(store, slices, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "out"
    outcome = _cli("report", "--results-dir", str(store), "--out", str(out),
                   "--data-dir", str(slices), "-q")  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    return out


@pytest.fixture(scope="module")
def rows(tiny_bert) -> dict[str, str]:  # noqa: F811
    """The leaderboard rows of the two methods (the encoder is not the default one)."""
    return {
        "glean": f"glean [encoder={tiny_bert}, llm=noisy-oracle:0.8, preset=smoke, "
        "SIMULATED FEEDBACK]",
        "kmeans": f"kmeans [encoder={tiny_bert}]",
    }


def _records(store: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(store.glob("runs/*/*/*/record.json"))]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


# -- 1. the folder: files, valid PNGs, an index that lists them -------------------------------


def test_writes_leaderboard_figures_and_an_index_listing_them(report, store, rows):
    records = _records(store)
    # The best run of the dataset: real runs (K-means) before simulated feedback (GLEAN),
    # the highest ACC, the smaller run id on a tie.
    best = min(
        (r for r in records if r["spec"]["method"] == "kmeans"),
        key=lambda r: (-r["metrics"]["acc"], r["run_id"]),
    )
    expected = {
        "budget-banking-slice6-kr0.34.png",
        "budget-banking-slice6-kr0.5.png",
        "ratio-banking-slice6.png",
        "feedback-banking-slice6-kr0.34.png",
        "feedback-banking-slice6-kr0.5.png",
        f"projection-{best['run_id'][:16]}.png",
        f"confusion-{best['run_id'][:16]}.png",
    }
    pngs = {p.name for p in report.glob("*.png")}
    assert pngs == expected
    for name in pngs:
        path = report / name
        width, height = _png_size(path)
        assert width >= 400 and height >= 300, (name, width, height)
        assert 5_000 < path.stat().st_size < 2_000_000, name
        # Decoded, it is a picture, not a blank canvas.
        import matplotlib.pyplot as plt

        pixels = plt.imread(path)
        assert pixels.shape[:2] == (height, width)
        assert float(pixels[..., :3].std()) > 0.01, name

    index = (report / "README.md").read_text()
    assert index.startswith(MARKER)
    assert "](leaderboard.md)" in index
    for name in pngs:
        assert f"]({name})" in index, name
        # each figure sits above the command that makes it again
        after = index.split(f"]({name})", 1)[1]
        command = after.split("```bash\n", 1)[1].split("\n", 1)[0]
        assert command.startswith(f"gcdbench report --results-dir {store} --out ")
    assert "**frozen**" in index and "not the features the method ended with" in index
    leaderboard = (report / "leaderboard.md").read_text()
    assert leaderboard.startswith("# gcdbench leaderboard")
    assert rows["glean"] in leaderboard


# -- 2. paired differences and their tests ----------------------------------------------------


def _by_split(records: list[dict[str, Any]], method: str) -> dict[str, dict[str, Any]]:
    return {r["split"]["hash"]: r for r in records if r["spec"]["method"] == method}


def test_paired_differences_equal_the_records_and_name_small_n(report, store, rows):
    records = _records(store)
    kmeans, glean = _by_split(records, "kmeans"), _by_split(records, "glean")
    shared = sorted(set(kmeans) & set(glean), key=lambda h: glean[h]["spec"]["seed"])
    by_ratio: dict[float, list[tuple[int, float]]] = {}
    for split in shared:
        spec = glean[split]["spec"]
        difference = glean[split]["metrics"]["acc"] - kmeans[split]["metrics"]["acc"]
        by_ratio.setdefault(spec["known_ratio"], []).append((spec["seed"], difference))
    assert {ratio: len(pairs) for ratio, pairs in by_ratio.items()} == {0.5: 3, 0.34: 2}

    groups = row_groups(load_record(p) for p in ResultsStore(store).record_paths())
    found = {c.known_ratio: c for c in paired_comparisons(groups, rows["kmeans"])}
    assert set(found) == {0.5, 0.34}
    index = (report / "README.md").read_text()
    # without no-llm runs the default baseline is kmeans, here its one row
    assert f"minus ACC of **{rows['kmeans']}**" in index
    for ratio, pairs in by_ratio.items():
        comparison = found[ratio]
        assert comparison.row == rows["glean"]
        assert list(comparison.seeds) == [seed for seed, _ in pairs]
        assert list(comparison.differences) == pytest.approx([d for _, d in pairs], abs=1e-9)
        per_seed = ", ".join(f"s{seed}: {d:+.2f}" for seed, d in pairs)
        line = next(x for x in index.splitlines() if per_seed in x)  # the paired table's
        assert line.startswith(f"| {rows['glean']} | {SLICE} | {ratio * 100:g}% | {len(pairs)} |")

    three, two = found[0.5], found[0.34]
    assert three.note != "n too small"
    assert three.t_p is not None and 0.0 <= three.t_p <= 1.0
    assert three.wilcoxon_p is not None and 0.0 <= three.wilcoxon_p <= 1.0
    assert two.t_p is None and two.wilcoxon_p is None and two.note == "n too small"
    paired = index.split("## Paired differences", 1)[1].split("\n## ", 1)[0]
    two_line = next(
        x for x in paired.splitlines() if x.startswith(f"| {rows['glean']} | {SLICE} | 34%")
    )
    assert two_line.rstrip(" |").endswith("n too small")


def test_budget_table_is_the_records_spend(report, store, rows):
    glean = [r for r in _records(store) if r["spec"]["method"] == "glean"]
    at_half = [r for r in glean if r["spec"]["known_ratio"] == 0.5]
    questions = [r["feedback"]["stats"]["total"]["queries"] for r in at_half]
    wall = [r["provenance"]["durations_s"]["total"] for r in at_half]
    assert min(questions) > 0
    index = (report / "README.md").read_text()
    budget = index.split("## Budget", 1)[1].split("## Paired", 1)[0]
    line = next(
        x for x in budget.splitlines() if x.startswith(f"| {rows['glean']} | {SLICE} | 50%")
    )
    cells = [c.strip() for c in line.strip("|").split(" | ")]
    asked = f"{np.mean(questions):.0f}" + (
        "" if len(set(questions)) == 1 else f"±{np.std(questions, ddof=1):.0f}"
    )
    assert cells[5] == asked
    assert cells[8] == f"{np.mean(wall):.1f}±{np.std(wall, ddof=1):.1f}"
    kmeans_line = next(
        x for x in budget.splitlines() if x.startswith(f"| {rows['kmeans']} | {SLICE} | 50%")
    )
    assert [c.strip() for c in kmeans_line.strip("|").split(" | ")][5:8] == ["0", "0", "0"]


# -- 3. the run drawn text by text ------------------------------------------------------------


def test_confusion_matrix_follows_the_metrics_matching(store):
    for path in ResultsStore(store).record_paths():
        record = load_record(path)
        predictions = read_predictions(record, path)
        confusion = top_class_confusion(predictions, top=4)
        # The same matching as the runner's, so its diagonal is the texts counted correct.
        assert confusion.disagreements == 0
        assert len(confusion.classes) == 4
        correct = {}
        rows = (path.parent / "predictions.csv").read_text().splitlines()[1:]
        for row in rows:
            _, gold, _, _, right = row.split(",")
            correct[gold] = correct.get(gold, 0) + (right == "True")
        assert list(np.diag(confusion.counts[:, :4])) == [correct[c] for c in confusion.classes]
        assert list(confusion.counts.sum(axis=1)) == confusion.sizes
        known = set(record.split["known_classes"])
        assert confusion.novel == [c not in known for c in confusion.classes]


def test_projection_features_are_the_frozen_encoders_cached_ones(store, slices):
    path = next(ResultsStore(store).record_paths())
    record = load_record(path)
    predictions = read_predictions(record, path)
    texts = locate_test_texts(record, predictions, str(slices))
    features = frozen_features(texts)
    assert features.shape[0] == len(predictions.test_rows)
    # Read back from the harness's feature cache, keyed by encoder and data file.
    from gcdbench.encoders import resolve_encoder

    encoder = resolve_encoder(record.spec.encoder)
    cached = np.load(FeatureCache().path(encoder.fingerprint, texts.part.file.sha256))
    assert np.array_equal(features, cached[predictions.test_rows].astype(np.float64))


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}  # fmt: skip


def test_figures_are_the_same_bytes_each_time_and_the_store_is_only_read(
    report, store, slices, tmp_path
):
    before = _listing(store)
    again = tmp_path / "again"
    outcome = _cli("report", "--results-dir", str(store), "--out", str(again),
                   "--data-dir", str(slices), "-q")  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    assert _listing(store) == before
    for png in sorted(report.glob("*.png")):
        assert (again / png.name).read_bytes() == png.read_bytes(), png.name
    first = (report / "README.md").read_text().replace(str(report), "OUT")
    assert (again / "README.md").read_text().replace(str(again), "OUT") == first


def test_only_and_run_select_the_figures(store, tmp_path):
    run_id = load_record(next(ResultsStore(store).record_paths())).run_id
    out = tmp_path / "one"
    outcome = _cli("report", "--results-dir", str(store), "--out", str(out), "--only",
                   "confusion", "--run", run_id[:12], "-q")  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    assert [p.name for p in out.glob("*.png")] == [f"confusion-{run_id[:16]}.png"]
    index = (out / "README.md").read_text()
    assert f"--only confusion --run {run_id[:12]}" in index  # the whole command
    assert f"--only confusion --run {run_id[:16]}" in index  # the figure's own
    assert "## ACC against" not in index and "## 2-D projection" not in index


# -- 4. bad input: one line, exit 2, nothing written ------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--baseline", "nosuch"], "--baseline 'nosuch' has no runs"),
        (["--run", "ffffffffffff"], "no run 'ffffffffffff'"),
        (["--only", "budget,pies"], "--only takes budget"),
    ],
    ids=["baseline", "run", "only"],
)
def test_bad_arguments_stop_before_writing(store, tmp_path, args, message):
    out = tmp_path / "out"
    outcome = _cli("report", "--results-dir", str(store), "--out", str(out), *args)
    assert outcome.exit_code == 2
    errors = [x for x in outcome.stderr.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], outcome.stderr
    assert not out.exists()


def test_refuses_a_folder_that_is_not_a_report(store, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    outcome = _cli("report", "--results-dir", str(store), "--out", str(out))
    assert outcome.exit_code == 2
    assert "holds no gcdbench report" in outcome.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_missing_matplotlib_is_one_line_naming_the_extra(store, tmp_path):
    out = tmp_path / "out"
    block = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from gcdbench.cli import main; "
        f"sys.argv = ['gcdbench', 'report', '--results-dir', {str(store)!r}, '--out', "
        f"{str(out)!r}]; main()"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", block], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "matplotlib" in lines[0] and "[report]" in lines[0]
    assert not out.exists()
