"""Token-level augmentation and MLM masking, drawing only from the generator passed in.

transformers' ``DataCollatorForLanguageModeling`` does the MLM part but needs a tokenizer and
owns its generator (seeded once from an int); here the caller's ``torch.Generator`` — seeded
from ``ctx.rng(stage)`` — drives every draw, and the functions work on id tensors alone.
The id tensors and the generator must be on the same device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from gcdbench.errors import GcdbenchError

# Of the selected tokens: this share becomes [MASK] (MLM) or a random id (replacement), the
# same share again becomes a random id, and the rest is kept as is (BERT's 80/10/10).
MASK_SHARE = 0.8
RANDOM_SHARE = 0.1


def _check_probability(name: str, prob: float) -> None:
    if not 0.0 <= prob <= 1.0:
        raise GcdbenchError(f"{name}: prob must be within [0, 1], got {prob}; pass e.g. 0.15.")


def _selected(
    input_ids: Tensor, eligible: Tensor, prob: float, generator: torch.Generator
) -> Tensor:
    draws = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    return (draws < prob) & eligible


def _split_shares(selected: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(to-mask, to-random) subsets of ``selected``, 80% and 10% of it in expectation."""
    draws = torch.rand(selected.shape, generator=generator, device=selected.device)
    to_mask = selected & (draws < MASK_SHARE)
    to_random = selected & (draws >= MASK_SHARE) & (draws < MASK_SHARE + RANDOM_SHARE)
    return to_mask, to_random


def random_token_replacement(
    input_ids: Tensor,
    attention_mask: Tensor,
    special_mask: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    prob: float = 0.25,
) -> Tensor:
    """GLEAN's ``rtr`` view (docs/methods/glean.md §2.2):
    select ``prob`` of the non-special, non-pad
    tokens; of those, 80% become a uniformly random vocabulary id (the reference code goes
    through [MASK] and then overwrites it), 10% another random id, 10% stay. Net: about
    ``0.9 · prob`` of the eligible tokens are re-drawn (22.5% at the default), a re-drawn id
    matching the original with chance 1/vocab_size. Ids come from the whole vocabulary,
    special ones included, as in the reference. Returns a new tensor.
    """
    _check_probability("random_token_replacement", prob)
    eligible = attention_mask.bool() & ~special_mask.bool()
    selected = _selected(input_ids, eligible, prob, generator)
    to_mask, to_random = _split_shares(selected, generator)
    random_ids = torch.randint(
        vocab_size, input_ids.shape, generator=generator, device=input_ids.device
    )
    return torch.where(to_mask | to_random, random_ids, input_ids)


def mlm_mask(
    input_ids: Tensor,
    special_mask: Tensor,
    mask_token_id: int,
    vocab_size: int,
    generator: torch.Generator,
    prob: float = 0.15,
    *,
    attention_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """BERT masked-LM inputs: select ``prob`` of the non-special tokens (and non-pad ones
    when ``attention_mask`` is given — otherwise ``special_mask`` must cover padding, as a
    tokenizer's special-tokens mask does); of those, 80% → ``mask_token_id``, 10% → a random
    id, 10% kept. Returns (masked ids, labels) with labels = the original id where selected
    and −100 elsewhere (ignored by cross-entropy).
    """
    _check_probability("mlm_mask", prob)
    eligible = ~special_mask.bool()
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    selected = _selected(input_ids, eligible, prob, generator)
    to_mask, to_random = _split_shares(selected, generator)
    random_ids = torch.randint(
        vocab_size, input_ids.shape, generator=generator, device=input_ids.device
    )
    masked = torch.where(to_random, random_ids, input_ids)
    masked = masked.masked_fill(to_mask, mask_token_id)
    labels = input_ids.masked_fill(~selected, -100)
    return masked, labels
