"""``tnt-llm``: TnT-LLM (Wan et al., KDD 2024, arXiv 2403.12173) in GCD mode, as
docs/methods/tnt-llm.md describes it.

Phase 1 builds a taxonomy with the LLM: seeded shuffled mini-batches of unlabeled pool texts
(optionally summarised first), ``taxonomy-generate`` on the first batch — seeded with the
known-class names in GCD mode —, ``taxonomy-update`` (critique, then revision) on each next
one, ``taxonomy-review`` on a fresh batch. Phase 2 has the LLM give a sample of unlabeled texts
their primary label from the taxonomy (``assign-to-taxonomy``) and trains a multinomial
logistic regression on the frozen encoder's features of those texts, which labels every test
text and every labeled text (``labeled_assignments``). ``-p assign=llm`` asks the LLM about
every test and labeled text instead. Cluster ids are taxonomy positions, named by it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from gcdbench.api import (
    ClusterInfo,
    Component,
    GCDTask,
    Method,
    MethodOutput,
    Query,
    RunContext,
    hookimpl,
    param,
)
from gcdbench.api.asking import ask, usable
from gcdbench.api.feedback_log import FeedbackLog
from gcdbench.api.parsing import label_key
from gcdbench.api.toolkit import fit_kmeans, l2_normalise
from gcdbench_builtins import tnt_kinds
from gcdbench_builtins.tnt_kinds import ASSIGN, GENERATE, REVIEW, SUMMARIZE, UPDATE

#: A taxonomy: (name, description) pairs, names distinct by :func:`gcdbench.api.parsing.label_key`.
Taxonomy = list[tuple[str, str]]
ASSIGN_MODES = ("classifier", "llm")


@dataclass(frozen=True)
class TnTParams:
    """Defaults = the cpu preset (BANKING, 25% known, the local 1.5B model in ~15–20 min on
    2 cores): no summaries (intents are one short sentence), three mini-batches of 40 texts
    and a review, names without descriptions (77 described categories would not fit the
    local model's 4k context twice, prompt and reply), 250 texts labelled by the LLM."""

    summarize: bool = param(
        False, help="summarise each Phase-1 text first (paper: on; off for short utterances)"
    )
    summary_words: int = param(20, ge=1, help="words per summary (paper: about 20)")
    batch_size: int = param(40, ge=1, help="texts per taxonomy mini-batch (reference: 200)")
    batches: int = param(
        3, ge=1, help="mini-batches: generate on the first, update on each next one"
    )
    max_labels: int | None = param(
        None, ge=1, help="cap on the taxonomy's size (none = the true K; reference: 25)"
    )
    name_words: int = param(10, ge=1, help="words per category name (paper: 10)")
    description_words: int = param(
        0, ge=0, help="words per category description (paper: 30; 0 = names only)"
    )
    critique_words: int = param(
        30, ge=0, help="words of critique before an update or review (0 = none)"
    )
    assign: str = param(
        "classifier",
        choices=ASSIGN_MODES,
        help="Phase 2: classifier on LLM labels of a sample (paper), or the LLM labels every text",
    )
    assign_sample: int = param(
        250, ge=0, help="unlabeled texts the LLM labels to train the classifier"
    )
    classifier_c: float = param(1.0, gt=0, help="inverse L2 strength of the logistic regression")
    balanced: bool = param(
        True, help="class-balanced weights in the classifier (the reference re-implementation)"
    )


_PAPER: dict[str, Any] = {
    "summarize": True,
    "batch_size": 200,
    "batches": 5,
    "description_words": 30,
    "assign_sample": 2000,
}
_SMOKE: dict[str, Any] = {"batch_size": 8, "batches": 2, "assign_sample": 24}


@dataclass
class _Phase1:
    """What Phase 1 found and how it got there (for diagnostics)."""

    taxonomy: Taxonomy
    steps: list[dict[str, Any]] = field(default_factory=list)
    texts_shown: int = 0
    summaries: dict[str, int] = field(default_factory=dict)


@dataclass
class _Labels:
    """Phase 2's labels in taxonomy positions (-1: none) and how they were made."""

    test: np.ndarray
    labeled: np.ndarray
    diagnostics: dict[str, Any]


class TnTLLM(Method):
    name = "tnt-llm"
    description = (
        "TnT-LLM (Wan et al. 2024): LLM taxonomy from mini-batches (generate, update, review; "
        "seeded with the known classes), LLM primary labels on a sample, logistic regression on "
        "encoder features labels the rest; clusters named by the taxonomy"
    )
    version = "1"
    uses = ("encoder", "feedback")
    asks = (SUMMARIZE, GENERATE, UPDATE, REVIEW, ASSIGN)
    pseudo_labels = True
    components = (
        Component("seed-known", "seed the taxonomy with the known-class names and keep them"),
        Component("updates", "update the taxonomy on each mini-batch after the first"),
        Component("review", "review the taxonomy on a fresh batch at the end"),
    )
    Params = TnTParams
    presets: ClassVar[dict[str, dict[str, Any]]] = {"cpu": {}, "paper": _PAPER, "smoke": _SMOKE}

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        log = FeedbackLog()
        cap = self.params.max_labels or task.num_classes
        unlabeled = np.arange(task.num_labeled, len(task.train), dtype=np.int64)
        phase1 = self._taxonomy(task, ctx, log, unlabeled, cap)
        pool = ctx.embed(task.train)
        test = ctx.embed(task.test)
        with ctx.timed("phase2"):
            labels = self._phase2(task, ctx, log, phase1.taxonomy, unlabeled, pool, test)
        clusters = {
            int(i): ClusterInfo(*phase1.taxonomy[int(i)])
            for i in np.unique(labels.test)
            if labels.diagnostics.get("fallback") is None
        }
        diagnostics = {
            "max_labels": cap,
            "taxonomy_sizes": [step["size"] for step in phase1.steps],
            "taxonomy_steps": phase1.steps,
            "final_taxonomy": [name for name, _ in phase1.taxonomy],
            "phase1_texts": phase1.texts_shown,
            "summaries": phase1.summaries,
            "questions": _questions(log),
            "test_clusters_used": len(np.unique(labels.test)),
            **labels.diagnostics,
        }
        return MethodOutput(
            test_assignments=labels.test.astype(np.int64),
            clusters=clusters,
            diagnostics=diagnostics,
            feedback_log=log,
            labeled_assignments=labels.labeled.astype(np.int64),
        )

    # -- Phase 1: the taxonomy ------------------------------------------------------------

    def _taxonomy(
        self,
        task: GCDTask,
        ctx: RunContext,
        log: FeedbackLog,
        unlabeled: np.ndarray,
        cap: int,
    ) -> _Phase1:
        known: Taxonomy = (
            [(name, "") for name in task.known_class_names] if self.enabled("seed-known") else []
        )
        phase = _Phase1(taxonomy=_cap(known, known, cap))
        phase.steps.append({"step": "seed", "size": len(phase.taxonomy)})
        if len(unlabeled) == 0:
            return phase
        batches = _minibatches(unlabeled, self.params.batch_size, self.params.batches, ctx)
        review = _review_batch(unlabeled, batches, self.params.batch_size, ctx)
        plan: list[tuple[str, np.ndarray]] = [(GENERATE, batches[0])]
        if self.enabled("updates"):
            plan += [(UPDATE, batch) for batch in batches[1:]]
        if self.enabled("review"):
            plan.append((REVIEW, review))
        shown = self._shown_texts(task, ctx, log, plan, phase)
        with ctx.timed("phase1"):
            for index, (kind, batch) in enumerate(plan):
                query = Query(
                    kind,
                    self._payload(task, phase.taxonomy, batch, shown, cap),
                    {"ids": [int(i) for i in batch]},
                )
                asked = ask(ctx, [query], log=log, round_index=index)
                answer = asked.answers[0]
                step: dict[str, Any] = {"step": kind, "batch": len(batch), "status": answer.status}
                if usable(answer):
                    proposed = [(c["name"], c["description"]) for c in answer.value]
                    merged = _keep_known(proposed, known, phase.taxonomy)
                    phase.taxonomy = _cap(merged, known, cap)
                    step.update(
                        proposed=len(proposed),
                        known_readded=len(merged) - len(proposed),
                        cut_by_cap=len(merged) - len(phase.taxonomy),
                    )
                else:
                    asked.used = [False]  # the previous taxonomy stays
                step["size"] = len(phase.taxonomy)
                phase.steps.append(step)
                ctx.reporter.message(
                    f"tnt-llm: {kind} ({answer.status}): {len(phase.taxonomy)} categories"
                )
        phase.texts_shown = len({int(i) for _, batch in plan for i in batch})
        return phase

    def _shown_texts(
        self,
        task: GCDTask,
        ctx: RunContext,
        log: FeedbackLog,
        plan: list[tuple[str, np.ndarray]],
        phase: _Phase1,
    ) -> dict[int, str]:
        """What the taxonomy prompts show for each pool id: its summary (when summarising and
        the summary came back) or the text itself."""
        ids = sorted({int(i) for _, batch in plan for i in batch})
        shown = {i: task.train.texts[i] for i in ids}
        if not self.params.summarize:
            return shown
        queries = [
            Query(
                SUMMARIZE,
                {
                    "text": task.train.texts[i],
                    "task": task.task_word,
                    "summary_words": self.params.summary_words,
                },
                {"id": i},
            )
            for i in ids
        ]
        with ctx.timed("summaries"):
            asked = ask(ctx, queries, log=log, round_index=0)
        for i, answer in zip(ids, asked.answers, strict=True):
            if usable(answer) and answer.value.get("summary"):
                shown[i] = str(answer.value["summary"])
        statuses: dict[str, int] = {}
        for answer in asked.answers:
            statuses[answer.status] = statuses.get(answer.status, 0) + 1
        phase.summaries = statuses
        return shown

    def _payload(
        self,
        task: GCDTask,
        taxonomy: Taxonomy,
        batch: np.ndarray,
        shown: dict[int, str],
        cap: int,
    ) -> dict[str, Any]:
        return {
            "texts": [shown[int(i)] for i in batch],
            "taxonomy": [[name, desc] for name, desc in taxonomy],
            "max_labels": cap,
            "task": task.task_word,
            "name_words": self.params.name_words,
            "description_words": self.params.description_words,
            "critique_words": self.params.critique_words,
        }

    # -- Phase 2: labels ------------------------------------------------------------------

    def _phase2(
        self,
        task: GCDTask,
        ctx: RunContext,
        log: FeedbackLog,
        taxonomy: Taxonomy,
        unlabeled: np.ndarray,
        pool: np.ndarray,
        test: np.ndarray,
    ) -> _Labels:
        if not taxonomy:
            return _kmeans_fallback(task, ctx, pool, test, "the taxonomy is empty")
        name_features = l2_normalise(
            ctx.encoder.encode(
                [
                    f"{name.replace('_', ' ')}: {desc}" if desc else name.replace("_", " ")
                    for name, desc in taxonomy
                ]
            )
        )
        asker = _Asker(ctx, log, taxonomy, task.task_word, name_features)
        if self.params.assign == "llm":
            return self._llm_labels(task, ctx, asker, pool, test)
        rng = ctx.rng("assign-sample")
        size = min(self.params.assign_sample, len(unlabeled))
        sample = np.sort(rng.choice(unlabeled, size=size, replace=False)).astype(np.int64)
        texts = [task.train.texts[i] for i in sample]
        labels = asker.label(texts, sample, "train", pool[sample])
        ok = labels >= 0
        fit = _fit_classifier(pool[sample[ok]], labels[ok], self.params, ctx)
        counts = {
            "llm_asked": size,
            "llm_labelled": int(ok.sum()),
            "llm_label_categories": len(np.unique(labels[ok])),
        }
        if fit is None:
            reason = f"the LLM labelled {int(ok.sum())} of {size} texts with < 2 categories"
            fallback = _kmeans_fallback(task, ctx, pool, test, reason)
            fallback.diagnostics.update(counts)
            return fallback
        classifier, accuracy = fit
        diagnostics = {
            **counts,
            "classifier_train_accuracy": accuracy,
            "assigned_by": (
                f"a logistic regression on frozen encoder features, trained on the LLM's labels "
                f"of {int(ok.sum())} sampled unlabeled texts, labels all {len(test)} test texts "
                f"and {task.num_labeled} labeled texts; the LLM labels no test text itself"
            ),
            "fallback": None,
        }
        return _Labels(
            classifier.predict(test).astype(np.int64),
            classifier.predict(pool[: task.num_labeled]).astype(np.int64),
            diagnostics,
        )

    def _llm_labels(
        self, task: GCDTask, ctx: RunContext, asker: _Asker, pool: np.ndarray, test: np.ndarray
    ) -> _Labels:
        """The variant: the LLM labels every test text and every labeled text; test texts it
        left unlabeled get the classifier's label, trained on its test labels."""
        test_ids = np.arange(len(test), dtype=np.int64)
        test_labels = asker.label(list(task.test.texts), test_ids, "test", test)
        labeled_ids = np.arange(task.num_labeled, dtype=np.int64)
        labeled = asker.label(
            list(task.train.texts[: task.num_labeled]), labeled_ids, "train", pool[labeled_ids]
        )
        ok = test_labels >= 0
        missing = int((~ok).sum())
        if not ok.any():
            fallback = _kmeans_fallback(task, ctx, pool, test, "the LLM labelled no test text")
            fallback.diagnostics.update(
                llm_asked=len(test) + task.num_labeled,
                llm_labelled=int((labeled >= 0).sum()),
            )
            return fallback
        filled = test_labels.copy()
        accuracy = None
        if missing:
            fit = _fit_classifier(test[ok], test_labels[ok], self.params, ctx)
            if fit is None:  # a single category: the unlabelled texts join it
                filled[~ok] = test_labels[ok][0]
            else:
                filled[~ok] = fit[0].predict(test[~ok])
                accuracy = fit[1]
        diagnostics = {
            "llm_asked": len(test) + task.num_labeled,
            "llm_labelled": int(ok.sum()) + int((labeled >= 0).sum()),
            "llm_label_categories": len(np.unique(test_labels[ok])),
            "classifier_train_accuracy": accuracy,
            "assigned_by": (
                f"the LLM labelled {int(ok.sum())} of {len(test)} test texts itself; "
                f"{missing} it left unlabelled got a logistic regression's label"
            ),
            "fallback": None,
        }
        return _Labels(filled, labeled, diagnostics)


class _Asker:
    """Asks ``assign-to-taxonomy`` for a list of texts; -1 where no usable answer came."""

    def __init__(
        self,
        ctx: RunContext,
        log: FeedbackLog,
        taxonomy: Taxonomy,
        task_word: str,
        name_features: np.ndarray,
    ) -> None:
        self.ctx, self.log, self.task_word = ctx, log, task_word
        self.names = [name for name, _ in taxonomy]
        descriptions = [desc for _, desc in taxonomy]
        self.descriptions = descriptions if any(descriptions) else None
        self.name_features = name_features

    def label(
        self, texts: list[str], ids: np.ndarray, part: str, features: np.ndarray
    ) -> np.ndarray:
        payload_extra = {"descriptions": self.descriptions} if self.descriptions else {}
        queries = [
            Query(
                ASSIGN,
                {"text": text, "labels": self.names, "task": self.task_word, **payload_extra},
                {"id": int(i), "part": part} if part == "test" else {"id": int(i)},
            )
            for text, i in zip(texts, ids, strict=True)
        ]
        # The encoder's own answer, for the quality report: the category whose name (and
        # description) is most cosine-similar to the text.
        encoder = l2_normalise(features) @ self.name_features.T if len(features) else None
        encoder_values = [int(j) for j in encoder.argmax(axis=1)] if encoder is not None else []
        asked = ask(
            self.ctx,
            queries,
            log=self.log,
            encoder_values=encoder_values,
            label=f"{ASSIGN} ({part})",
        )
        asked.used = [usable(a) for a in asked.answers]
        return np.array([int(a.value) if usable(a) else -1 for a in asked.answers], dtype=np.int64)


# -- helpers ----------------------------------------------------------------------------------


def _minibatches(ids: np.ndarray, batch_size: int, count: int, ctx: RunContext) -> list[np.ndarray]:
    """``count`` shuffled mini-batches of ``batch_size`` ids (fewer when the pool runs out);
    the last one is topped up from the first ids, as the reference pads its last batch."""
    order = ctx.rng("minibatches").permutation(ids)
    size = min(batch_size, len(order))
    count = min(count, math.ceil(len(order) / size))
    flat = np.resize(order, count * size)
    return [flat[i * size : (i + 1) * size] for i in range(count)]


def _review_batch(
    ids: np.ndarray, batches: list[np.ndarray], batch_size: int, ctx: RunContext
) -> np.ndarray:
    """A fresh random batch: texts no mini-batch showed, topped up with shown ones."""
    used = np.unique(np.concatenate(batches))
    rng = ctx.rng("review")
    fresh = rng.permutation(np.setdiff1d(ids, used))
    size = min(batch_size, len(ids))
    if len(fresh) >= size:
        return fresh[:size]
    return np.concatenate([fresh, rng.permutation(used)[: size - len(fresh)]])


def _keep_known(proposed: Taxonomy, known: Taxonomy, previous: Taxonomy) -> Taxonomy:
    """GCD mode: the LLM's taxonomy, then every known-class name it dropped (with the
    description it had before), so a known class never disappears from the taxonomy."""
    have = {label_key(name) for name, _ in proposed}
    before = {label_key(name): desc for name, desc in previous}
    dropped = [
        (name, before.get(label_key(name), desc))
        for name, desc in known
        if label_key(name) not in have
    ]
    return proposed + dropped


def _cap(taxonomy: Taxonomy, known: Taxonomy, cap: int) -> Taxonomy:
    """At most ``cap`` categories: the last ones that are not known classes go first."""
    known_names = {label_key(name) for name, _ in known}
    out = list(taxonomy)
    while len(out) > cap:
        drop = next(
            (i for i in range(len(out) - 1, -1, -1) if label_key(out[i][0]) not in known_names),
            len(out) - 1,
        )
        del out[drop]
    return out


def _fit_classifier(
    features: np.ndarray, labels: np.ndarray, params: TnTParams, ctx: RunContext
) -> tuple[Any, float] | None:
    """The paper's light classifier: multinomial logistic regression on the encoder's
    features of the LLM-labelled texts, and its training accuracy; None with < 2 classes."""
    if len(np.unique(labels)) < 2:
        return None
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        C=params.classifier_c,
        max_iter=1000,
        class_weight="balanced" if params.balanced else None,
        random_state=int(ctx.rng("classifier").integers(2**31 - 1)),
    )
    with ctx.timed("classifier"), warnings.catch_warnings():
        # A small LLM-labelled sample has few texts per category, which scikit-learn takes
        # for a possible regression target; it is a classification, as declared.
        warnings.filterwarnings("ignore", message="The number of unique classes")
        model.fit(features, labels)
    return model, round(float(model.score(features, labels)), 4)


