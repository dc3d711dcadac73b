"""How good was the feedback a method asked for? Scored against gold labels, per round.

A method fills a :class:`~gcdbench.api.feedback_log.FeedbackLog`; the runner, which holds
the gold labels, calls :func:`score_feedback_log` and stores the result in the run record's
``diagnostics["feedback_quality"]``. Definitions (GLEAN's own code computes none of these, so
they follow docs/methods/glean.md §8 and §5.2):

* an instance choice is right iff the chosen pool sample has the anchor's gold label;
* a category choice is right iff the chosen cluster's majority gold label over the pool (in
  that round's assignments) is the anchor's. A tie in the majority goes to the lowest class
  id; a cluster with no pool members has no majority, so choosing it is never right;
* the same rule is applied to ``encoder_choice`` (what the encoder alone would have picked):
  feedback is only worth its cost where it beats that. ``encoder_accuracy`` is over all
  questions asked (an encoder choice of −1 counts as wrong), ``encoder_accuracy_answered``
  over the questions the feedback answered, beside ``feedback_accuracy``;
* ``feedback_accuracy_used`` is over questions both used and answered (a used question with
  ``chosen`` −1 used something other than the feedback);
* position bias lists, per option position, the share of answered questions choosing it;
  ``encoder_position_bias`` the same over questions with an encoder choice;
* a description is matched to its most cosine-similar gold class name; coverage is the
  number of distinct classes matched over K, uniformity the normalised entropy of the match
  histogram, informativeness their product with the mean best cosine;
* any other kind a method logs (``FeedbackLog.asked``) is judged answer by answer with the
  kind's own rule (:meth:`gcdbench.api.query_kind.QueryKind.judge`), beside the encoder's
  answers where the method logged them; a kind without a rule is reported as unscored.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gcdbench.api.encoder import Encoder
from gcdbench.api.feedback import LOW_CONFIDENCE, PARSE_FAILURE, STATUSES
from gcdbench.api.feedback_log import (
    CATEGORY,
    INSTANCE,
    AskedLog,
    ChoiceLog,
    DescriptionLog,
    FeedbackLog,
)
from gcdbench.api.query_kind import GoldView
from gcdbench.api.task import Gold
from gcdbench.api.toolkit import l2_normalise
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.kinds import get_kind

#: The label of an option with no gold reading (a cluster without pool members).
NO_CLASS = -1
DIGITS = 4

#: An encoder, a thunk that builds one (loaded only if there are descriptions), or None for
#: the default encoder (:data:`gcdbench.api.spec.DEFAULT_ENCODER`).
EncoderSource = Encoder | Callable[[], Encoder] | None


def score_feedback_log(
    log: FeedbackLog, gold: Gold, describe_encoder: EncoderSource = None
) -> dict[str, Any]:
    """JSON-ready scores: one row per (round, choice kind) under ``"rounds"``, a per-kind
    total over all rounds under ``"totals"``, and description scores under
    ``"descriptions"`` (only when the log has descriptions)."""
    judged = [_judge(choices, gold) for choices in log.choices]
    order = sorted(range(len(judged)), key=lambda i: (judged[i].round, judged[i].kind))
    out: dict[str, Any] = {
        "rounds": [
            {"kind": judged[i].kind, "round": judged[i].round, **_summarise([judged[i]])}
            for i in order
        ],
        "totals": {
            kind: _summarise([j for j in judged if j.kind == kind])
            for kind in sorted({j.kind for j in judged})
        },
    }
    if log.descriptions:
        out["descriptions"] = score_descriptions(log.descriptions, gold, describe_encoder)
    if log.asked:
        out["kinds"] = score_asked(log.asked, gold)
    return out


def score_asked(logs: Sequence[AskedLog], gold: Gold) -> dict[str, Any]:
    """Per kind, over every batch of it: each answer (and each encoder answer) judged by the
    kind's own rule. A kind that cannot judge says so instead of a number."""
    view = GoldView(gold)
    out: dict[str, Any] = {}
    for name in sorted({log.kind for log in logs}):
        kind = get_kind(name)
        batches = [log for log in logs if log.kind == name]
        statuses: Counter[str] = Counter()
        rows = []
        for log in batches:
            used = log.used if log.used is not None else [True] * len(log.queries)
            encoder = log.encoder_values or [None] * len(log.queries)
            for query, answer, enc, use in zip(
                log.queries, log.answers, encoder, used, strict=True
            ):
                statuses[answer.status] += 1
                right = kind.judge(query, answer.value, view) if answer.value is not None else None
                enc_right = kind.judge(query, enc, view) if enc is not None else None
                rows.append((answer.value is not None, right, enc_right, bool(use)))
        answered = [r for r in rows if r[0]]
        judged = [r for r in answered if r[1] is not None]
        summary: dict[str, Any] = {
            "asked": len(rows),
            "answered": len(answered),
            "statuses": dict(sorted(statuses.items())),
        }
        if answered and not judged:
            summary["scored"] = f"{name} declares no gold judgement (QueryKind.judge)"
            out[name] = summary
            continue
        judged_used = [r for r in judged if r[3]]
        with_encoder = [r for r in rows if r[2] is not None]
        summary.update(
            feedback_accuracy=_ratio(sum(bool(r[1]) for r in judged), len(judged)),
            feedback_accuracy_used=_ratio(sum(bool(r[1]) for r in judged_used), len(judged_used)),
            encoder_accuracy=_ratio(sum(bool(r[2]) for r in with_encoder), len(with_encoder)),
        )
        out[name] = summary
    return out


