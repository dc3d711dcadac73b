"""`gcdbench data check`: what in a dataset would bend a GCD run, each problem named with
what the split does about it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench import hookimpl, registry
from gcdbench.api.dataset import DatasetDefinition, DatasetParts, RemoteFile
from gcdbench.cli import cli
from gcdbench.data.checks import DataIssue, check_dataset, stop_on_errors
from gcdbench.data.loading import load_dataset
from gcdbench.data.split import make_split
from gcdbench.errors import DataError
from gcdbench_builtins.datasets import DATASETS

BY_NAME = {d.name: d for d in DATASETS}
FILE = "rows.jsonl"


def _rows(counts: dict[str, int]) -> list[tuple[str, str]]:
    return [(f"text {i} of {label}", label) for label, n in counts.items() for i in range(n)]


def _dataset(
    folder: Path, rows: list[tuple[str, str]], *, name: str = "toy", **kw: object
) -> tuple[DatasetDefinition, DatasetParts]:
    """Write ``rows`` as a JSON-lines file with its sha256 published, and load it."""
    folder.mkdir(parents=True, exist_ok=True)
    content = "".join(json.dumps({"input": t, "label": y}) + "\n" for t, y in rows)
    (folder / FILE).write_text(content, encoding="utf-8")
    sha = hashlib.sha256(content.encode()).hexdigest()
    k = len({y for _, y in rows})
    defn = DatasetDefinition(
        name, "", "single-jsonl", (RemoteFile(FILE, "", sha),), k, local_dir=folder, **kw
    )
    return defn, load_dataset(defn, folder)


def _by_code(issues: list[DataIssue]) -> dict[str, DataIssue]:
    codes = [i.code for i in issues]
    assert len(codes) == len(set(codes)), codes
    for issue in issues:
        assert "\n" not in issue.message and issue.severity in ("error", "warning", "info")
        json.dumps(issue.to_dict())  # recordable as it is
    return {i.code: i for i in issues}


def test_clean_data_has_no_issues(tmp_path: Path) -> None:
    defn, parts = _dataset(tmp_path, _rows({"a": 20, "b": 20, "c": 20, "d": 20}))
    assert check_dataset(parts, defn, known_ratio=0.25, labeled_ratio=0.1) == []


def test_class_too_small_for_the_partition(tmp_path: Path) -> None:
    """One class of four rows: the partition keeps it out of test, and the check says so."""
    defn, parts = _dataset(tmp_path, _rows({"big": 30, "other": 30, "tiny": 4, "few": 8}))
    assert "tiny" in parts.classes and "tiny" not in parts.test.labels
    issues = _by_code(check_dataset(parts, defn))
    issue = issues["class-missing-from-test"]
    assert issue.severity == "warning"
    assert issue.details["classes"] == ["tiny"]
    assert "1 of 4 classes has fewer than 5 rows" in issue.message
    assert "'tiny' (4 rows)" in issue.message and "no test text is of them" in issue.message
    assert issues["class-missing-from-dev"].details["classes"] == ["few"]
    assert issues["class-missing-from-dev"].severity == "info"


def test_class_missing_from_a_published_test_file(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "train.tsv").write_text("text\tlabel\na\tx\nb\ty\n", encoding="utf-8")
    (folder / "dev.tsv").write_text("text\tlabel\nc\tx\n", encoding="utf-8")
    (folder / "test.tsv").write_text("text\tlabel\nd\tx\n", encoding="utf-8")
    files = tuple(RemoteFile(n, "", "") for n in ("train.tsv", "dev.tsv", "test.tsv"))
    defn = DatasetDefinition("toy", "", "gcd-tsv", files, 2)
    issues = _by_code(check_dataset(load_dataset(defn, folder), defn))
    assert "no row in test.tsv: 'y' (1 row)" in issues["class-missing-from-test"].message
    assert "publishes no sha256 for train.tsv, dev.tsv, test.tsv" in (
        issues["no-published-sha256"].message
    )


def test_conflicting_labels_name_both_places(tmp_path: Path) -> None:
    rows = [*_rows({"a": 20, "b": 20}), ("same words", "a"), ("same words", "b")]
    defn, parts = _dataset(tmp_path, rows)
    issue = _by_code(check_dataset(parts, defn))["conflicting-labels"]
    assert issue.severity == "warning"
    assert "'same words' is 'a' at rows.jsonl line 41 and 'b' at rows.jsonl line 42" in (
        issue.message
    )
    assert "keeps every row with its own label" in issue.message
    assert issue.details["texts"] == [{"text": "same words", "labels": ["a", "b"]}]


def test_empty_and_whitespace_texts(tmp_path: Path) -> None:
    rows = [("", "a"), *_rows({"a": 20, "b": 20}), ("  \t", "b")]
    defn, parts = _dataset(tmp_path, rows)
    issue = _by_code(check_dataset(parts, defn))["empty-texts"]
    assert issue.details["rows"] == ["rows.jsonl line 1", "rows.jsonl line 42"]
    assert "2 rows have an empty or whitespace-only text" in issue.message


def test_all_identical_texts_is_an_error(tmp_path: Path) -> None:
    rows = [("same", label) for label in "abcd" for _ in range(10)]
    defn, parts = _dataset(tmp_path, rows)
    issues = check_dataset(parts, defn)
    assert issues[0].code == "identical-texts" and issues[0].severity == "error"
    with pytest.raises(DataError, match="all 40 rows of 'toy' have the same text 'same'"):
        stop_on_errors(issues)
    stop_on_errors([i for i in issues if i.severity != "error"])  # warnings never stop


def test_a_class_repeating_one_text(tmp_path: Path) -> None:
    rows = [*_rows({"a": 20, "b": 20}), *[("copy", "c")] * 12]
    defn, parts = _dataset(tmp_path, rows)
    issue = _by_code(check_dataset(parts, defn))["class-identical-texts"]
    assert issue.details["classes"] == ["c"] and "'c' (12 rows)" in issue.message


def test_known_class_without_labeled_example(tmp_path: Path) -> None:
    # 'small' has 4 rows, so 4 train rows after the partition: round(4 × 0.1) = 0.
    defn, parts = _dataset(tmp_path, _rows({"a": 40, "b": 40, "c": 40, "small": 4}))
    issue = _by_code(check_dataset(parts, defn, labeled_ratio=0.1))["known-class-unlabeled"]
    assert issue.details["classes"] == ["small"]
    assert "'small' (4 train rows)" in issue.message and "0.126" in issue.message
    issues = check_dataset(parts, defn, labeled_ratio=0.2)  # round(4 × 0.2) = 1
    assert "known-class-unlabeled" not in [i.code for i in issues]

    # With a split: only the classes this seed drew as known are named.
    seeds = {
        seed: make_split(parts, known_ratio=0.5, labeled_ratio=0.1, seed=seed) for seed in range(20)
    }
    drawn = next(s for s in seeds.values() if "small" in s.known_classes)
    issue = _by_code(check_dataset(parts, defn, split=drawn))["known-class-unlabeled"]
    assert issue.details["classes"] == ["small"] and issue.details["seed"] == drawn.seed
    assert f"of the 2 known classes of seed {drawn.seed}" in issue.message
    passed = next(s for s in seeds.values() if "small" not in s.known_classes)
    issues = check_dataset(parts, defn, split=passed)
    assert "known-class-unlabeled" not in [i.code for i in issues]


def test_known_ratio_extremes(tmp_path: Path) -> None:
    defn, parts = _dataset(tmp_path, _rows({"a": 20, "b": 20, "c": 20, "d": 20}))
    issues = check_dataset(parts, defn, known_ratio=0.1)  # round(0.4) = 0
    assert [(i.code, i.severity) for i in issues] == [("no-known-classes", "error")]
    issues = check_dataset(parts, defn, known_ratio=1.0)
    assert [(i.code, i.severity) for i in issues] == [("no-novel-classes", "warning")]


def test_modified_file_and_unused_label_names(tmp_path: Path) -> None:
    defn, _ = _dataset(tmp_path, _rows({"a": 20, "b": 20}), label_names={"A": "x", "zz": "y"})
    with open(tmp_path / FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"input": "one more", "label": "a"}) + "\n")
    issues = _by_code(check_dataset(load_dataset(defn, tmp_path), defn))
    assert "differs from the published file" in issues["unverified-file"].message
    assert issues["unused-label-names"].details["labels"] == ["zz"]


def test_builtin_sets(shared_data: Path) -> None:
    """What the check says about the built-in sets (their files are the published ones)."""
    for name in ("banking", "massive_scenario"):
        parts = BY_NAME[name].load(shared_data / name)
        assert check_dataset(parts, BY_NAME[name], known_ratio=0.25, labeled_ratio=0.1) == []
    parts = BY_NAME["massive_intent"].load(shared_data / "massive_intent")
    issue = _by_code(check_dataset(parts, BY_NAME["massive_intent"]))["class-missing-from-test"]
    missing = sorted(set(parts.classes) - set(parts.test.labels))
    assert issue.details["classes"] == missing and len(missing) == 3
    assert "3 of 59 classes have fewer than 5 rows" in issue.message


# -- the command ------------------------------------------------------------------------------


class _Toys:
    def __init__(self) -> None:
        self.definitions: list[DatasetDefinition] = []

    @hookimpl
    def register_datasets(self, register) -> None:
        for definition in self.definitions:
            register(definition)


@pytest.fixture
def toys() -> Iterator[_Toys]:
    plugin = _Toys()
    registry.register_plugin(plugin, "test-data-check-toys")
    yield plugin
    registry.unregister_plugin("test-data-check-toys")


def _add(toys: _Toys, definition: DatasetDefinition) -> None:
    toys.definitions.append(definition)
    registry.unregister_plugin("test-data-check-toys")  # rebuild the registry with it
    registry.register_plugin(toys, "test-data-check-toys")


def _check(*args: str):
    return CliRunner().invoke(cli, ["data", "check", *args])


def test_command_warns_with_exit_0(toys: _Toys, tmp_path: Path) -> None:
    defn, _ = _dataset(tmp_path, _rows({"a": 30, "b": 30, "tiny": 3}), name="toy_warn")
    _add(toys, defn)
    result = _check("toy_warn")
    assert result.exit_code == 0, result.output
    assert f"toy_warn: 3 classes, 63 rows (train 45, dev 6, test 12) in {tmp_path}" in result.output
    assert "(from plugin)" in result.output and "verified" in result.output
    assert "warning [class-missing-from-test]: 1 of 3 classes has fewer than 5 rows" in (
        result.output
    )
    result = _check("toy_warn", "--json", "--known-ratio", "0.5", "--seed", "1")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["origin"] == "plugin" and out["classes"] == 3
    assert "class-missing-from-test" in [i["code"] for i in out["issues"]]


def test_command_stops_on_errors_with_exit_2(toys: _Toys, tmp_path: Path) -> None:
    defn, _ = _dataset(tmp_path, [("same", y) for y in "abc" for _ in range(10)], name="toy_err")
    _add(toys, defn)
    result = _check("toy_err")
    assert result.exit_code == 2, result.output
    assert "error [identical-texts]" in result.output
    [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
    assert "toy_err cannot be run: all 30 rows" in line


def test_command_clean_builtin(shared_data: Path) -> None:
    result = _check("massive_scenario", "--data-dir", str(shared_data), "--seed", "0")
    assert result.exit_code == 0, result.output
    assert "massive_scenario: no problems found" in result.output
    result = _check("massive_scenario", "--data-dir", str(shared_data), "--known-ratio", "2")
    assert result.exit_code == 2 and "--known-ratio must be in (0, 1]" in result.stderr
