"""Helpers for training tests: a tiny random BERT with MiniLM's real vocabulary and
tokenizer, for tests where the weights do not matter, and the real MiniLM for those where
they do.

Import from tests (``from tests.training_fixtures import tiny_bert_folder``) or use the
``tiny_bert`` fixture by importing it into a test module.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gcdbench.encoders.models import locate_model

POOL_TEXTS = [
    "how do i activate my new card",
    "my card has not arrived yet",
    "why was i charged an extra fee on my statement",
    "can i top up with cash",
    "the transfer to my friend did not go through",
    "what is the exchange rate for euros",
    "i lost my card please block it",
    "how long does a bank transfer take to arrive",
    "set a timer for ten minutes",
    "what's the weather like tomorrow in paris",
    "play some jazz music",
    "book a table for two at eight",
]


def minilm_folder() -> Path:
    return locate_model("all-MiniLM-L6-v2").path


def tiny_bert_folder(
    target: Path, *, layers: int = 2, hidden: int = 32, with_mlm_head: bool = False
) -> Path:
    """Save a randomly initialised BERT (seed 0) with MiniLM's tokenizer into ``target``."""
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, BertModel

    source = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = (BertForMaskedLM if with_mlm_head else BertModel)(config)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-d random BERT folder (no MLM head), shared by the session."""
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_bert_mlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same architecture saved with an MLM head."""
    return tiny_bert_folder(tmp_path_factory.mktemp("tiny-bert-mlm"), with_mlm_head=True)