@dataclass(frozen=True)
class _Judged:
    """One ChoiceLog read against gold: per-question flags, in anchor order."""

    kind: str
    round: int
    chosen: np.ndarray
    encoder_choice: np.ndarray
    used: np.ndarray
    statuses: list[str]
    feedback_right: np.ndarray
    encoder_right: np.ndarray
    available: np.ndarray  # at least one option is right
    width: int  # the most options any question offered


def _judge(log: ChoiceLog, gold: Gold) -> _Judged:
    pool = len(gold.train_y)
    where = f"{log.kind} ChoiceLog of round {log.round}"
    anchors = np.asarray(log.anchors, dtype=np.int64)
    if anchors.size and (anchors.min() < 0 or anchors.max() >= pool):
        raise GcdbenchError(f"{where} has anchors outside the pool (0..{pool - 1}); log pool ids.")
    if log.kind == INSTANCE:
        option_labels = [_pool_labels(opts, gold.train_y, where) for opts in log.options]
    elif log.kind == CATEGORY:
        majority = cluster_majority(np.asarray(log.assignments), gold.train_y, where)
        option_labels = [
            np.array([majority.get(int(c), NO_CLASS) for c in opts], dtype=np.int64)
            for opts in log.options
        ]
    else:
        raise GcdbenchError(
            f"{where}: unknown choice kind {log.kind!r}; use {INSTANCE!r} or {CATEGORY!r}."
        )
    anchor_labels = gold.train_y[anchors] if anchors.size else np.zeros(0, dtype=np.int64)
    chosen = np.asarray(log.chosen, dtype=np.int64)
    encoder_choice = np.asarray(log.encoder_choice, dtype=np.int64)
    return _Judged(
        kind=log.kind,
        round=log.round,
        chosen=chosen,
        encoder_choice=encoder_choice,
        used=np.asarray(log.used, dtype=bool),
        statuses=list(log.statuses),
        feedback_right=_right(chosen, option_labels, anchor_labels, f"{where} chosen"),
        encoder_right=_right(
            encoder_choice, option_labels, anchor_labels, f"{where} encoder_choice"
        ),
        available=np.array(
            [
                bool((labels == anchor).any())
                for labels, anchor in zip(option_labels, anchor_labels, strict=True)
            ],
            dtype=bool,
        ),
        width=max((len(opts) for opts in log.options), default=0),
    )


def cluster_majority(assignments: np.ndarray, train_y: np.ndarray, where: str) -> dict[int, int]:
    """Cluster id -> its majority gold class over the pool; a tie goes to the lowest class
    id. Samples with a negative cluster id (unassigned) are left out."""
    if assignments.shape != train_y.shape:
        raise GcdbenchError(
            f"{where} has assignments of shape {assignments.shape} but the pool has "
            f"{len(train_y)} samples; log one cluster id per pool sample."
        )
    member = assignments >= 0
    clusters, labels = assignments[member].astype(np.int64), train_y[member]
    if not clusters.size:
        return {}
    counts = np.zeros((int(clusters.max()) + 1, int(train_y.max()) + 1), dtype=np.int64)
    np.add.at(counts, (clusters, labels), 1)
    # argmax returns the first maximum, which is the tie rule documented above.
    return {int(c): int(counts[c].argmax()) for c in np.unique(clusters)}


def _pool_labels(options: Sequence[int], train_y: np.ndarray, where: str) -> np.ndarray:
    ids = np.asarray(options, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= len(train_y)):
        raise GcdbenchError(
            f"{where} offers options outside the pool (0..{len(train_y) - 1}); "
            "instance options must be pool ids."
        )
    return train_y[ids]


def _right(
    positions: np.ndarray,
    option_labels: list[np.ndarray],
    anchor_labels: np.ndarray,
    where: str,
) -> np.ndarray:
    right = np.zeros(len(positions), dtype=bool)
    for i, pos in enumerate(positions.tolist()):
        if pos < 0:
            continue
        if pos >= len(option_labels[i]):
            raise GcdbenchError(
                f"{where}[{i}] is position {pos} but only {len(option_labels[i])} options "
                "were offered; log 0-based option positions (−1 for none)."
            )
        label = int(option_labels[i][pos])
        right[i] = label != NO_CLASS and label == int(anchor_labels[i])
    return right


