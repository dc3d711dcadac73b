from __future__ import annotations

import numpy as np
import pytest

from gcdbench.encoders import resolve_encoder
from gcdbench.encoders.cache import FeatureCache
from gcdbench.encoders.models import PACKAGED_MODELS, locate_model, packaged_model_path
from gcdbench.errors import GcdbenchError, UnknownNameError


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
