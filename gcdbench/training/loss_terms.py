"""Which loss terms the round loop sums, chosen by name from the loss registry.

A training method's ``losses`` parameter lists them, e.g. ``"ncl,ce"`` or
``"ncl,ce,mine:0.5"``: each entry is a registered loss (``register_loss_hooks``) with an
optional weight. A term without one takes the method's ``<name>_weight`` parameter when it
has one (``ncl_weight``, ``ce_weight``, GLEAN's ``align_weight``), else 1. The terms are
summed in the order listed, so the same list gives the same floating-point sum.

A loss can be chosen only if the round loop fills every key it reads
(:attr:`gcdbench.api.LossHook.batch_keys` / ``output_keys``); the tables below say which
keys those are and when each is there. Torch-free: the parameter check runs before any
training code is imported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: the terms of the round loop when a method does not say: NCL, then CE (this order is
#: part of the results: it fixes the order of the floating-point sum)
DEFAULT_LOSSES = "ncl,ce"
#: how ``losses`` is written, for ``gcdbench list methods --params``
LOSSES_SYNTAX = "comma-separated registered losses, each NAME or NAME:WEIGHT"

_ALWAYS = "every step"
_LABELED = "when the task has labeled texts"
_ALIGNED = "in rounds whose plan gives alignment targets"
#: ``batch`` keys the round loop fills (see gcdbench.api.loss), and when
ROUND_BATCH_KEYS: Mapping[str, str] = {
    "adjacency": _ALWAYS,
    "labels": _LABELED,
    "align_targets": _ALIGNED,
    "align_candidates": _ALIGNED,
}
#: ``outputs`` keys the round loop fills, and when
ROUND_OUTPUT_KEYS: Mapping[str, str] = {
    "features": _ALWAYS,
    "logits": _LABELED,
    "anchor_features": _ALIGNED,
    "description_features": _ALIGNED,
}
#: keys that need a forward pass of the classifier on a labeled batch
CLASSIFIER_KEYS = frozenset({"labels", "logits"})
#: keys only a round with alignment targets has; a term reading one sits out other rounds
ALIGNMENT_KEYS = frozenset(
    {"align_targets", "align_candidates", "anchor_features", "description_features"}
)


@dataclass(frozen=True)
class LossChoice:
    """One entry of ``losses``: a registered loss name and its weight, if written."""

    name: str
    weight: float | None = None


@dataclass(frozen=True)
class LossTerm:
    """A term the round loop sums: the name, its resolved weight and the keys it reads."""

    name: str
    weight: float
    keys: frozenset[str]

    @property
    def needs_classifier(self) -> bool:
        return bool(self.keys & CLASSIFIER_KEYS)

    @property
    def needs_alignment(self) -> bool:
        return bool(self.keys & ALIGNMENT_KEYS)


def parse_losses(text: str) -> tuple[LossChoice, ...]:
    """``"ncl,ce:0.5"`` -> (ncl, ce with weight 0.5); raises :class:`ValueError` naming the
    malformed entry (syntax only: :func:`losses_problem` also checks the registry)."""
    choices: list[LossChoice] = []
    for entry in text.split(","):
        name, sep, weight_text = (part.strip() for part in entry.partition(":"))
        if not name:
            raise ValueError(f"empty entry in {text!r}; write e.g. ncl,ce")
        weight: float | None = None
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise ValueError(
                    f"{entry.strip()!r} has weight {weight_text!r}, not a number; write e.g. "
                    f"{name}:0.5"
                ) from None
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(
                    f"{entry.strip()!r}: a weight must be a finite number >= 0; write e.g. "
                    f"{name}:0.5"
                )
        if any(c.name == name for c in choices):
            raise ValueError(f"loss {name!r} is listed twice in {text!r}; list each loss once")
        choices.append(LossChoice(name, weight))
    return tuple(choices)


def hook_keys(hook: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (batch keys, output keys) a registered loss declares it reads."""
    return tuple(getattr(hook, "batch_keys", ())), tuple(getattr(hook, "output_keys", ()))


