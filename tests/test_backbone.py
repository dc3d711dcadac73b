from __future__ import annotations

import numpy as np
import pytest
import torch

from gcdbench.encoders import resolve_encoder
from gcdbench.encoders.trainable import parse_hf_ref, trained_encoder
from gcdbench.errors import GcdbenchError
from gcdbench.training.backbone import TextBackbone
from tests import training_fixtures
from tests.training_fixtures import POOL_TEXTS

tiny_bert = training_fixtures.tiny_bert  # shared fixture
tiny_bert_mlm = training_fixtures.tiny_bert_mlm  # shared fixture


def test_tokenize_truncates_pads_and_marks_special(tiny_bert):
    backbone = TextBackbone.from_ref(str(tiny_bert), max_length=6, device="cpu")
    tokens = backbone.tokenize(["hi", "one two three four five six seven"])
    assert tokens["input_ids"].shape == (2, 6)  # the long text truncated, the short padded
    assert tokens["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
    # [CLS], [SEP] and padding are special; the word is not.
    assert tokens["special_tokens_mask"][0].tolist() == [1, 0, 1, 1, 1, 1]
    assert tokens["special_tokens_mask"][1].sum() == 2


def test_cls_and_mean_pooling_match_the_model_states(tiny_bert):
    cls_pool = TextBackbone.from_ref(str(tiny_bert), device="cpu").eval()
    mean_pool = TextBackbone.from_ref(str(tiny_bert), pooling="mean", device="cpu").eval()
    tokens = cls_pool.tokenize(POOL_TEXTS[:4])
    ids, mask = tokens["input_ids"], tokens["attention_mask"]
    with torch.no_grad():
        states = cls_pool.encoder_model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected_mean = torch.stack(
            [states[i, : int(mask[i].sum())].mean(0) for i in range(len(ids))]
        )
        torch.testing.assert_close(cls_pool(ids, mask), states[:, 0])
        torch.testing.assert_close(mean_pool(ids, mask), expected_mean)
    assert cls_pool.fingerprint != mean_pool.fingerprint
    assert cls_pool.source["pooling"] == "cls" and cls_pool.source["origin"] == "path"


def test_fresh_mlm_head_is_recorded_seeded_and_leaves_global_rng(tiny_bert):
    before = torch.random.get_rng_state()
    first = TextBackbone.from_ref(str(tiny_bert), with_mlm_head=True, device="cpu")
    second = TextBackbone.from_ref(str(tiny_bert), with_mlm_head=True, device="cpu")
    assert torch.equal(before, torch.random.get_rng_state())
    assert first.deviations and "MLM head" in first.deviations[0]
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(a, b)
    tokens = first.tokenize(POOL_TEXTS[:3])
    labels = tokens["input_ids"].masked_fill(tokens["special_tokens_mask"].bool(), -100)
    loss = first.mlm_loss(tokens["input_ids"], tokens["attention_mask"], labels)
    # A random head over a 30k vocabulary predicts about uniformly: loss near ln(30522).
    assert 8.0 < float(loss.detach()) < 13.0


def test_checkpoint_with_head_has_no_deviation_and_headless_mlm_fails(tiny_bert, tiny_bert_mlm):
    assert TextBackbone.from_ref(str(tiny_bert_mlm), with_mlm_head=True).deviations == []
    plain = TextBackbone.from_ref(str(tiny_bert))
    tokens = plain.tokenize(["a b"])
    with pytest.raises(GcdbenchError, match="no MLM head"):
        plain.mlm_loss(tokens["input_ids"], tokens["attention_mask"], tokens["input_ids"])


def test_save_load_round_trips_trained_weights(tiny_bert, tmp_path):
    backbone = TextBackbone.from_ref(
        str(tiny_bert), pooling="mean", max_length=16, with_mlm_head=True, device="cpu"
    )
    with torch.no_grad():  # stand-in for training: the reload must carry changed weights
        backbone.encoder_model.encoder.layer[1].output.dense.weight.add_(0.5)
    backbone.save(tmp_path / "saved")
    loaded = TextBackbone.load(tmp_path / "saved")
    assert (loaded.pooling, loaded.max_length, loaded.with_mlm_head) == ("mean", 16, True)
    assert loaded.source == backbone.source and loaded.deviations == backbone.deviations
    assert loaded.fingerprint == backbone.fingerprint
    tokens = backbone.tokenize(POOL_TEXTS)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.eval()(tokens["input_ids"], tokens["attention_mask"]),
            backbone.eval()(tokens["input_ids"], tokens["attention_mask"]),
        )