def _kmeans_fallback(
    task: GCDTask, ctx: RunContext, pool: np.ndarray, test: np.ndarray, reason: str
) -> _Labels:
    """No usable LLM labels: K-means with the true K on the encoder's test features, and the
    labeled texts' nearest centres, so the run still ends with a valid clustering."""
    fit = fit_kmeans(test, task.num_classes, ctx.seed)
    labeled = pool[: task.num_labeled]
    if len(labeled):
        distances = ((labeled[:, None, :] - fit.centers[None, :, :]) ** 2).sum(axis=2)
        nearest = distances.argmin(axis=1).astype(np.int64)
    else:
        nearest = np.zeros(0, dtype=np.int64)
    ctx.reporter.message(f"tnt-llm: {reason}; K-means on encoder features instead")
    diagnostics: dict[str, Any] = {
        "classifier_train_accuracy": None,
        "assigned_by": f"K-means (K = {task.num_classes}) on encoder features: {reason}",
        "fallback": reason,
    }
    return _Labels(fit.labels, nearest, diagnostics)


def _questions(log: FeedbackLog) -> dict[str, int]:
    out: dict[str, int] = {}
    for asked in log.asked:
        out[asked.kind] = out.get(asked.kind, 0) + len(asked.queries)
    return out


@hookimpl
def register_methods(register):
    register(TnTLLM)


@hookimpl
def register_query_kinds(register):
    for kind in tnt_kinds.KINDS:
        register(kind)
