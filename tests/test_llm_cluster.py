"""llm-cluster (Huang & He, arXiv 2410.00927; docs/methods/llm-cluster.md): conformance, the
command line on BANKING and on a single-file set, the oracle upper bound, a noisy oracle, the
Unsuccessful cluster, the official seed draw, the labels of the labeled texts, and real replies
from SmolLM2 through the ledger.

Runs use the bag-of-words encoder: no model to load, so a run takes seconds; the tests read
what the method did (questions, clusters, diagnostics), and quality only where the oracle
fixes it (100% with every question answered from gold).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gcdbench.api.feedback import OK, PARSE_FAILURE, Answer
from gcdbench.cli import cli
from gcdbench.feedback.ledger import Ledger
from gcdbench.testing import _context, check_method, tiny_task
from gcdbench_builtins.llm_cluster import LlmCluster, _collect, _placeholder

BOW = ["--encoder", "bag-of-words"]
MASSIVE = ["-d", "massive_scenario", "--known-ratio", "0.2"]
KINDS = ("label-generation", "label-merging", "classify-into-labels")


def _run(results: Path, shared_data: Path, *args: str) -> dict[str, Any]:
    """``gcdbench run llm-cluster ARGS`` into its own results folder; its one record."""
    argv = ["run", "llm-cluster", "--results-dir", str(results), "--data-dir", str(shared_data)]
    result = CliRunner().invoke(cli, [*argv, "-q", *BOW, *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    [path] = results.rglob("record.json")
    return json.loads(path.read_text())


def test_conformance():
    check_method(LlmCluster)


def test_banking_smoke_with_the_oracle(tmp_path, shared_data):
    record = _run(
        tmp_path / "r", shared_data, "--preset", "smoke", "--llm", "oracle", "-d", "banking"
    )
    d, metrics = record["diagnostics"], record["metrics"]
    assert 100 / 77 < metrics["acc"] <= 100 and 0 < metrics["nmi"] <= 100
    # K is not given: it comes out of the merge, and is reported beside the true K.
    assert d["true_k"] == 77 and 1 <= d["predicted_k"] <= d["merged_labels"] + 1
    assert d["seeds"]["unique"] == record["split"]["num_known"] == 19
    assert d["questions"] == {"label-generation": 2, "label-merging": 1, "classify-into-labels": 18}
    assert (
        d["classified_by_llm"]["test_asked"] == 12 and d["classified_by_llm"]["labeled_asked"] == 6
    )
    assert sum(d["assigned_by"].values()) == record["split"]["num_test"] == 3080
    assert d["assigned_by"]["rest-model:centroid"] == 3080 - 12  # the cpu-style encoder model
    names = {c["name"] for c in record["clusters"]}
    assert names & set(d["seeds"]["names"])  # clusters carry the labels' names
    quality = d["feedback_quality"]["kinds"]["classify-into-labels"]
    assert quality["asked"] == 18 and quality["feedback_accuracy"] == 1.0
    assert quality["encoder_accuracy"] is not None  # the encoder's nearest label name, judged


def test_oracle_is_the_upper_bound_and_noise_lowers_it(tmp_path, shared_data):
    exact = _run(tmp_path / "exact", shared_data, "--preset", "paper", "--llm", "oracle", *MASSIVE)
    d = exact["diagnostics"]
    # Every question asked (⌈N/15⌉ + 1 + N, plus the labeled texts): gold names come back from
    # generation, the merge keeps them, every text gets its gold label.
    n_test, n_labeled = exact["split"]["num_test"], exact["split"]["num_labeled"]
    assert d["questions"] == {
        "label-generation": -(-n_test // 15),
        "label-merging": 1,
        "classify-into-labels": n_test + n_labeled,
    }
    assert exact["metrics"]["acc"] == 100.0 and d["predicted_k"] == d["true_k"] == 18
    assert d["assigned_by"] == {"llm": n_test} and d["unsuccessful"] == 0

    noisy = _run(tmp_path / "noisy", shared_data, "--preset", "paper", *MASSIVE,
                 "--llm", "noisy-oracle:0.5")  # fmt: skip
    assert noisy["metrics"]["acc"] < 80.0
    quality = noisy["diagnostics"]["feedback_quality"]["kinds"]["classify-into-labels"]
    assert 0.4 < quality["feedback_accuracy"] < 0.6


def test_the_unsuccessful_cluster_is_counted(tmp_path, shared_data):
    # Without generation the labels are the 4 seeds, so most of the 18 scenarios have no
    # right label: the oracle says so ("no-correct-option"), as a model's reply naming none.
    args = ["--preset", "smoke", "--llm", "oracle", "--ablate", "generation", *MASSIVE]
    own = _run(tmp_path / "own", shared_data, *args)
    d = own["diagnostics"]
    failed = d["classification_statuses"]["test"].get("no-correct-option", 0)
    assert failed > 0 and d["unsuccessful"] == failed == d["assigned_by"]["unsuccessful-cluster"]
    assert d["merged_labels"] == d["seeds"]["unique"] and d["questions"]["label-generation"] == 0
    [bucket] = [c for c in own["clusters"] if c["name"] == "Unsuccessful"]
    assert bucket["id"] == d["merged_labels"]  # one id past the labels

    nearest = _run(tmp_path / "nearest", shared_data, *args, "-p", "unmatched=nearest")
    d = nearest["diagnostics"]
    assert d["unsuccessful"] == failed and "unsuccessful-cluster" not in d["assigned_by"]
    assert d["assigned_by"]["unsuccessful-to-rest-model:centroid"] == failed
    assert "Unsuccessful" not in {c["name"] for c in nearest["clusters"]}


def test_official_variant_draws_seeds_with_replacement(tmp_path, shared_data):
    args = ["--preset", "smoke", "--llm", "oracle", "-d", "banking", "--ablate", "generation"]
    record = _run(tmp_path / "r", shared_data, *args, "--variant", "official")
    seeds = record["diagnostics"]["seeds"]
    # 19 draws from all 77 names with replacement, mapped onto known names: duplicates.
    assert seeds["shown"] == 19 and seeds["unique"] < 19
    assert set(seeds["names"]) <= set(record["split"]["known_classes"])  # keys are names here
    assert record["diagnostics"]["merged_labels"] == seeds["unique"]


def test_labeled_texts_get_labels_in_the_test_id_space(tmp_path):
    task, gold, parts = tiny_task(0)
    params = LlmCluster.resolve_params("paper", {})
    with tempfile.TemporaryDirectory() as tmp:
        ctx = _context(LlmCluster, params, 0, parts, None, Path(tmp), gold, "oracle")
        out = LlmCluster(params).run(task, ctx)
        ctx.feedback.close()
    names = {c: info.name for c, info in out.clusters.items()}
    labeled = np.asarray(out.labeled_assignments)
    assert labeled.shape == (task.num_labeled,) and (labeled >= 0).all()
    # The oracle puts each labeled text under its own known class's name...
    assert [names[c] for c in labeled] == [task.known_class_names[y] for y in task.labeled_y]
    # ...and each test text under its gold class's name, in the same id space.
    assert [names[c] for c in out.test_assignments] == [gold.classes[y] for y in gold.test_y]


def test_collecting_labels_drops_placeholders_and_repeats():
    labels, keys, dropped = ["card_arrival"], {"card arrival"}, Counter[str]()
    reply = Answer(["Card Arrival", "new_label_1", "unknown_topic_2", "<label>", "Lost PIN"], OK)
    _collect(labels, keys, reply, dropped)
    _collect(labels, keys, Answer(None, PARSE_FAILURE), dropped)
    assert labels == ["card_arrival", "Lost PIN"] and sum(dropped.values()) == 3
    assert _placeholder("new_labels_for_cards")  # the paper drops any name containing one
    assert not _placeholder("Lost PIN")


def _ledger_rows(path: Path) -> dict[str, int]:
    ledger = Ledger(path)
    try:
        return {row["kind"]: row["answers"] for row in ledger.stats()}
    finally:
        ledger.close()


def _cli_run(results: Path, shared_data: Path, *args: str) -> dict[str, Any]:
    """A run in its own interpreter: a crash in llama.cpp fails this test, not the session."""
    argv = [sys.executable, "-m", "gcdbench", "run", "llm-cluster", "--results-dir", str(results)]
    argv += ["--data-dir", str(shared_data), "-q", *BOW, *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert done.returncode == 0, (done.returncode, done.stdout[-2000:], done.stderr[-2000:])
    [path] = results.rglob("record.json")
    return json.loads(path.read_text())


def test_smollm2_replies_are_parsed_and_a_rerun_reads_the_ledger(tmp_path, shared_data):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is an optional dependency")
    ledger = tmp_path / "ledger.sqlite"
    small = ["-p", "generation_batches=1", "-p", "batch_size=3", "-p", "classify_test=3"]
    # n_batch=1: llama.cpp's batched CPU kernels (llama-cpp-python 0.3.36) segfaulted on this
    # machine's AMX CPUs; one token per batch avoids them. n_threads=1: with one token per
    # decode, two OpenMP threads on a busy 2-core machine spent minutes in their barriers
    # (427 s for one generation question, 28 s with one thread; measured).
    opts = ["--llm-option", "n_batch=1", "--llm-option", "n_threads=1"]
    llm = ["--llm", "llamacpp:smollm2-135m", *opts, "--ledger", str(ledger)]
    args = ["--preset", "smoke", *small, "-p", "classify_labeled=1", *MASSIVE, *llm]
    first = _cli_run(tmp_path / "r", shared_data, *args)
    stats = first["feedback"]["stats"]["per_kind"]
    asked = {k: stats[k]["queries"] for k in KINDS}
    assert asked == {"label-generation": 1, "label-merging": 1, "classify-into-labels": 4}
    assert {k: stats[k]["backend_requests"] for k in KINDS} == asked
    # The choice is constrained to the labels, so every classification reply parses.
    assert stats["classify-into-labels"]["statuses"] == {"ok": 4}
    assert set(stats["label-generation"]["statuses"]) <= {"ok", "parse-failure"}
    assert _ledger_rows(ledger) == asked
    assert first["diagnostics"]["questions"] == asked

    again = _cli_run(tmp_path / "r", shared_data, *args, "--force")
    stats = again["feedback"]["stats"]["per_kind"]
    assert {k: stats[k]["backend_requests"] for k in KINDS} == dict.fromkeys(KINDS, 0)
    assert {k: stats[k]["ledger_hits"] for k in KINDS} == asked
    assert again["diagnostics"]["labels"] == first["diagnostics"]["labels"]
    assert again["metrics"] == first["metrics"]