def test_load_of_a_folder_without_backbone_config_fails_clearly(tmp_path):
    with pytest.raises(GcdbenchError, match="holds no saved backbone"):
        TextBackbone.load(tmp_path)


def test_bad_pooling_is_one_clear_error(tiny_bert):
    with pytest.raises(GcdbenchError, match="unknown pooling 'max'"):
        TextBackbone.from_ref(str(tiny_bert), pooling="max")


def test_hub_id_is_refused_offline_with_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GcdbenchError) as info:
        TextBackbone.from_ref("bert-base-uncased")
    assert "HF_HUB_OFFLINE=1" in str(info.value) and "\n" not in str(info.value)


def test_hub_id_goes_through_snapshot_download(monkeypatch, tiny_bert):
    # The hub is unreachable here: a fake snapshot_download stands in for the network and
    # hands back a local folder, so the rest of the hub path runs for real.
    import huggingface_hub

    asked = []

    def fake_snapshot_download(repo_id: str, **kwargs):
        asked.append(repo_id)
        return str(tiny_bert)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    backbone = TextBackbone.from_ref("bert-base-uncased", device="cpu")
    assert asked == ["bert-base-uncased"]
    assert backbone.source["origin"] == "hub" and backbone.source["hub_id"] == "bert-base-uncased"


def test_real_minilm_mean_pooling_matches_sentence_transformers():
    backbone = TextBackbone.from_ref("all-MiniLM-L6-v2", pooling="mean", max_length=128).eval()
    tokens = backbone.tokenize(POOL_TEXTS)
    with torch.no_grad():
        ours = backbone(tokens["input_ids"], tokens["attention_mask"]).numpy()
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)  # the ST model normalises
    reference = resolve_encoder("all-MiniLM-L6-v2").encode(POOL_TEXTS)
    assert np.abs(ours - reference).max() < 1e-4
    assert backbone.source["hub_id"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_hf_transformer_refs_parse():
    assert parse_hf_ref("all-mpnet-base-v2") == ("all-mpnet-base-v2", "cls", 64)
    assert parse_hf_ref("bert-base-uncased#mean,len=128") == ("bert-base-uncased", "mean", 128)
    assert parse_hf_ref("/models/a#b") == ("/models/a#b", "cls", 64)  # '#' in a path
    with pytest.raises(GcdbenchError, match="len must be"):
        parse_hf_ref("x#len=1")


def test_hf_transformer_encoder_uses_cls_pooling(tiny_bert):
    encoder = resolve_encoder(f"hf-transformer:{tiny_bert}")
    mean_encoder = resolve_encoder(f"hf-transformer:{tiny_bert}#mean")
    assert encoder.fingerprint != mean_encoder.fingerprint
    features = encoder.encode(POOL_TEXTS, batch_size=5)
    backbone = TextBackbone.from_ref(str(tiny_bert)).eval()
    tokens = backbone.tokenize(POOL_TEXTS)
    with torch.no_grad():
        expected = backbone(tokens["input_ids"], tokens["attention_mask"]).numpy()
    assert features.dtype == np.float32 and features.shape == (len(POOL_TEXTS), 32)
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert encoder.describe()["pooling"] == "cls"


def test_trained_encoder_fingerprint_follows_the_weights(tiny_bert):
    backbone = TextBackbone.from_ref(str(tiny_bert))
    before = trained_encoder(backbone)
    with torch.no_grad():
        backbone.encoder_model.embeddings.word_embeddings.weight.mul_(1.01)
    after = trained_encoder(backbone)
    assert before.fingerprint != after.fingerprint
    assert after.encode(POOL_TEXTS[:3]).shape == (3, 32)
    assert after.describe()["start"]["weights_sha256"] == backbone.source["weights_sha256"]
