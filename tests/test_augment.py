"""Augmentation rates on a big tensor, untouched specials/pads, determinism per generator."""

from __future__ import annotations

import pytest
import torch

from gcdbench.errors import GcdbenchError
from gcdbench.training.augment import mlm_mask, random_token_replacement

VOCAB = 1000
MASK_ID = 3
ROWS, COLS = 800, 128


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    source = torch.Generator().manual_seed(123)
    ids = torch.randint(10, VOCAB, (ROWS, COLS), generator=source)
    lengths = torch.randint(COLS // 2, COLS + 1, (ROWS,), generator=source)
    attention = (torch.arange(COLS).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids.masked_fill(attention == 0, 0)  # pad id 0
    special = torch.zeros_like(ids)
    special[:, 0] = 1  # [CLS]
    special[torch.arange(ROWS), lengths - 1] = 1  # [SEP]
    ids[:, 0] = 1
    ids[torch.arange(ROWS), lengths - 1] = 2
    return ids, attention, special


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_token_replacement_rate_and_untouched_tokens():
    ids, attention, special = _batch()
    out = random_token_replacement(ids, attention, special, VOCAB, _generator(0))
    eligible = attention.bool() & ~special.bool()
    changed = out != ids
    assert not changed[~eligible].any()  # specials and pads never change
    # 25% selected, 90% of those re-drawn, a re-draw equal to the original 1/VOCAB of the time.
    expected = 0.25 * 0.9 * (1 - 1 / VOCAB)
    rate = changed[eligible].float().mean().item()
    assert rate == pytest.approx(expected, abs=0.006)  # ~5 standard errors at ~60k tokens
    assert out.min() >= 0 and out.max() < VOCAB
    assert out[changed].float().std() > VOCAB / 4  # ids drawn over the whole vocabulary


def test_random_token_replacement_prob_is_honoured():
    ids, attention, special = _batch()
    out = random_token_replacement(ids, attention, special, VOCAB, _generator(1), prob=0.5)
    eligible = attention.bool() & ~special.bool()
    rate = (out != ids)[eligible].float().mean().item()
    assert rate == pytest.approx(0.5 * 0.9, abs=0.008)
    untouched = random_token_replacement(ids, attention, special, VOCAB, _generator(1), prob=0.0)
    assert torch.equal(untouched, ids)


def test_mlm_mask_rates_labels_and_pads():
    ids, attention, special = _batch()
    masked, labels = mlm_mask(ids, special, MASK_ID, VOCAB, _generator(2), attention_mask=attention)
    eligible = attention.bool() & ~special.bool()
    selected = labels != -100
    assert not selected[~eligible].any()
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(masked[~selected], ids[~selected])
    assert selected[eligible].float().mean().item() == pytest.approx(0.15, abs=0.005)
    picked = masked[selected]
    original = ids[selected]
    as_mask = (picked == MASK_ID).float().mean().item()
    as_random = ((picked != MASK_ID) & (picked != original)).float().mean().item()
    kept = (picked == original).float().mean().item()
    assert as_mask == pytest.approx(0.8, abs=0.015)
    assert as_random == pytest.approx(0.1 * (1 - 2 / VOCAB), abs=0.012)
    assert kept == pytest.approx(0.1, abs=0.012)


def test_mlm_mask_pads_covered_by_special_mask_alone():
    ids, attention, special = _batch()
    special_with_pads = special | (attention == 0).long()
    _, labels = mlm_mask(ids, special_with_pads, MASK_ID, VOCAB, _generator(3))
    assert (labels[attention == 0] == -100).all()


def test_same_generator_seed_same_output_and_global_rng_untouched():
    ids, attention, special = _batch()
    state = torch.get_rng_state()
    first = random_token_replacement(ids, attention, special, VOCAB, _generator(7))
    again = random_token_replacement(ids, attention, special, VOCAB, _generator(7))
    other = random_token_replacement(ids, attention, special, VOCAB, _generator(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    m1 = mlm_mask(ids, special, MASK_ID, VOCAB, _generator(7), attention_mask=attention)
    m2 = mlm_mask(ids, special, MASK_ID, VOCAB, _generator(7), attention_mask=attention)
    assert torch.equal(m1[0], m2[0]) and torch.equal(m1[1], m2[1])
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_probability_is_one_clear_error():
    ids, attention, special = _batch()
    with pytest.raises(GcdbenchError, match="prob must be within"):
        random_token_replacement(ids, attention, special, VOCAB, _generator(0), prob=1.5)
    with pytest.raises(GcdbenchError, match="prob must be within"):
        mlm_mask(ids, special, MASK_ID, VOCAB, _generator(0), prob=-0.1)
