"""GCD with an unknown number of classes (docs/unknown-k.md): the registered K estimators,
``gcdbench run --k``, the ``k`` key of sweep plans, the record's ``split.k`` and the
leaderboard's ``K=est:NAME`` rows.

The estimators are checked on well-separated synthetic blobs, where the right K is not in
doubt; the runs go through ``gcdbench run`` on slices of the real BANKING data with the bag of
words encoder (seconds), and they read what ``--k`` changes in the record, never how good the
clusters are.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gcdbench import registry
from gcdbench.api import GCDTask, Method, MethodOutput, ResultRecord, RunSpec, hookimpl
from gcdbench.api.k_estimator import KChoice, KEstimate, count_large_clusters, parse_k
from gcdbench.cli import cli
from gcdbench.cli.sweep import expand
from gcdbench.errors import GcdbenchError
from gcdbench.report.leaderboard import K_NOTE, aggregate, leaderboard_markdown
from gcdbench.runner.identity import stale_reasons
from gcdbench.runner.plan_file import load_plan
from gcdbench.runner.run import resolve_spec
from gcdbench.runner.store import load_record
from gcdbench.testing import tiny_task
from gcdbench_builtins.k_estimators import Curve, coarse_to_fine, knee
from tests.banking_slices import SlicePlugin, write_slices

NAMES = ("cluster-size", "elbow", "silhouette")
SLICE = "banking-slice6"  # the first 6 BANKING classes; 3 known at --known-ratio 0.5
#: How far each estimator may be from K on equal, well-separated blobs. The silhouette and
#: the elbow find K exactly there. DeepAligned's cluster-size count splits each blob into
#: about two clusters of about the mean size, so some halves fall just below it and the
#: count runs a little under K (measured: 9 of 10, 17-18 of 20).
TOLERANCE = {"cluster-size": 0.2, "elbow": 0.0, "silhouette": 0.0}


def _task(num_classes: int, num_known: int) -> GCDTask:
    """A task whose K and known classes are what an estimator reads (the rows are unused)."""
    task, _, _ = tiny_task()
    known = tuple(f"class-{i}" for i in range(num_known))
    return dataclasses.replace(task, num_classes=num_classes, known_classes=known)


def _blobs(k: int, per: int = 60, seed: int = 0, spread: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10.0, (k, 32))  # about 80 apart in 32 dimensions
    return np.concatenate([c + rng.normal(0, spread, (per, 32)) for c in centres])


# -- the registered kind -----------------------------------------------------------------------


def _gcd(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_the_estimators_are_listed_and_shown_by_plugins():
    listed = json.loads(_gcd("list", "k-estimators", "--json").output)
    assert [row["name"] for row in listed] == list(NAMES)
    assert all(row["description"] and row["version"] for row in listed)
    assert "--k estimate:elbow" in _gcd("list", "k-estimators", "elbow").output
    plugins = json.loads(_gcd("plugins", "--json").output)
    registered = {p["name"]: p["registered"] for p in plugins}
    assert sorted(registered["builtin-k-estimators"]["k-estimator"]) == list(NAMES)


# -- the estimators ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("k", "known"), [(5, 2), (12, 3)])
def test_each_estimator_recovers_k_on_separated_blobs(name, k, known):
    estimator = registry.get("k-estimator", name)
    estimate = estimator.estimate(_blobs(k), _task(k, known), np.random.default_rng(0))
    assert isinstance(estimate, KEstimate) and isinstance(estimate.k, int)
    assert abs(estimate.k - k) <= TOLERANCE[name] * k, (name, estimate.k, k)
    json.dumps(dict(estimate.details))  # the record keeps them


@pytest.mark.parametrize("name", NAMES)
def test_estimates_are_a_function_of_the_generator(name):
    # Overlapping blobs, so that the rows sampled and the K-means seeds matter.
    features, task = _blobs(8, spread=6.0), _task(8, 2)
    estimator = registry.get("k-estimator", name)
    first = estimator.estimate(features, task, np.random.default_rng(3))
    again = estimator.estimate(features, task, np.random.default_rng(3))
    other = estimator.estimate(features, task, np.random.default_rng(4))
    assert first == again
    assert other.details != first.details  # the generator is really used


def test_the_search_range_is_bounded_by_known_classes_and_twice_k():
    estimate = registry.get("k-estimator", "silhouette").estimate(
        _blobs(6), _task(6, 4), np.random.default_rng(0)
    )
    assert estimate.details["range"] == [4, 12]
    ks = [k for k, _ in estimate.details["curve"]]
    assert ks == sorted(ks) and ks[0] == 4 and ks[-1] == 12


def _best(curve: Curve) -> int:
    return curve.ks[int(np.argmax(curve.values))]


def test_coarse_to_fine_finds_a_peak_scoring_few_k():
    scored: list[int] = []

    def score(k: int) -> float:
        scored.append(k)
        return -abs(k - 137)

    chosen, curve = coarse_to_fine(10, 400, 12, score, _best)
    assert chosen == 137
    assert len(scored) == len(set(scored)) < 60  # each K once; far fewer than 391
    assert list(curve.ks) == sorted(scored)


@pytest.mark.parametrize("grid", [3, 4, 12])
def test_coarse_to_fine_finds_every_peak_of_a_small_range(grid):
    for peak in range(2, 31):
        chosen, curve = coarse_to_fine(2, 30, grid, lambda k, p=peak: -abs(k - p), _best)
        assert chosen == peak, (grid, peak)
        assert {peak - 1, peak + 1} & set(range(2, 31)) <= set(curve.ks)


def test_the_knee_is_the_point_farthest_from_the_chord():
    ks = tuple(range(2, 21))
    # Steep down to K = 8, then nearly flat: the elbow is at 8, whatever the units.
    values = tuple(1000.0 - 150 * min(k, 8) - 2 * max(0, k - 8) for k in ks)
    assert knee(Curve(ks, values)) == 8
    assert knee(Curve(ks, tuple(v / 1000 for v in values))) == 8
    line = tuple(float(-k) for k in ks)
    assert knee(Curve(ks, line)) == 2  # no knee: the first K


def test_the_cluster_size_count_keeps_clusters_of_at_least_the_mean_size():
    sizes = [300, 300, 300, 10, 10, 10, 10, 10, 10]
    features = np.concatenate(
        [
            np.eye(9, 16)[i] * 50 + np.random.default_rng(i).normal(0, 0.5, (n, 16))
            for i, n in enumerate(sizes)
        ]
    )
    count = count_large_clusters(features, 9, seed=0)
    assert (count.k, count.threshold) == (3, 960 / 9)
    assert count.sizes == tuple(sorted(sizes, reverse=True))
    assert count_large_clusters(features, 9, seed=0, share=0.01).k == 9


# -- the --k value -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "choice"),
    [
        (None, KChoice()),
        ("true", KChoice()),
        (" TRUE ", KChoice()),
        ("50", KChoice(fixed=50)),
        ("estimate:elbow", KChoice(estimator="elbow")),
    ],
)
def test_k_values(value, choice):
    assert parse_k(value) == choice


@pytest.mark.parametrize("value", ["0", "1", "-3", "2.5", "many", "estimate:", ""])
def test_bad_k_values_say_what_to_pass(value):
    with pytest.raises(GcdbenchError, match="--k"):
        parse_k(value)


def test_the_true_k_leaves_specs_and_their_hashes_as_they_were():
    spec = RunSpec("kmeans", "banking", 0.25, 0, params={"n_init": 10}, method_version="1")
    # The hash this spec had before RunSpec knew `k` (pinned: every stored run id keeps it).
    assert spec.hash == "30f06fc71bc64714f218e704e280577274f398b4d6c192df9a12920ecc25cc93"
    assert "k" not in spec.to_dict() and "k_version" not in spec.to_dict()
    estimated = resolve_spec("kmeans", "banking", 0.25, 0, k="estimate:silhouette")
    assert (estimated.k, estimated.k_version) == ("estimate:silhouette", "1")
    assert estimated.hash != resolve_spec("kmeans", "banking", 0.25, 0).hash
    assert resolve_spec("kmeans", "banking", 0.25, 0, k="true") == resolve_spec(
        "kmeans", "banking", 0.25, 0
    )
    assert RunSpec.from_dict(estimated.to_dict()) == estimated


class _NoEncoder(Method):
    """A method that reads no features: an estimate has nothing to read for it."""

    name = "test-no-encoder"
    uses = ()

    def run(self, task: GCDTask, ctx: Any) -> MethodOutput:
        return MethodOutput(test_assignments=np.arange(len(task.test)) % task.num_classes)


class _NoEncoderPlugin:
    @hookimpl
    def register_methods(self, register):
        register(_NoEncoder)


def test_a_method_without_an_encoder_takes_a_fixed_k_but_no_estimate():
    registry.register_plugin(_NoEncoderPlugin(), "test-no-encoder")
    try:
        with pytest.raises(GcdbenchError, match="uses no encoder; pass a fixed --k N"):
            resolve_spec("test-no-encoder", "banking", 0.25, 0, k="estimate:elbow")
        assert resolve_spec("test-no-encoder", "banking", 0.25, 0, k="30").k == "30"
    finally:
        registry.unregister_plugin("test-no-encoder")


# -- runs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slices(shared_data, tmp_path_factory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("k-slices")
    write_slices(shared_data, root, {SLICE: 6})
    registry.register_plugin(SlicePlugin({SLICE: 6}), "test-k-slices")
    yield root
    registry.unregister_plugin("test-k-slices")


def _run(slices: Path, results: Path, *extra: str):
    return _gcd(
        *("run", "kmeans", "-d", SLICE, "--known-ratio", "0.5", "--encoder", "bag-of-words"),
        *("-p", "n_init=2", "--data-dir", str(slices), "--results-dir", str(results), *extra),
    )


def _record(results: Path) -> dict[str, Any]:
    (path,) = results.rglob("record.json")
    return json.loads(path.read_text())


def _one_error_line(result) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.exit_code == 2, result.output
    return errors[0]


def test_an_estimated_k_run_records_true_and_estimated_k(slices, tmp_path):
    plain = _run(slices, tmp_path / "plain", "-q")
    assert plain.exit_code == 0, plain.output
    default = _record(tmp_path / "plain")
    assert "k" not in default["split"] and "k" not in default["spec"]

    estimated = _run(slices, tmp_path / "est", "--k", "estimate:silhouette")
    assert estimated.exit_code == 0, estimated.output
    assert "estimated by silhouette (true K 6)" in " ".join(estimated.output.split())
    record = _record(tmp_path / "est")
    k = record["split"]["k"]
    assert (k["true"], k["estimator"], k["version"]) == (6, "silhouette", "1")
    assert 3 <= k["estimated"] <= 12 and k["details"]["range"] == [3, 12]
    assert record["spec"]["k"] == "estimate:silhouette"
    assert "k-estimator" in record["identity"]["plugins"]
    assert record["run_id"] != default["run_id"]
    assert record["provenance"]["durations_s"]["k_estimate"] > 0
    # K-means was told the estimate; the metrics still match against the 6 gold classes.
    clusters = {int(row.split(",")[2]) for row in _predictions(tmp_path / "est")}
    assert len(clusters) == k["estimated"]
    assert record["split"]["num_known"] == default["split"]["num_known"] == 3

    again = _run(slices, tmp_path / "again", "--k", "estimate:silhouette", "-q")
    assert again.exit_code == 0
    repeat = _record(tmp_path / "again")
    assert repeat["run_id"] == record["run_id"] and repeat["split"]["k"] == k
    assert _predictions(tmp_path / "again") == _predictions(tmp_path / "est")
    assert stale_reasons(load_record(next((tmp_path / "est").rglob("record.json")))) == []


def _predictions(results: Path) -> list[str]:
    (path,) = results.rglob("predictions.csv")
    return path.read_text().splitlines()[1:]


def test_a_fixed_k_and_a_changed_estimator_version(slices, tmp_path, monkeypatch):
    fixed = _run(slices, tmp_path / "fixed", "--k", "4", "-q")
    assert fixed.exit_code == 0, fixed.output
    record = _record(tmp_path / "fixed")
    assert record["split"]["k"] == {"true": 6, "fixed": 4}
    assert len({int(row.split(",")[2]) for row in _predictions(tmp_path / "fixed")}) == 4

    elbow = _run(slices, tmp_path / "elbow", "--k", "estimate:elbow", "-q")
    assert elbow.exit_code == 0, elbow.output
    path = next((tmp_path / "elbow").rglob("record.json"))
    monkeypatch.setattr(type(registry.get("k-estimator", "elbow")), "version", "2")
    assert stale_reasons(load_record(path)) == ["K estimator version 1 (installed: 2)"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("estimate:nope", ["unknown k-estimator 'nope'", "silhouette"]),
        ("0", ["--k", "estimate:silhouette"]),
        ("", ["--k is empty"]),
        ("2", ["fewer clusters than the 3 known classes"]),
        ("500", ["more clusters than this split has texts"]),
    ],
)
def test_bad_k_stops_with_one_line(slices, tmp_path, value, words):
    result = _run(slices, tmp_path / "results", "--k", value, "-q")
    line = _one_error_line(result)
    assert all(word in line for word in words), line
    if value != "500":  # known only once the split is drawn: a failed run, nothing kept
        assert not (tmp_path / "results").exists()
    assert not list((tmp_path / "results").rglob("record.json"))


# -- sweep plans -------------------------------------------------------------------------------

PLAN = """
encoder = "bag-of-words"
[axes]
datasets = ["massive_scenario"]
known_ratios = [0.5]
seeds = [0]
[[methods]]
name = "kmeans"
[[methods]]
name = "kmeans"
k = "estimate:silhouette"
"""
KMEANS = '[[methods]]\nname = "kmeans"\n'


def _plan(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_a_plan_key_gives_the_spec_the_flag_gives(tmp_path):
    planned = expand(load_plan(_plan(tmp_path, PLAN)))
    assert [p.label for p in planned] == ["kmeans #1", "kmeans [K=est:silhouette] #2"]
    plain, estimated = (p.spec for p in planned)
    assert plain.k is None and estimated.k == "estimate:silhouette"
    flag = resolve_spec(
        "kmeans", "massive_scenario", 0.5, 0, encoder="bag-of-words", k="estimate:silhouette"
    )
    assert estimated == flag
    # A top-level k is every method's default, as a top-level encoder is.
    top = PLAN.split("[[methods]]")[0].replace("[axes]", "k = 12\n[axes]") + KMEANS
    assert {p.spec.k for p in expand(load_plan(_plan(tmp_path, top)))} == {"12"}


@pytest.mark.parametrize(
    ("value", "words"),
    [("true", ["k", "a string or an integer"]), ('"estimate:nope"', ["k", "'nope'"])],
)
def test_a_bad_plan_k_names_the_key(tmp_path, value, words):
    path = _plan(tmp_path, PLAN.replace('"estimate:silhouette"', value))
    with pytest.raises(GcdbenchError) as caught:
        expand(load_plan(path))
    message = str(caught.value)
    assert "\n" not in message and "#2" in message and all(w in message for w in words)


# -- the leaderboard ---------------------------------------------------------------------------


def _result(seed: int, acc: float, k: str | None = None) -> ResultRecord:
    spec = RunSpec("alpha", "banking", 0.25, seed, k=k, k_version="1" if k else "")
    return ResultRecord(
        spec=spec,
        metrics={"acc": acc, "ari": acc / 2, "nmi": acc / 3},
        split={},
        data={},
        method={},
        encoder=None,
        provenance={"finished_at": "2025-01-01T00:00:00+00:00"},
    )


def test_the_leaderboard_shows_estimated_k_beside_the_true_k():
    true_k = [_result(s, 60.0 + s) for s in (0, 1)]
    estimated = [_result(s, 50.0 + s, "estimate:silhouette") for s in (0, 1)]
    fixed = [_result(0, 40.0, "40")]
    before = leaderboard_markdown(true_k, references=[])
    assert K_NOTE not in before
    text = leaderboard_markdown([*true_k, *estimated, *fixed], references=[])
    rows = [line.split(" | ")[0].strip("| ") for line in text.splitlines() if "| alpha" in line]
    assert rows == ["alpha", "alpha [K=40]", "alpha [K=est:silhouette]"]
    assert K_NOTE in text
    assert "--k estimate:silhouette" in text and "--k 40" in text
    frame = aggregate([*true_k, *estimated]).set_index("row")
    assert frame.loc["alpha", "acc_mean"] == 60.5
    assert frame.loc["alpha [K=est:silhouette]", "acc_mean"] == 50.5
    # The true-K row reads as it did without the others, bar the best/second marks.
    plain_row = next(line for line in before.splitlines() if line.startswith("| alpha |"))
    both_row = next(line for line in text.splitlines() if line.startswith("| alpha |"))
    assert both_row.replace("**", "") == plain_row.replace("**", "")
