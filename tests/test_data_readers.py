"""File readers, dataset loading and the built-in catalogue."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from gcdbench import registry
from gcdbench.api.dataset import DatasetDefinition, RemoteFile
from gcdbench.data.loading import load_dataset, partition_rows
from gcdbench.data.readers import read_gcd_tsv, read_jsonl, read_label_names
from gcdbench.errors import DataError
from gcdbench_builtins.datasets import DATASETS

BY_NAME = {d.name: d for d in DATASETS}

# (train, dev, test, classes) from the data README; JSONL parts follow single-jsonl-v1.
EXPECTED = {
    "banking": (9003, 1000, 3080, 77),
    "clinc": (18000, 2250, 2250, 150),
    "stackoverflow": (18000, 1000, 1000, 20),
    "arxiv_fine": (2582, 362, 730, 93),
    "go_emotion": (4184, 581, 1175, 27),
    "massive_intent": (2128, 272, 574, 59),
    "massive_scenario": (2097, 290, 587, 18),
    "mtop_intent": (3150, 400, 836, 102),
}
README_ROWS = {
    "arxiv_fine": 3674,
    "go_emotion": 5940,
    "massive_intent": 2974,
    "massive_scenario": 2974,
    "mtop_intent": 4386,
}


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _error(reader, path: Path) -> str:
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert "\n" not in message
    assert path.name in message
    return message


# --- TSV ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("txt\tlabel\na\tb\n", 1, "header"),
        ("", 1, "header"),
        ("text\tlabel\na\tb\nthree\tfields\there\n", 3, "got 3"),
        ("text\tlabel\na\tb\nno tab\n", 3, "got 1"),
        ("text\tlabel\na\tb\nc\t\n", 3, "empty label"),
        ("text\tlabel\na\tb\n\nc\td\n", 3, "got 0"),
        ('text\tlabel\n"multi\nline"\tx\nbad\n', 4, "got 1"),
    ],
)
def test_tsv_malformed_rows(tmp_path: Path, content: str, line: int, words: str) -> None:
    path = _write(tmp_path / "banking" / "train.tsv", content)
    message = _error(read_gcd_tsv, path)
    assert f"line {line}:" in message
    assert words in message
    assert "gcdbench data download banking" in message


def test_tsv_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path / "clinc" / "dev.tsv", b"text\tlabel\nok\ta\ncaf\xe9\tb\n")
    assert "line 3: not valid UTF-8" in _error(read_gcd_tsv, path)


def test_tsv_missing_file(tmp_path: Path) -> None:
    message = _error(read_gcd_tsv, tmp_path / "clinc" / "test.tsv")
    assert "gcdbench data download clinc" in message and "GCDBENCH_DATA" in message


def test_tsv_quoting_and_case(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "x" / "train.tsv",
        'text\tlabel\n"two\nlines"\tRefund_Not\nsaid ""hi""\tb\n"tab\tinside"\tc\n',
    )
    texts, labels = read_gcd_tsv(path)
    assert texts == ["two\nlines", 'said ""hi""', "tab\tinside"]
    assert labels == ["refund_not", "b", "c"]


def test_banking_train(shared_data: Path) -> None:
    texts, labels = read_gcd_tsv(shared_data / "banking" / "train.tsv")
    assert len(texts) == len(labels) == 9003
    assert len(set(labels)) == 77
    assert sum("\n" in t for t in texts) == 10
    assert "refund_not_showing_up" in labels
    assert all(label == label.lower() for label in labels)


# --- JSONL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line2", "words"),
    [
        ("{not json", "not valid JSON"),
        ('{"task": "t", "label": "a"}', "missing key 'input'"),
        ('{"task": "t", "input": "x"}', "missing key 'label'"),
        ('{"input": "x", "label": ""}', "non-empty string"),
        ('{"input": 3, "label": "a"}', "'input' must be a string"),
        ("[1, 2]", "expected a JSON object"),
        ("", "empty line"),
    ],
)
def test_jsonl_malformed_rows(tmp_path: Path, line2: str, words: str) -> None:
    good = json.dumps({"task": "t", "input": "x", "label": "a"})
    path = _write(tmp_path / "go_emotion" / "small.jsonl", f"{good}\n{line2}\n{good}\n")
    message = _error(read_jsonl, path)
    assert "line 2:" in message and words in message
    assert "gcdbench data download go_emotion" in message


def test_jsonl_not_utf8(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m" / "small.jsonl", b'{"input": "a", "label": "b"}\n{"input": "\xff"}\n'
    )
    assert "line 2: not valid UTF-8" in _error(read_jsonl, path)


def test_jsonl_reads_rows(tmp_path: Path) -> None:
    rows = [{"task": "t", "input": "same\u2028text", "label": "cs.IT"}] * 2
    path = _write(tmp_path / "a" / "small.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert read_jsonl(path) == (["same\u2028text"] * 2, ["cs.it"] * 2)


# --- label names --------------------------------------------------------------------------


def test_stackoverflow_label_names(shared_data: Path) -> None:
    names = read_label_names(shared_data / "stackoverflow" / "label_names.tsv")
    assert names == dict(BY_NAME["stackoverflow"].label_names or {})
    assert len(names) == 20 and names["1"] == "wordpress" and names["20"] == "magento"


def test_label_names_malformed(tmp_path: Path) -> None:
    path = _write(tmp_path / "s" / "label_names.tsv", "label\tname\n1\ta\n1\tb\n")
    assert "line 3:" in _error(read_label_names, path)
    path = _write(tmp_path / "s" / "label_names.tsv", "text\tlabel\n1\ta\n")
    assert "header" in _error(read_label_names, path)


# --- loading ------------------------------------------------------------------------------


def test_catalogue_registered() -> None:
    assert set(BY_NAME) <= set(registry.names("dataset"))
    assert registry.get("dataset", "banking") is BY_NAME["banking"]
    assert BY_NAME["massive_scenario"].task == "scenario"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_load_every_dataset(shared_data: Path, name: str) -> None:
    defn = BY_NAME[name]
    parts = defn.load(shared_data / name)
    n_train, n_dev, n_test, k = EXPECTED[name]
    assert parts.dev is not None
    assert (len(parts.train), len(parts.dev), len(parts.test)) == (n_train, n_dev, n_test)
    assert len(parts.classes) == k == defn.num_classes
    assert list(parts.classes) == sorted(parts.classes)
    assert set(parts.label_names) == set(parts.classes)
    published = {f.name: f.sha256 for f in defn.files}
    for file in parts.files:
        if file.name in published:
            assert file.verified and file.sha256 == published[file.name]
    if name in README_ROWS:
        assert n_train + n_dev + n_test == README_ROWS[name]
        rows = [parts.train.rows, parts.dev.rows, parts.test.rows]
        every = sorted(int(r) for part in rows for r in part)
        assert every == list(range(README_ROWS[name]))  # disjoint and covering
        assert parts.protocol["partition"] == "single-jsonl-v1"
        texts, _ = read_jsonl(shared_data / name / "small.jsonl")
        assert parts.test.texts == [texts[i] for i in parts.test.rows]


def test_stackoverflow_order_and_names(shared_data: Path) -> None:
    parts = BY_NAME["stackoverflow"].load(shared_data / "stackoverflow")
    assert parts.classes[:4] == ("1", "10", "11", "12")
    assert parts.label_names["7"] == "visual-studio"
    assert [f.name for f in parts.files] == ["train.tsv", "dev.tsv", "test.tsv", "label_names.tsv"]


def test_label_names_fall_back_to_definition(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "stackoverflow"
    folder.mkdir()
    for name in ("train.tsv", "dev.tsv", "test.tsv"):
        (folder / name).write_bytes((shared_data / "stackoverflow" / name).read_bytes())
    parts = BY_NAME["stackoverflow"].load(folder)
    assert parts.label_names["10"] == "bash"
    assert all(f.verified for f in parts.files)


def test_unverified_and_stray_labels(tmp_path: Path) -> None:
    folder = tmp_path / "toy"
    _write(folder / "train.tsv", "text\tlabel\na\tx\nb\ty\n")
    _write(folder / "dev.tsv", "text\tlabel\nc\tx\n")
    _write(folder / "test.tsv", "text\tlabel\nd\tz\n")
    files = tuple(RemoteFile(n, "u", "0" * 64) for n in ("train.tsv", "dev.tsv", "test.tsv"))
    defn = DatasetDefinition("toy", "", "gcd-tsv", files, 2)
    with pytest.raises(DataError, match=r"test\.tsv has labels that train\.tsv lacks"):
        load_dataset(defn, folder)
    _write(folder / "test.tsv", "text\tlabel\nd\tX\n")
    parts = load_dataset(defn, folder)
    assert not any(f.verified for f in parts.files)
    sha = hashlib.sha256((folder / "train.tsv").read_bytes()).hexdigest()
    assert parts.train.file.sha256 == sha
    with pytest.raises(DataError) as info:
        load_dataset(DatasetDefinition("toy", "", "gcd-tsv", files, 3), folder)
    message = str(info.value)
    assert "has 2 classes, but the definition of 'toy' says num_classes=3" in message
    assert "does not match the definition" in message and "another version" in message
    assert "re-download" not in message
    with pytest.raises(DataError, match="gcdbench data download toy"):
        load_dataset(defn, tmp_path / "elsewhere")


def test_partition_protocol() -> None:
    labels = ["a"] * 4 + ["b"] * 10 + ["c"] * 23 + ["a"]
    rows = partition_rows(labels)
    again = partition_rows(labels)
    assert all(rows[k].tolist() == again[k].tolist() for k in ("train", "dev", "test"))
    every = sorted(int(r) for part in rows.values() for r in part)
    assert every == list(range(len(labels)))
    for part in rows.values():
        assert list(part) == sorted(part)
    by_label = {k: [labels[i] for i in v] for k, v in rows.items()}
    # a: 5 rows -> 1 test, 0 dev; b: 10 -> 2 test, 1 dev; c: 23 -> 4 test, 2 dev
    assert sorted(by_label["test"]) == ["a"] + ["b"] * 2 + ["c"] * 4
    assert sorted(by_label["dev"]) == ["b"] + ["c"] * 2
    assert partition_rows(["a"] * 4)["train"].tolist() == [0, 1, 2, 3]


# sha256 of json.dumps([train rows, dev rows, test rows]) under single-jsonl-v1.
FROZEN_PARTITIONS = {
    "arxiv_fine": "66031acc8785e7a66e07d9d1745674050dd2a4c5969227614b83916c772727c2",
    "go_emotion": "f3bd49c431baaca5cf2113c27564d04328393542515b5b31d583800cef796a2e",
    "massive_intent": "5f633e6d9ff21cf65dff922ea934e97ab0be3d7ba9172ddca01c4cb9e54cf925",
    "massive_scenario": "86c2609224e982478a2d189310da570cc343df4395d1556dc61b2244e2fb01a0",
    "mtop_intent": "859054cb740eb8d4ddb4f11fd03158d8e806d2c9031c0030c73dc0690d1491ec",
}


@pytest.mark.parametrize("name", sorted(FROZEN_PARTITIONS))
def test_partition_is_frozen(shared_data: Path, name: str) -> None:
    """single-jsonl-v1 must never change: every stored result on these sets depends on it."""
    parts = BY_NAME[name].load(shared_data / name)
    assert parts.dev is not None
    rows = [parts.train.rows.tolist(), parts.dev.rows.tolist(), parts.test.rows.tolist()]
    assert hashlib.sha256(json.dumps(rows).encode()).hexdigest() == FROZEN_PARTITIONS[name]


def test_wrong_class_count_with_the_published_file_blames_the_plugin(tmp_path: Path) -> None:
    path = _write(tmp_path / "toy" / "data.jsonl", _jsonl([("a", "x"), ("b", "y")]))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    defn = DatasetDefinition("toy", "", "single-jsonl", (RemoteFile("data.jsonl", "", sha),), 3)
    with pytest.raises(DataError) as info:
        load_dataset(defn, tmp_path / "toy")
    message = str(info.value)
    assert "num_classes=3 is wrong" in message and "re-download" not in message


# --- the single file's name, and control characters ----------------------------------------


def _jsonl(rows: list[tuple[str, str]]) -> str:
    return "".join(json.dumps({"task": "t", "input": t, "label": y}) + "\n" for t, y in rows)


def _single(name: str, k: int = 2) -> DatasetDefinition:
    return DatasetDefinition("toy", "", "single-jsonl", (RemoteFile(name, "", "0" * 64),), k)


def test_single_jsonl_reads_the_file_its_definition_names(tmp_path: Path) -> None:
    _write(tmp_path / "toy" / "tickets.jsonl", _jsonl([("a", "x"), ("b", "y")] * 5))
    parts = load_dataset(_single("tickets.jsonl"), tmp_path / "toy")
    assert [f.name for f in parts.files] == ["tickets.jsonl"]
    assert len(parts.train) + len(parts.dev) + len(parts.test) == 10
    with pytest.raises(DataError, match=r"small\.jsonl not found"):
        load_dataset(_single("small.jsonl"), tmp_path / "toy")


@pytest.mark.parametrize("names", [(), ("a.jsonl", "b.jsonl")])
def test_single_jsonl_needs_exactly_one_file(tmp_path: Path, names: tuple[str, ...]) -> None:
    files = tuple(RemoteFile(n, "", "0" * 64) for n in names)
    defn = DatasetDefinition("toy", "", "single-jsonl", files, 2)
    with pytest.raises(DataError, match=f"lists {len(names)} .jsonl files"):
        load_dataset(defn, tmp_path)


@pytest.mark.parametrize(
    ("text", "label", "words"),
    [
        ("fine", "bad\x00", "label 'bad\\x00' contains the control character U+0000 (NUL)"),
        ("fine", "a\tb", "U+0009"),
        ("nul\x00inside", "x", "the text contains the control character U+0000 (NUL)"),
        ("escape \x1b[0m", "x", "U+001B"),
        ("c1 \x85", "x", "U+0085"),
    ],
)
def test_control_characters_stop_the_load(
    tmp_path: Path, text: str, label: str, words: str
) -> None:
    rows = [("ok", "x"), (text, label), ("ok", "y")]
    path = _write(tmp_path / "toy" / "data.jsonl", _jsonl(rows))
    message = _error(read_jsonl, path)
    assert "line 2:" in message and words in message
    tsv = _write(
        tmp_path / "toy" / "train.tsv",
        "text\tlabel\n" + "".join(f'"{t}"\t"{y}"\n' for t, y in rows),
    )
    message = _error(read_gcd_tsv, tsv)
    assert "line 3:" in message and words in message


def test_tab_and_newlines_stay_allowed_in_texts(tmp_path: Path) -> None:
    path = _write(tmp_path / "toy" / "data.jsonl", _jsonl([("a\tb\r\nc\u200d", "x")]))
    assert read_jsonl(path) == (["a\tb\r\nc\u200d"], ["x"])


def test_nul_label_is_one_line_from_the_cli(tmp_path: Path) -> None:
    """The bad-input case: a NUL in a label stops `data check` and `run` with exit 2."""
    from click.testing import CliRunner

    from gcdbench.cli import cli

    data = tmp_path / "data"
    content = _jsonl([("wake me up", "alarm"), ("play a song", "music\x00")] * 20)
    _write(data / "massive_scenario" / "small.jsonl", content)
    for args in (["data", "check"], ["run", "kmeans", "--results-dir", str(tmp_path / "r"), "-d"]):
        result = CliRunner().invoke(cli, [*args, "massive_scenario", "--data-dir", str(data)])
        assert result.exit_code == 2, result.output
        [line] = [x for x in result.stderr.splitlines() if x.startswith("error: ")]
        assert (
            "small.jsonl line 2" in line and "U+0000" in line and "Traceback" not in result.stderr
        )
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").rglob("*.json"))