def _summarise(parts: list[_Judged]) -> dict[str, Any]:
    def cat(name: str, dtype: Any) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts] or [np.zeros(0)]).astype(dtype)

    chosen, encoder_choice = cat("chosen", np.int64), cat("encoder_choice", np.int64)
    used, feedback_right = cat("used", bool), cat("feedback_right", bool)
    encoder_right, available = cat("encoder_right", bool), cat("available", bool)
    statuses = [s for p in parts for s in p.statuses]
    asked = len(chosen)
    answered = chosen >= 0
    used_answered = used & answered
    low_confidence = np.array([s == LOW_CONFIDENCE for s in statuses], dtype=bool)
    counts = Counter(statuses)
    status_counts = {s: counts.get(s, 0) for s in STATUSES}
    status_counts.update({s: n for s, n in sorted(counts.items()) if s not in status_counts})
    width = max((p.width for p in parts), default=0)
    return {
        "asked": asked,
        "answered": int(answered.sum()),
        "used": int(used.sum()),
        "feedback_accuracy": _share(feedback_right & answered, answered),
        "feedback_accuracy_used": _share(feedback_right & used_answered, used_answered),
        "encoder_accuracy": _share(encoder_right, np.ones(asked, dtype=bool)),
        "encoder_accuracy_answered": _share(encoder_right & answered, answered),
        "correct_available": _share(available, np.ones(asked, dtype=bool)),
        "statuses": status_counts,
        "status_rates": {s: _ratio(n, asked) for s, n in status_counts.items()},
        "parse_failure_rate": _ratio(counts.get(PARSE_FAILURE, 0), asked),
        "fallback_rate": None if not asked else _round(1 - used.sum() / asked),
        "filtered_rate": _ratio(int((low_confidence | (answered & ~used)).sum()), asked),
        "position_bias": _position_shares(chosen, width),
        "encoder_position_bias": _position_shares(encoder_choice, width),
    }


def _position_shares(positions: np.ndarray, width: int) -> list[float]:
    """Share of the questions with a choice that chose each option position (1st first)."""
    valid = positions[positions >= 0]
    if not valid.size:
        return []
    counts = np.bincount(valid, minlength=width)
    return [_round(c / valid.size) for c in counts]


def score_descriptions(
    logs: Sequence[DescriptionLog], gold: Gold, describe_encoder: EncoderSource = None
) -> dict[str, Any]:
    """Match every description to its nearest gold class name, per round (see the module
    docstring). An encoder that cannot load gives ``coverage: null`` and the reason."""
    k = len(gold.classes)
    try:
        encoder = _load_encoder(describe_encoder)
    except Exception as exc:  # any loader failure is recorded, never silently replaced
        reason = f"{type(exc).__name__}: {exc}"
        return {
            "encoder": None,
            "error": f"description encoder could not load ({reason})",
            "rounds": [
                {"round": d.round, "descriptions": len(d.texts), "coverage": None,
                 "fallbacks": d.fallbacks}
                for d in logs
            ],
        }  # fmt: skip
    names = [gold.class_names.get(c, c).replace("_", " ") for c in gold.classes]
    name_vectors = _unit(encoder.encode(names))
    rounds = []
    for desc in logs:
        row: dict[str, Any] = {"round": desc.round, "descriptions": len(desc.texts)}
        if desc.texts:
            similarity = _unit(encoder.encode(desc.texts)) @ name_vectors.T
            matched = similarity.argmax(axis=1)
            best = similarity[np.arange(len(matched)), matched]
            distinct = len(set(matched.tolist()))
            uniformity = _normalised_entropy(np.bincount(matched, minlength=k))
            mean_best = float(best.mean())
            row.update(
                coverage=_round(distinct / k),
                classes_matched=distinct,
                mean_best_cosine=_round(mean_best),
                uniformity=_round(uniformity) if uniformity is not None else None,
                informativeness=(
                    _round(uniformity * mean_best) if uniformity is not None else None
                ),
            )
        else:
            row.update(coverage=None, reason="no descriptions logged")
        row["fallbacks"] = desc.fallbacks
        rounds.append(row)
    return {"encoder": encoder.describe(), "error": None, "num_classes": k, "rounds": rounds}


def _load_encoder(source: EncoderSource) -> Encoder:
    if isinstance(source, Encoder):
        return source
    if source is None:
        from gcdbench.api.spec import DEFAULT_ENCODER
        from gcdbench.encoders import encoder_factory

        source = encoder_factory(DEFAULT_ENCODER)
    return source()


def _unit(vectors: np.ndarray) -> np.ndarray:
    return l2_normalise(np.asarray(vectors, dtype=np.float64))


def _normalised_entropy(histogram: np.ndarray) -> float | None:
    if len(histogram) < 2:
        return None
    p = histogram[histogram > 0] / histogram.sum()
    # max() turns the −0.0 of a single matched class into 0.0
    return max(0.0, float(-(p * np.log(p)).sum() / math.log(len(histogram))))


def _share(hits: np.ndarray, over: np.ndarray) -> float | None:
    return _ratio(int((hits & over).sum()), int(over.sum()))


def _ratio(part: int, whole: int) -> float | None:
    return _round(part / whole) if whole else None


def _round(value: float) -> float:
    return round(float(value), DIGITS)
