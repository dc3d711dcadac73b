"""IDAS: Intent Discovery with Abstractive Summarization (De Raedt et al., NLP4ConvAI 2023,
arXiv 2305.19783). K-means on the test texts' embeddings picks one prototype per cluster (the
text nearest its centre); the LLM labels each prototype with a short summary of its intent,
zero-shot; every other text is then labelled with its most similar already-labelled texts as
demonstrations, from a memory that grows as texts are labelled. Each text's embedding is
averaged with its label's, smoothed over its nearest neighbours, and clustered by K-means with
the true K. docs/methods/idas.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gcdbench.api import (
    Component,
    GcdbenchError,
    GCDTask,
    Method,
    MethodOutput,
    Query,
    RunContext,
    hookimpl,
    param,
)
from gcdbench.api.asking import ask, usable
from gcdbench.api.feedback import BUDGET_EXHAUSTED, Answer
from gcdbench.api.feedback_log import AskedLog, FeedbackLog
from gcdbench.api.progress import tally_questions
from gcdbench.api.toolkit import KMeansFit, knn, l2_normalise
from gcdbench_builtins.text_expansion_kinds import (
    SUMMARIZE_INTENT,
    kmeans,
    labeled_exemplars,
    margins,
    name_clusters,
    pick_texts,
    readable,
    status_counts,
)

KIND = SUMMARIZE_INTENT.name
#: What a text without a label uses (idas.md §1.5).
FALLBACK_RULE = (
    "a text without an LLM label (not selected, or no usable answer) keeps its own embedding: "
    "label weight 0"
)


@dataclass(frozen=True)
class IdasParams:
    max_texts: int | None = param(
        400,
        ge=1,
        help="test texts the LLM labels, prototypes first (none: every one); the rest keep "
        "their own embedding",
    )
    selection: str = param(
        "margin",
        choices=("margin", "random"),
        help="which non-prototype texts are labelled when max_texts is below the test size: "
        "the smallest K-means margins first, or a uniform sample",
    )
    demos: int = param(
        4,
        ge=1,
        help="most similar labelled texts shown to each non-prototype text (the paper: 8)",
    )
    wave_size: int = param(
        1,
        ge=1,
        help="texts labelled per batch; a batch's demonstrations come from the memory as it "
        "stood when the batch began (1: the paper's one at a time)",
    )
    known_demos: bool = param(
        False,
        help="GCD: the most typical labeled text of each known class, with its class name, "
        "joins the memory of demonstrations (the paper uses no labels)",
    )
    label_weight: float = param(
        0.5,
        ge=0.0,
        le=1.0,
        help="weight w of the label: (1-w)*text + w*label, then L2-normalised (0.5: the "
        "paper's average)",
    )
    smooth_min: int = param(5, ge=1, help="smallest neighbourhood n' tried for smoothing")
    smooth_max: int = param(45, ge=1, help="largest neighbourhood n' tried for smoothing")
    smooth_step: int = param(5, ge=1, help="step between the neighbourhoods tried")
    n_init: int = param(10, ge=1, help="K-means restarts; the best inertia wins")


class _Memory:
    """Labelled texts the demonstrations are drawn from: unit vectors (rows of a matrix that
    doubles when full, so a growing memory is not re-stacked per question), texts, labels."""

    def __init__(self) -> None:
        self.matrix = np.zeros((0, 0), dtype=np.float32)
        self.texts: list[str] = []
        self.labels: list[str] = []

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def vectors(self) -> np.ndarray:
        return self.matrix[: len(self)]

    def add(self, vector: np.ndarray, text: str, label: str) -> None:
        n = len(self)
        if n == len(self.matrix):
            grown = np.zeros((max(2 * n, 64), len(vector)), dtype=np.float32)
            if n:
                grown[:n] = self.vectors
            self.matrix = grown
        self.matrix[n] = vector
        self.texts.append(text)
        self.labels.append(label)

    def nearest(self, vectors: np.ndarray, n: int) -> list[list[list[str]]]:
        """Per row of ``vectors``, the ``n`` most similar entries as ``[text, label]``, least
        similar first, so the most similar example sits next to the question (as KATE-style
        retrieval orders it)."""
        if not len(self) or n < 1:
            return [[] for _ in vectors]
        similarity = np.asarray(vectors, dtype=np.float32) @ self.vectors.T
        top = np.argsort(-similarity, axis=1, kind="stable")[:, :n]
        return [[[self.texts[int(i)], self.labels[int(i)]] for i in row[::-1]] for row in top]


class Idas(Method):
    name = "idas"
    description = (
        "IDAS (De Raedt et al. 2023): LLM labels from prototype-bootstrapped in-context "
        "learning, K-means on smoothed text+label embeddings"
    )
    version = "1"
    uses = ("encoder", "feedback")
    asks = (KIND,)
    components = (
        Component("llm", "ask the LLM for labels (off: text embeddings only, still smoothed)"),
        Component("smoothing", "average each text's features over its n' nearest neighbours"),
    )
    Params = IdasParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "cpu": {},
        "paper": {"max_texts": None, "demos": 8},
        "smoke": {
            "max_texts": 16,
            "demos": 2,
            "smooth_min": 3,
            "smooth_max": 6,
            "smooth_step": 3,
            "n_init": 2,
        },
    }

    @classmethod
    def cross_check(cls, params: Any, num_classes: int | None = None) -> None:
        if params.smooth_min > params.smooth_max:
            raise GcdbenchError(
                f"method 'idas': smooth_min ({params.smooth_min}) exceeds smooth_max "
                f"({params.smooth_max}); e.g. -p smooth_min=5 -p smooth_max=45."
            )

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        p = self.params
        unit = l2_normalise(np.asarray(ctx.embed(task.test), dtype=np.float32))
        k = task.num_classes
        log = FeedbackLog()
        labels: list[str | None] = [None] * len(unit)
        diagnostics: dict[str, Any] = {"fallback_rule": FALLBACK_RULE}
        if self.enabled("llm"):
            with ctx.timed("kmeans"):
                first = kmeans(unit, k, ctx.seed, p.n_init)
            prototypes = _prototypes(unit, first)
            labels, asked = self._label(task, ctx, unit, first, prototypes, log)
            diagnostics.update(asked, prototypes=len(prototypes))
        else:
            diagnostics.update(questions=0, prototypes=0, selection="none (llm ablated)")
        features = self._combine(unit, labels, ctx)
        fit, smoothing = self._cluster(features, k, ctx)
        words = [len(label.split()) for label in labels if label]
        diagnostics.update(
            labelled_by_llm=len(words),
            fallback_texts=len(unit) - len(words),
            mean_label_words=round(float(np.mean(words)), 3) if words else None,
            distinct_labels=len({label.lower() for label in labels if label}),
            smoothing=smoothing,
            inertia=fit.inertia,
            n_iter=fit.n_iter,
        )
        return MethodOutput(
            test_assignments=fit.labels,
            clusters=name_clusters(fit.labels, [[x] if x else [] for x in labels], "label"),
            diagnostics=diagnostics,
            feedback_log=log,
        )

    # -- asking -----------------------------------------------------------------------------

    def _label(
        self,
        task: GCDTask,
        ctx: RunContext,
        unit: np.ndarray,
        first: KMeansFit,
        prototypes: np.ndarray,
        log: FeedbackLog,
    ) -> tuple[list[str | None], dict[str, Any]]:
        """Prototypes zero-shot in one batch, then the selected other texts in a random order
        (the paper's sample order), each with its ``demos`` most similar labelled texts."""
        p = self.params
        texts = task.test.texts
        limit = len(unit) if p.max_texts is None else p.max_texts
        labels: list[str | None] = [None] * len(unit)
        memory = _Memory()
        known = self._known_exemplars(task, ctx)
        # Prototypes of the largest clusters first, so a small budget labels the big intents.
        sizes = np.bincount(first.labels, minlength=len(prototypes))
        order = np.argsort(-sizes[first.labels[prototypes]], kind="stable")
        asked_prototypes = prototypes[order][:limit]
        proto_demos = known.nearest(unit[asked_prototypes], p.demos)
        proto_queries = [
            self._query(task, int(i), d) for i, d in zip(asked_prototypes, proto_demos, strict=True)
        ]
        proto = ask(ctx, proto_queries, log=log, round_index=0, label="idas prototypes")
        proto.used = [usable(a) for a in proto.answers]
        for i, answer, used in zip(asked_prototypes, proto.answers, proto.used, strict=True):
            if used:
                labels[int(i)] = str(answer.value)
                memory.add(unit[int(i)], texts[int(i)], str(answer.value))
        for vector, text, label in zip(known.vectors, known.texts, known.labels, strict=True):
            memory.add(vector, text, label)

        others = np.setdiff1d(np.arange(len(unit)), prototypes)
        budget = max(limit - len(asked_prototypes), 0)
        margin = margins(unit, first.centers) if p.selection == "margin" else None
        chosen = pick_texts(others, budget, p.selection, margin, ctx.rng("selection"))
        sequence = ctx.rng("order").permutation(chosen)
        stopped = any(a.status == BUDGET_EXHAUSTED for a in proto.answers)
        rest, reused = self._label_rest(task, ctx, unit, sequence, labels, memory, stopped)
        if rest.queries:
            log.asked.append(rest)
        answers = [*proto.answers, *rest.answers]
        return labels, {
            "questions": len(answers),
            "prototype_questions": len(proto_queries),
            "answers_ok": int(sum(usable(a) for a in answers)),
            "statuses": status_counts(answers),
            "selection": "all" if budget >= len(others) else p.selection,
            "selected_texts": len(asked_prototypes) + len(chosen),
            "reused_duplicates": reused,
            "known_demonstrations": len(known.texts),
            "budget_exhausted": any(a.status == BUDGET_EXHAUSTED for a in answers),
        }

    def _label_rest(
        self,
        task: GCDTask,
        ctx: RunContext,
        unit: np.ndarray,
        sequence: np.ndarray,
        labels: list[str | None],
        memory: _Memory,
        stopped: bool,
    ) -> tuple[AskedLog, int]:
        """The non-prototype texts, ``wave_size`` at a time; each usable label joins the
        memory before the next wave is built. Returns the log and how many texts took the
        label of an identical, already labelled text instead of a question."""
        texts = task.test.texts
        by_text = {texts[i]: label for i, label in enumerate(labels) if label}
        queries: list[Query] = []
        answers: list[Answer] = []
        reused = 0
        # Not ask() per wave: it opens one progress batch per call, which with one question
        # per wave prints two log lines per text. The waves are one batch to the reporter,
        # timed under ask()'s own name and logged as one AskedLog (idas.md §6, "Progress").
        with ctx.timed(f"feedback:{KIND}"), tally_questions(ctx.reporter, "idas", len(sequence)):
            for start in range(0, len(sequence), self.params.wave_size):
                if stopped:
                    break
                wave: list[int] = []
                for i in (int(x) for x in sequence[start : start + self.params.wave_size]):
                    if texts[i] in by_text:  # same text, same label: one question fewer
                        labels[i] = by_text[texts[i]]
                        reused += 1
                    else:
                        wave.append(i)
                demos = memory.nearest(unit[wave], self.params.demos) if wave else []
                batch = [self._query(task, i, d) for i, d in zip(wave, demos, strict=True)]
                got = list(ctx.feedback.answer(batch)) if batch else []
                for i, answer in zip(wave, got, strict=True):
                    if usable(answer):
                        labels[i] = by_text[texts[i]] = str(answer.value)
                        memory.add(unit[i], texts[i], str(answer.value))
                queries += batch
                answers += got
                # Once the run's --llm-budget is spent every further answer is refused.
                stopped = any(a.status == BUDGET_EXHAUSTED for a in got)
        used = [usable(a) for a in answers]
        return AskedLog(KIND, 1, queries, answers, None, used), reused

    def _query(self, task: GCDTask, i: int, demos: Sequence[Sequence[str]]) -> Query:
        payload: dict[str, Any] = {"text": task.test.texts[i], "task": task.task_word}
        if demos:
            payload["demonstrations"] = [list(d) for d in demos]
        return Query(KIND, payload, {"id": i, "part": "test"})

    def _known_exemplars(self, task: GCDTask, ctx: RunContext) -> _Memory:
        """With ``known_demos``: the most typical labeled text of each known class, labelled
        with its class name (idas.md §6: our GCD extension, off by default)."""
        memory = _Memory()
        if not self.params.known_demos or not task.num_labeled:
            return memory
        labeled = task.train.texts[: task.num_labeled]
        features = l2_normalise(np.asarray(ctx.encoder.encode(labeled), dtype=np.float32))
        for c, row in labeled_exemplars(features, task.labeled_y, range(task.num_known)).items():
            memory.add(features[row], labeled[row], readable(task.known_class_names[c]))
        return memory

    # -- features and clustering ------------------------------------------------------------

    def _combine(
        self, unit: np.ndarray, labels: Sequence[str | None], ctx: RunContext
    ) -> np.ndarray:
        """``l2((1-w)·text + w·label)`` where there is a label, the text alone elsewhere."""
        unique = sorted({label for label in labels if label})
        if not unique:
            return unit
        with ctx.timed("embed-labels"):
            encoded = l2_normalise(np.asarray(ctx.encoder.encode(unique), dtype=np.float32))
        row = {label: i for i, label in enumerate(unique)}
        w = self.params.label_weight
        out = unit.copy()
        for i, label in enumerate(labels):
            if label:
                out[i] = (1 - w) * unit[i] + w * encoded[row[label]]
        return l2_normalise(out)

    def _cluster(
        self, features: np.ndarray, k: int, ctx: RunContext
    ) -> tuple[KMeansFit, dict[str, Any] | None]:
        """K-means on the features, smoothed over the n' nearest neighbours (self included)
        with n' the sweep value whose clustering has the best mean silhouette."""
        p = self.params
        sizes = [
            n for n in range(p.smooth_min, p.smooth_max + 1, p.smooth_step) if n <= len(features)
        ]
        if not self.enabled("smoothing") or not sizes or max(sizes) < 2:
            with ctx.timed("kmeans"):
                return kmeans(features, k, ctx.seed, p.n_init), None
        from sklearn.metrics import silhouette_score

        with ctx.timed("smoothing"):
            neighbours = knn(features, max(sizes) - 1)
            best: tuple[float, int, KMeansFit] | None = None
            scores: dict[str, float] = {}
            for n in sizes:
                rows = np.hstack([np.arange(len(features))[:, None], neighbours[:, : n - 1]])
                smoothed = features[rows].mean(axis=1)
                fit = kmeans(smoothed, k, ctx.seed, p.n_init)
                score = (
                    float(silhouette_score(smoothed, fit.labels))
                    if 1 < len(set(fit.labels.tolist())) < len(features)
                    else -1.0
                )
                scores[str(n)] = round(score, 4)
                if best is None or score > best[0]:
                    best = (score, n, fit)
        assert best is not None  # sizes is not empty
        return best[2], {"neighbours": best[1], "silhouette": scores}


def _prototypes(unit: np.ndarray, fit: KMeansFit) -> np.ndarray:
    """Per cluster, the test id of the member nearest its centre (ties: the lower id)."""
    out = []
    for c in range(len(fit.centers)):
        members = np.flatnonzero(fit.labels == c)
        if not len(members):
            continue
        distances = ((unit[members] - fit.centers[c]) ** 2).sum(axis=1)
        out.append(int(members[int(np.argmin(distances))]))
    return np.asarray(out, dtype=np.int64)


@hookimpl
def register_query_kinds(register):
    register(SUMMARIZE_INTENT)


@hookimpl
def register_methods(register):
    register(Idas)
