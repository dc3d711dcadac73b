from __future__ import annotations

import numpy as np
import pytest
import torch

from gcdbench.errors import GcdbenchError
from gcdbench.training.backbone import TextBackbone
from gcdbench.training.modes import make_mode
from tests import training_fixtures
from tests.training_fixtures import POOL_TEXTS

tiny_bert_mlm = training_fixtures.tiny_bert_mlm  # shared fixture

ALL = np.arange(len(POOL_TEXTS))


@pytest.fixture
def backbone(tiny_bert_mlm) -> TextBackbone:
    return TextBackbone.from_ref(str(tiny_bert_mlm), with_mlm_head=True, device="cpu")


def _backbone_features(backbone: TextBackbone, texts) -> np.ndarray:
    backbone.eval()
    tokens = backbone.tokenize(texts)
    with torch.no_grad():
        return backbone(tokens["input_ids"], tokens["attention_mask"]).numpy()


def test_top_all_layers_equals_full_without_augmentation(backbone):
    full = make_mode("full", backbone, POOL_TEXTS).eval()
    top_all = make_mode(f"top-{backbone.num_layers}", backbone, POOL_TEXTS).eval()
    rows = np.array([3, 0, 7])
    with torch.no_grad():
        torch.testing.assert_close(
            top_all.embed(rows, augment=False, generator=None),
            full.embed(rows, augment=False, generator=None),
        )
    np.testing.assert_allclose(top_all.extract(), full.extract(), atol=1e-6)


@pytest.mark.parametrize("mode", ["top-1", "top-2", "head"])
def test_cached_extract_equals_the_backbone_forward(backbone, mode):
    trained = make_mode(mode, backbone, POOL_TEXTS)
    expected = _backbone_features(backbone, POOL_TEXTS)
    np.testing.assert_allclose(trained.extract(), expected, atol=1e-5)
    np.testing.assert_allclose(trained.extract(np.array([5, 1])), expected[[5, 1]], atol=1e-5)
    np.testing.assert_allclose(trained.encode_texts(POOL_TEXTS[:4]), expected[:4], atol=1e-5)
    assert trained.describe()["cached_bytes"] > 0


def test_top_n_trains_only_the_top_layers_and_head(backbone):
    mode = make_mode("top-1", backbone, POOL_TEXTS).train()
    generator = torch.Generator().manual_seed(0)
    loss = mode.embed(ALL[:6], augment=True, generator=generator).pow(2).sum()
    loss = loss + mode.mlm_loss(ALL[:6], generator)
    loss.backward()
    base = backbone.encoder_model
    assert all(p.grad is not None for p in base.encoder.layer[1].parameters())
    assert all(p.grad is None for p in base.encoder.layer[0].parameters())
    assert all(p.grad is None for p in base.embeddings.parameters())
    trainable = {id(p) for p in mode.trainable_parameters()}
    assert trainable == {id(p) for p in backbone.parameters() if p.requires_grad}
    assert mode.describe()["trained_layers"] == [1]
    assert "cut" in mode.describe()["augmentation"]
    assert mode.describe()["deviations"][0].startswith("augmentation: ")


def test_full_trains_everything(backbone):
    mode = make_mode("full", backbone, POOL_TEXTS).train()
    generator = torch.Generator().manual_seed(0)
    mode.embed(ALL, augment=True, generator=generator).sum().backward()
    assert backbone.encoder_model.embeddings.word_embeddings.weight.grad is not None
    assert len(mode.trainable_parameters()) == len(list(backbone.parameters()))


@pytest.mark.parametrize("mode", ["full", "top-1", "head"])
def test_augmentation_is_random_reproducible_and_leaves_global_rng(backbone, mode):
    trained = make_mode(mode, backbone, POOL_TEXTS).train()
    before = torch.random.get_rng_state()

    def views(seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        return trained.embed(ALL, augment=True, generator=generator).detach()

    first, again, other = views(1), views(1), views(2)
    assert torch.equal(before, torch.random.get_rng_state())
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)
    clean = torch.from_numpy(trained.extract())
    assert not torch.allclose(first, clean)


def test_head_mode_trains_nothing_in_the_backbone(backbone):
    mode = make_mode("head", backbone, POOL_TEXTS).train()
    assert mode.trainable_parameters() == []
    assert mode.mlm_loss(ALL, torch.Generator().manual_seed(0)) is None
    assert not any(p.requires_grad for p in backbone.parameters())
    assert "dropout" in mode.describe()["augmentation"]


def test_top_n_mlm_equals_full_mlm_when_all_layers_train(backbone):
    # Same masks (same generator seed), eval mode: the live lower-layer path of top-N must
    # compute exactly the full model's MLM loss.
    full = make_mode("full", backbone, POOL_TEXTS).eval()
    top_all = make_mode(f"top-{backbone.num_layers}", backbone, POOL_TEXTS).eval()
    top_one = make_mode("top-1", backbone, POOL_TEXTS).eval()
    losses = [
        m.mlm_loss(ALL, torch.Generator().manual_seed(3)).item() for m in (full, top_all, top_one)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert losses[0] == pytest.approx(losses[2], abs=1e-5)


def test_bf16_keeps_features_close_on_real_minilm():
    backbone = TextBackbone.from_ref("all-MiniLM-L6-v2", device="cpu")
    fp32 = make_mode("top-2", backbone, POOL_TEXTS).extract()
    bf16_mode = make_mode("top-2", backbone, POOL_TEXTS, precision="bf16")
    bf16 = bf16_mode.extract()
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.99
    assert bf16_mode.describe()["precision"] == "bf16"
    assert bf16.dtype == np.float32


@pytest.mark.parametrize(
    ("mode", "precision", "message"),
    [
        ("top-0", "fp32", "unknown training mode 'top-0'"),
        ("top-3", "fp32", "N from 1 to 2"),
        ("frozen", "fp32", "use 'full', 'head' or 'top-N'"),
        ("full", "fp16", "unknown precision 'fp16'"),
    ],
)
def test_bad_mode_or_precision_is_one_clear_error(backbone, mode, precision, message):
    with pytest.raises(GcdbenchError, match=message):
        make_mode(mode, backbone, POOL_TEXTS, precision=precision)
