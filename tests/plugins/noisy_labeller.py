"""A test-only pseudo-labelling method, for refiners (``--refine silr``) to refine.

It simulates an LLM classifier of known reliability: it reads the gold labels of the test
and labeled texts through ``ctx.leak_gold_labels`` (so its records are marked
``leaks_labels``, as any gold reader's are) and replaces a share ``1 - accuracy`` of them
with a wrong class: uniformly drawn (``noise=uniform``) or the next class of a random cycle
(``noise=pair``, the classic pair-flip noise: every class leaks into one other). Cluster ids
are a random permutation of the gold ids, so nothing downstream can read gold from them.
``coverage`` leaves a share of the labeled texts unlabelled (-1), as a budget cut would.
Tests register it with ``registry.register_plugin``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gcdbench.api import GCDTask, Method, MethodOutput, RunContext, hookimpl, param

_WHY = "noisy-labeller: a simulated LLM classifier, gold labels with noise"


@dataclass(frozen=True)
class NoisyParams:
    accuracy: float = param(0.6, ge=0, le=1, help="share of gold labels kept")
    noise: str = param("uniform", choices=("uniform", "pair"), help="how wrong labels are drawn")
    coverage: float = param(1.0, ge=0, le=1, help="share of labeled texts it labels")


class NoisyLabeller(Method):
    name = "noisy-labeller"
    description = "test fixture: gold labels with noise, text by text"
    uses = ()
    pseudo_labels = True
    Params = NoisyParams

    def run(self, task: GCDTask, ctx: RunContext) -> MethodOutput:
        rng = ctx.rng("noisy-labeller")
        test, labeled = self._gold(task, ctx, rng)
        unlabelled = rng.random(len(labeled)) >= self.params.coverage
        labeled = np.where(unlabelled, -1, labeled)
        return MethodOutput(
            test_assignments=test.astype(np.int64),
            labeled_assignments=labeled.astype(np.int64),
            diagnostics={"labeller": f"gold, {self.params.noise} noise"},
        )

    def _gold(
        self, task: GCDTask, ctx: RunContext, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        k = task.num_classes
        test_y = ctx.leak_gold_labels("test", _WHY)
        labeled_y = ctx.leak_gold_labels("train", _WHY)[: task.num_labeled]
        cycle = rng.permutation(k)
        position = np.argsort(cycle)
        ids = rng.permutation(k)

        def corrupt(y: np.ndarray) -> np.ndarray:
            wrong = rng.random(len(y)) >= self.params.accuracy
            if self.params.noise == "pair":
                other = cycle[(position[y] + 1) % k]
            else:  # a uniformly drawn class other than the true one
                draw = rng.integers(0, k - 1, len(y))
                other = draw + (draw >= y)
            return ids[np.where(wrong, other, y)]

        return corrupt(test_y), corrupt(labeled_y)


@hookimpl
def register_methods(register):
    register(NoisyLabeller)
