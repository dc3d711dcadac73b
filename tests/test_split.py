"""The GCD split protocol (glean-loop-v1), checked against the official GLEAN/Loop draws."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from gcdbench.api.dataset import DatasetParts
from gcdbench.data.split import build_task, load_split, make_split, save_split, split_hash
from gcdbench.errors import DataError, GcdbenchError
from gcdbench_builtins.datasets import DATASETS

BY_NAME = {d.name: d for d in DATASETS}

# Seed 42, in draw order (docs/methods/glean.md §1.3); the 10% lists are prefixes of these.
GOLDEN_25 = {
    "banking": [
        "automatic_top_up", "failed_transfer", "card_acceptance", "activate_my_card",
        "pending_card_payment", "pending_top_up", "transfer_not_received_by_recipient",
        "reverted_card_payment?", "receiving_money", "direct_debit_payment_not_recognised",
        "unable_to_verify_identity", "why_verify_identity", "card_swallowed",
        "card_delivery_estimate", "top_up_by_cash_or_cheque", "exchange_via_app",
        "card_about_to_expire", "balance_not_updated_after_bank_transfer",
        "extra_charge_on_statement",
    ],
    "clinc": [
        "new_card", "card_declined", "tell_joke", "oil_change_how", "no", "current_location",
        "lost_luggage", "what_are_your_hobbies", "meaning_of_life", "order_status",
        "share_location", "calendar", "directions", "book_flight", "carry_on",
        "ingredients_list", "rewards_balance", "measurement_conversion",
        "ingredient_substitution", "travel_alert", "credit_limit_change", "todo_list_update",
        "confirm_reservation", "traffic", "translate", "where_are_you_from",
        "schedule_maintenance", "what_is_your_name", "freeze_account", "credit_score",
        "change_language", "cancel", "make_call", "calculator", "flight_status", "whisper_mode",
        "how_busy", "cook_time",
    ],
    "stackoverflow": ["1", "7", "5", "10", "17"],
}  # fmt: skip
GOLDEN_10_LEN = {"banking": 8, "clinc": 15, "stackoverflow": 2}

# dataset, known ratio -> n_known, labeled for seeds 0/1/2/42, unlabeled (42), dev (42),
# test rows of known classes (42); labeled ratio 0.1 (docs/methods/glean.md §1.3 table).
COUNTS = {
    ("banking", 0.10): (8, (100, 100, 83, 98), 8905, 113, 320),
    ("banking", 0.25): (19, (212, 233, 206, 222), 8781, 249, 760),
    ("banking", 0.50): (38, (414, 452, 427, 449), 8554, 499, 1520),
    ("banking", 0.75): (58, (672, 679, 686, 692), 8311, 769, 2320),
    ("clinc", 0.10): (15, (180,) * 4, 17820, 225, 225),
    ("clinc", 0.25): (38, (456,) * 4, 17544, 570, 570),
    ("clinc", 0.50): (75, (900,) * 4, 17100, 1125, 1125),
    ("clinc", 0.75): (112, (1344,) * 4, 16656, 1680, 1680),
    ("stackoverflow", 0.10): (2, (180,) * 4, 17820, 100, 100),
    ("stackoverflow", 0.25): (5, (450,) * 4, 17550, 250, 250),
    ("stackoverflow", 0.50): (10, (900,) * 4, 17100, 500, 500),
    ("stackoverflow", 0.75): (15, (1350,) * 4, 16650, 750, 750),
}


@pytest.fixture(scope="module")
def loaded(shared_data: Path) -> dict[str, DatasetParts]:
    return {n: BY_NAME[n].load(shared_data / n) for n in ("banking", "clinc", "stackoverflow")}


def _split(parts: DatasetParts, known: float = 0.25, seed: int = 42, labeled: float = 0.1):
    return make_split(parts, known_ratio=known, labeled_ratio=labeled, seed=seed)


@pytest.mark.parametrize("name", sorted(GOLDEN_25))
def test_golden_known_classes(loaded: dict[str, DatasetParts], name: str) -> None:
    golden = GOLDEN_25[name]
    assert list(_split(loaded[name], 0.25).known_classes) == golden
    assert list(_split(loaded[name], 0.10).known_classes) == golden[: GOLDEN_10_LEN[name]]


@pytest.mark.parametrize(("name", "ratio"), sorted(COUNTS))
def test_golden_counts(loaded: dict[str, DatasetParts], name: str, ratio: float) -> None:
    n_known, labeled, unlabeled, dev, test_known = COUNTS[(name, ratio)]
    parts = loaded[name]
    got = [len(_split(parts, ratio, seed).labeled_rows) for seed in (0, 1, 2, 42)]
    assert got == list(labeled)
    split = _split(parts, ratio, 42)
    assert len(split.known_classes) == n_known
    assert len(split.unlabeled_rows) == unlabeled
    assert len(split.dev_rows) == dev
    assert len(split.test_rows) == len(parts.test)
    known = set(split.known_classes)
    assert sum(y in known for y in parts.test.labels) == test_known


def test_split_fields(loaded: dict[str, DatasetParts]) -> None:
    parts = loaded["banking"]
    split = _split(parts)
    assert split.protocol == "glean-loop-v1"
    assert list(split.labeled_rows) == sorted(split.labeled_rows)
    assert list(split.unlabeled_rows) == sorted(split.unlabeled_rows)
    assert not set(split.labeled_rows) & set(split.unlabeled_rows)
    assert len(split.labeled_rows) + len(split.unlabeled_rows) == len(parts.train)
    known = set(split.known_classes)
    assert all(parts.train.labels[r] in known for r in split.labeled_rows)
    assert all(parts.dev.labels[r] in known for r in split.dev_rows)  # type: ignore[union-attr]
    assert split.data_files == {f.name: f.sha256 for f in parts.files}
    assert all(type(r) is int for r in split.labeled_rows[:5])


def test_deterministic_and_hashed(loaded: dict[str, DatasetParts]) -> None:
    parts = loaded["stackoverflow"]
    a, b = _split(parts, seed=3), _split(parts, seed=3)
    assert a == b and a.hash == b.hash == split_hash(a)
    assert len(a.hash) == 64
    assert _split(parts, seed=4).hash != a.hash
    assert _split(parts, labeled=0.2, seed=3).hash != a.hash
    # an int ratio hashes like the equal float
    assert make_split(parts, known_ratio=1, labeled_ratio=0.1, seed=3).hash == (
        make_split(parts, known_ratio=1.0, labeled_ratio=0.1, seed=3).hash
    )


@pytest.mark.parametrize(
    ("known", "labeled", "message"),
    [
        (1.5, 0.1, "--known-ratio must be in (0, 1], got 1.5"),
        (0.0, 0.1, "--known-ratio must be in (0, 1], got 0.0"),
        (0.25, -0.1, "--labeled-ratio must be in (0, 1], got -0.1"),
        (float("nan"), 0.1, "--known-ratio must be in (0, 1], got nan"),
    ],
)
def test_ratio_validation(
    loaded: dict[str, DatasetParts], known: float, labeled: float, message: str
) -> None:
    with pytest.raises(GcdbenchError) as info:
        make_split(loaded["stackoverflow"], known_ratio=known, labeled_ratio=labeled, seed=0)
    flag = message.split()[0]
    assert str(info.value) == f"{message}; e.g. {flag} 0.25"


def test_zero_known_classes(loaded: dict[str, DatasetParts]) -> None:
    with pytest.raises(GcdbenchError, match="no known class for 20 classes") as info:
        _split(loaded["stackoverflow"], known=0.02)
    assert "above 0.025" in str(info.value) and "0.05" in str(info.value)
    assert len(_split(loaded["stackoverflow"], known=0.05).known_classes) == 1


def test_save_load_round_trip(loaded: dict[str, DatasetParts], tmp_path: Path) -> None:
    split = _split(loaded["clinc"])
    path = save_split(split, tmp_path / "splits")
    assert path.name == f"clinc-kr0.25-lr0.1-s42-{split.hash[:12]}.json"
    mtime = path.stat().st_mtime_ns
    assert save_split(split, tmp_path / "splits") == path
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in (tmp_path / "splits").iterdir()] == [path.name]
    assert load_split(path) == split


def test_tampered_split(loaded: dict[str, DatasetParts], tmp_path: Path) -> None:
    path = save_split(_split(loaded["stackoverflow"]), tmp_path)
    data = json.loads(path.read_text())
    data["labeled_rows"] = data["labeled_rows"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="was modified"):
        load_split(path)
    path.write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        load_split(path)
    path.write_text("{}")
    with pytest.raises(DataError, match="does not hold a gcdbench split"):
        load_split(path)


def test_build_task(loaded: dict[str, DatasetParts]) -> None:
    parts = loaded["banking"]
    split = _split(parts)
    task, gold = build_task(parts, split, task_word="intent")
    n_lab = len(split.labeled_rows)
    assert task.num_labeled == n_lab == len(task.labeled_y)
    assert task.train.rows.tolist() == list(split.labeled_rows + split.unlabeled_rows)
    assert task.train.texts == [parts.train.texts[r] for r in task.train.rows]
    assert task.num_classes == 77 and task.num_known == 19 and task.task_word == "intent"
    known = list(split.known_classes)
    labels = [parts.train.labels[r] for r in split.labeled_rows]
    assert task.labeled_y.tolist() == [known.index(y) for y in labels]
    assert task.dev_y.tolist() == [known.index(parts.dev.labels[r]) for r in split.dev_rows]  # type: ignore[union-attr]
    assert len(task.test) == len(parts.test) and task.test.texts == parts.test.texts
    # test and unlabeled gold stay out of the task: only labeled_y and dev_y carry labels
    arrays = {
        f.name for f in dataclasses.fields(task) if isinstance(getattr(task, f.name), np.ndarray)
    }
    assert arrays == {"labeled_y", "dev_y"}
    assert not hasattr(task.test, "labels") and not hasattr(task.train, "labels")
    assert gold.train_y.shape == (len(parts.train),) and gold.test_y.shape == (len(parts.test),)
    assert gold.known_ids.tolist() == [parts.classes.index(c) for c in known]
    # pool order: labeled first, with gold = known class mapped to its global id
    assert gold.train_y[:n_lab].tolist() == gold.known_ids[task.labeled_y].tolist()
    assert [gold.classes[i] for i in gold.test_y] == parts.test.labels


def test_build_task_names_and_checks(loaded: dict[str, DatasetParts]) -> None:
    parts = loaded["stackoverflow"]
    split = _split(parts)
    task, gold = build_task(parts, split, task_word="topic")
    assert task.known_class_names == ("wordpress", "visual-studio", "excel", "bash", "drupal")
    assert task.task_word == "topic" and gold.class_names["13"] == "scala"
    other = replace(split, data_files={**split.data_files, "train.tsv": "0" * 64})
    with pytest.raises(DataError, match="different data files"):
        build_task(parts, other)
    with pytest.raises(DataError, match="is for 'stackoverflow', not 'banking'"):
        build_task(loaded["banking"], split)


def test_jsonl_split_and_task(shared_data: Path) -> None:
    parts = BY_NAME["mtop_intent"].load(shared_data / "mtop_intent")
    split = _split(parts, known=0.25, seed=1)
    assert len(split.known_classes) == round(102 * 0.25)
    assert set(split.labeled_rows) | set(split.unlabeled_rows) == set(parts.train.rows.tolist())
    assert split.test_rows == tuple(parts.test.rows.tolist())
    assert split.data_files == {"small.jsonl": parts.train.file.sha256}
    task, gold = build_task(parts, split, task_word=BY_NAME["mtop_intent"].task)
    assert set(task.train.rows.tolist()).isdisjoint(task.test.rows.tolist())
    text_of = dict(zip(parts.train.rows.tolist(), parts.train.texts, strict=True))
    assert task.train.texts == [text_of[r] for r in task.train.rows.tolist()]
    assert len(task.dev) == len(task.dev_y) == len(split.dev_rows)
    # mtop has 102 classes, but classes with < 5 rows have no test rows
    assert len(gold.test_y) == len(parts.test) and len(set(gold.test_y.tolist())) < 102