def unprovided_keys(hook: Any) -> list[str]:
    """Keys ``hook`` reads that the round loop never fills, as ``batch['x']`` /
    ``outputs['y']``."""
    batch_keys, output_keys = hook_keys(hook)
    return [f"batch[{k!r}]" for k in batch_keys if k not in ROUND_BATCH_KEYS] + [
        f"outputs[{k!r}]" for k in output_keys if k not in ROUND_OUTPUT_KEYS
    ]


def losses_problem(value: Any) -> str | None:
    """What is wrong with a ``losses`` value, in one line, or None: the syntax, a name no
    plugin registered, or a loss reading a key the round loop does not fill. For
    ``param(check=...)``, so the CLI stops before anything is written."""
    from gcdbench import registry  # the registry loads every plugin: only when checking
    from gcdbench.errors import UnknownNameError

    if not isinstance(value, str):
        return f"must be a string like {DEFAULT_LOSSES!r}, got {value!r}"
    try:
        choices = parse_losses(value)
    except ValueError as exc:
        return str(exc)
    known = registry.names("loss")
    for choice in choices:
        if choice.name not in known:
            return str(UnknownNameError("loss", choice.name, known)).rstrip(".")
        missing = unprovided_keys(registry.get("loss", choice.name))
        if missing:
            batch = ", ".join(ROUND_BATCH_KEYS)
            outputs = ", ".join(ROUND_OUTPUT_KEYS)
            return (
                f"loss {choice.name!r} reads {', '.join(missing)}, which the round loop does "
                f"not fill (batch: {batch}; outputs: {outputs}); choose another loss"
            )
    return None


def resolve_terms(
    losses: str,
    params: Any,
    *,
    ce: bool = True,
    align_weight: float | None = None,
) -> list[LossTerm]:
    """The terms the round loop sums, in order, with their weights.

    ``ce=False`` leaves ``ce`` out (the ``ce`` ablation). ``align_weight``, when given, is
    the weight of ``align``, added at the end when ``losses`` does not list it (how GLEAN
    asked for it before ``losses`` existed); 0 leaves it out. Terms of weight 0 are left
    out: they would add nothing, and their inputs need not be computed.
    """
    from gcdbench import registry
    from gcdbench.errors import GcdbenchError

    problem = losses_problem(losses)
    if problem:
        raise GcdbenchError(f"losses={losses!r}: {problem}.")
    choices = list(parse_losses(losses))
    if not ce:
        choices = [c for c in choices if c.name != "ce"]
    if align_weight is not None:
        choices = [c for c in choices if c.name != "align"]
        choices.append(LossChoice("align", align_weight))
    terms = []
    for choice in choices:
        weight = _weight(choice, params)
        if weight == 0:
            continue
        batch_keys, output_keys = hook_keys(registry.get("loss", choice.name))
        terms.append(LossTerm(choice.name, weight, frozenset((*batch_keys, *output_keys))))
    return terms


def _weight(choice: LossChoice, params: Any) -> float:
    if choice.weight is not None:
        return choice.weight
    field_weight = getattr(params, f"{choice.name}_weight", None)
    return float(field_weight) if isinstance(field_weight, int | float) else 1.0


def term_names(terms: Sequence[LossTerm]) -> list[str]:
    return [t.name for t in terms]


__all__ = [
    "ALIGNMENT_KEYS",
    "CLASSIFIER_KEYS",
    "DEFAULT_LOSSES",
    "LOSSES_SYNTAX",
    "ROUND_BATCH_KEYS",
    "ROUND_OUTPUT_KEYS",
    "LossChoice",
    "LossTerm",
    "losses_problem",
    "parse_losses",
    "resolve_terms",
    "unprovided_keys",
]
