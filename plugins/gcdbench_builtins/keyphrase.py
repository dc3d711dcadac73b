"""Keyphrase expansion clustering (Viswanathan et al., TACL 2024, arXiv 2307.00524), the
paper's keyphrase variant: the LLM lists keyphrases describing each test text's category, the
run's encoder embeds them (joined), and K-means with the true K clusters the concatenation of
the text's and the keyphrases' L2-normalised embeddings. docs/methods/keyphrase.md.

The paper's other two variants (LLM pairwise constraints for PCKMeans, LLM correction of
low-confidence assignments) are not implemented (keyphrase.md §6).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gcdbench.api import (
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
from gcdbench.api.feedback import BUDGET_EXHAUSTED
from gcdbench.api.feedback_log import FeedbackLog
from gcdbench.api.toolkit import l2_normalise
from gcdbench_builtins.text_expansion_kinds import (
    KEYPHRASES,
    keyphrase_demo,
    kmeans,
    labeled_exemplars,
    margins,
    name_clusters,
    pick_texts,
    readable,
    status_counts,
)

#: What a text without keyphrases uses in place of the keyphrase embedding (keyphrase.md §1.5).
FALLBACK_RULE = (
    "a text without LLM keyphrases (not selected, or no usable answer) uses its own "
    "embedding in place of the keyphrase embedding: [t, t]"
)


@dataclass(frozen=True)
class KeyphraseParams:
    max_texts: int | None = param(
        400,
        ge=1,
        help="test texts the LLM expands (none: every one); the rest use their own embedding twice",
    )
    selection: str = param(
        "margin",
        choices=("margin", "random"),
        help="which texts the LLM expands when max_texts is below the test size: the smallest "
        "K-means margins first, or a uniform sample",
    )
    demos: int = param(
        3,
        ge=0,
        help="demonstrations in every prompt: labeled texts of distinct known classes, each "
        "with its class name as the keyphrase",
    )
    max_keyphrases: int = param(10, ge=1, help="keyphrases kept per text (the first ones)")
    n_init: int = param(10, ge=1, help="K-means restarts; the best inertia wins")


class Keyphrase(Method):
    name = "keyphrase"
    description = (
        "keyphrase expansion (Viswanathan et al. 2024): K-means on [text, LLM keyphrases] "
        "embeddings"
    )
    version = "1"
    uses = ("encoder", "feedback")
    asks = (KEYPHRASES.name,)
    components = (
        Component("llm", "ask the LLM for keyphrases (off: plain K-means on the text embedding)"),
        Component("demos", "demonstrations from labeled known-class texts (off: zero-shot)"),
    )
    Params = KeyphraseParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "cpu": {},
        "paper": {"max_texts": None},
        "smoke": {"max_texts": 12, "n_init": 2},
    }

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        p = self.params
        texts = task.test.texts
        unit = l2_normalise(np.asarray(ctx.embed(task.test), dtype=np.float32))
        log = FeedbackLog()
        keyphrases: list[list[str]] = [[] for _ in texts]
        diagnostics: dict[str, Any] = {"fallback_rule": FALLBACK_RULE}
        if self.enabled("llm"):
            chosen, how = self._choose(unit, task.num_classes, ctx)
            demos = self._demonstrations(task, ctx) if self.enabled("demos") else []
            keyphrases, asked = self._expand(task, ctx, chosen, demos, log)
            diagnostics.update(asked, selection=how, selected_texts=len(chosen))
            diagnostics["demonstrations"] = len(demos)
        else:
            diagnostics.update(questions=0, selection="none (llm ablated)", selected_texts=0)
        features, expanded = self._features(unit, keyphrases, ctx)
        with ctx.timed("kmeans"):
            fit = kmeans(features, task.num_classes, ctx.seed, p.n_init)
        counts = [len(k) for k in keyphrases if k]
        diagnostics.update(
            expanded_by_llm=expanded,
            fallback_texts=len(texts) - expanded,
            mean_keyphrases=round(float(np.mean(counts)), 3) if counts else None,
            feature_dim=int(features.shape[1]),
            inertia=fit.inertia,
            n_iter=fit.n_iter,
        )
        return MethodOutput(
            test_assignments=fit.labels,
            clusters=name_clusters(fit.labels, keyphrases, "keyphrase"),
            diagnostics=diagnostics,
            feedback_log=log,
        )

    def _choose(self, unit: np.ndarray, k: int, ctx: RunContext) -> tuple[np.ndarray, str]:
        """The test ids to expand, and how they were chosen (keyphrase.md §1.4)."""
        everyone = np.arange(len(unit))
        limit = self.params.max_texts
        if limit is None or limit >= len(unit):
            return everyone, "all"
        margin = None
        if self.params.selection == "margin":
            # The encoder's own clustering says which texts it cannot place: spend the
            # questions there, where a keyphrase can move a text.
            with ctx.timed("selection"):
                fit = kmeans(unit, k, ctx.seed, self.params.n_init)
            margin = margins(unit, fit.centers)
        rng = ctx.rng("selection")
        return pick_texts(everyone, limit, self.params.selection, margin, rng), (
            self.params.selection
        )

    def _demonstrations(self, task: GCDTask, ctx: RunContext) -> list[list[str]]:
        """``demos`` labeled texts of distinct known classes drawn at random, each the most
        typical labeled text of its class, with the class name as its one keyphrase. The same
        for every question, so the prompt prefix is shared (llama.cpp reuses its cache)."""
        present = sorted({int(y) for y in task.labeled_y})
        if not self.params.demos or not present:
            return []
        rng = ctx.rng("demos")
        classes = sorted(
            int(c) for c in rng.choice(present, min(self.params.demos, len(present)), False)
        )
        rows = np.flatnonzero(np.isin(task.labeled_y, classes))
        # Only the chosen classes' labeled texts are encoded: a few dozen, not the pool.
        features = ctx.encoder.encode([task.train.texts[int(r)] for r in rows])
        exemplars = labeled_exemplars(features, task.labeled_y[rows], classes)
        return [
            [
                task.train.texts[int(rows[i])],
                keyphrase_demo([readable(task.known_class_names[c])]),
            ]
            for c, i in exemplars.items()
        ]

    def _expand(
        self,
        task: GCDTask,
        ctx: RunContext,
        chosen: np.ndarray,
        demos: list[list[str]],
        log: FeedbackLog,
    ) -> tuple[list[list[str]], dict[str, Any]]:
        """One question per distinct chosen text (the official code caches by text); every
        test text with that text gets the answer."""
        texts = task.test.texts
        first: dict[str, int] = {}
        for i in chosen:
            first.setdefault(texts[int(i)], int(i))
        payload_extra: dict[str, Any] = {"task": task.task_word}
        if demos:
            payload_extra["demonstrations"] = demos
        queries = [
            Query(KEYPHRASES.name, {"text": t, **payload_extra}, {"id": i, "part": "test"})
            for t, i in first.items()
        ]
        asked = ask(ctx, queries, log=log, label="keyphrases")
        answers = asked.answers
        asked.used = [usable(a) and bool(_clean(a.value, 1)) for a in answers]
        by_text = {
            t: _clean(a.value, self.params.max_keyphrases)
            for t, a, used in zip(first, answers, asked.used, strict=True)
            if used
        }
        keyphrases = [list(by_text.get(t, [])) for t in texts]
        return keyphrases, {
            "questions": len(queries),
            "answers_ok": int(sum(asked.used)),
            "statuses": status_counts(answers),
            "budget_exhausted": any(a.status == BUDGET_EXHAUSTED for a in answers),
        }

    def _features(
        self, unit: np.ndarray, keyphrases: Sequence[Sequence[str]], ctx: RunContext
    ) -> tuple[np.ndarray, int]:
        """``[t, k]`` per text, each half unit length; ``[t, t]`` where there are no keyphrases
        (FALLBACK_RULE). With no keyphrases at all the text embedding alone: the same
        clustering, half the width."""
        joined = [", ".join(k) if k else "" for k in keyphrases]
        expanded = sum(1 for j in joined if j)
        if not expanded:
            return unit, 0
        # Each distinct keyphrase string is encoded once (the oracle gives one per class).
        unique = sorted({j for j in joined if j})
        with ctx.timed("embed-keyphrases"):
            encoded = l2_normalise(np.asarray(ctx.encoder.encode(unique), dtype=np.float32))
        row = {j: i for i, j in enumerate(unique)}
        second = unit.copy()
        for i, j in enumerate(joined):
            if j:
                second[i] = encoded[row[j]]
        return np.hstack([unit, second]), expanded


def _clean(value: Any, limit: int) -> list[str]:
    """The answer's keyphrases as distinct non-empty strings, at most ``limit``."""
    if not isinstance(value, list | tuple):
        return []
    out = [str(v).strip() for v in value if str(v).strip()]
    return list(dict.fromkeys(out))[:limit]


@hookimpl
def register_query_kinds(register):
    register(KEYPHRASES)


@hookimpl
def register_methods(register):
    register(Keyphrase)
