"""``--encoder`` given as a hub id this machine cannot reach: one line naming the model and
how to bring it here, exit code 2, before anything is written (no results folder, no split,
no cache), for every built-in method, embedding and fine-tuning alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from gcdbench.cli import cli
from gcdbench.encoders import models

# Short settings, should the check slip; glean and loop ask the oracle, so nothing but the
# encoder can stop the request.
EXTRA = {
    "kmeans": [],
    "mtp": ["--preset", "smoke"],
    "no-llm": ["--preset", "smoke"],
    "glean": ["--preset", "smoke", "--llm", "oracle"],
    "loop": ["--preset", "smoke", "--llm", "oracle"],
}


@pytest.fixture
def bare_machine(tmp_path, monkeypatch):
    """Fresh gcdbench and Hugging Face caches, and a hub that never answers."""
    import huggingface_hub
    from huggingface_hub import constants

    hf_cache = tmp_path / "hf-cache"
    hf_cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setenv("GCDBENCH_CACHE", str(tmp_path / "cache"))

    def no_network(*args, **kwargs):
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    models._probe_hub.cache_clear()
    yield tmp_path
    models._probe_hub.cache_clear()


def _run(tmp: Path, data: Path, method: str, encoder: str):
    results = tmp / "results"
    argv = ["run", method, "--encoder", encoder, *EXTRA[method]]
    argv += ["--results-dir", str(results), "--data-dir", str(data)]
    return CliRunner().invoke(cli, argv, catch_exceptions=False), results


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize("method", sorted(EXTRA))
@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE=1", "no network"])
def test_unreachable_hub_id_stops_before_anything_is_written(
    bare_machine, shared_data, monkeypatch, method, offline
):
    if offline == "HF_HUB_OFFLINE=1":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    result, results = _run(bare_machine, shared_data, method, "bert-base-uncased")
    line = _one_error_line(result)
    assert line == (
        "error: encoder 'bert-base-uncased' is a Hugging Face hub id, and the hub cannot be "
        f"reached ({offline}{': ConnectionError' if offline == 'no network' else ' is set'}) "
        "nor is the model in the local Hugging Face cache; download it on a machine with "
        "network (`hf download bert-base-uncased --local-dir DIR`), copy DIR here and pass "
        "--encoder DIR."
    )
    assert not results.exists()
    assert not (bare_machine / "cache").exists()


def test_org_hub_id_and_missing_folder_stop_the_same_way(bare_machine, shared_data):
    result, results = _run(bare_machine, shared_data, "no-llm", "google-bert/bert-base-uncased")
    assert "'google-bert/bert-base-uncased' is a Hugging Face hub id" in _one_error_line(result)
    result, results = _run(bare_machine, shared_data, "kmeans", "./models/no-such-model")
    assert "encoder folder './models/no-such-model' does not exist" in _one_error_line(result)
    assert not results.exists() and not (bare_machine / "cache").exists()
