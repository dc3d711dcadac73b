"""The factories behind ``--llm``: ``oracle``, ``noisy-oracle`` and ``llm`` (a backend)."""

from __future__ import annotations

from collections.abc import Mapping

from gcdbench import registry
from gcdbench.api.feedback import FeedbackEnv, FeedbackProvider, FeedbackProviderFactory
from gcdbench.errors import GcdbenchError
from gcdbench.feedback.accounting import Budget
from gcdbench.feedback.asking import LLMOptions
from gcdbench.feedback.ledger import Ledger, default_path
from gcdbench.feedback.oracle import OracleProvider, parse_accuracy
from gcdbench.feedback.resolve import BUDGET_KEY, LLMSpec
from gcdbench.llm.options import BackendOptions

#: ``--llm-option max_failures=N``: the questions that may end in error (every retry spent)
#: before a run stops; unset, errors are recorded and the run goes on. The provider's, not
#: the backend's: it changes no answer and never enters a ledger key.
FAILURE_BUDGET_KEY = "max_failures"


def _no_options(name: str, options: Mapping[str, str]) -> None:
    if options:
        keys = ", ".join(sorted(options))
        raise GcdbenchError(
            f"{name} asks no model, so it takes no --llm-option or --llm-budget (got {keys}); "
            "drop them."
        )


class OracleFactory(FeedbackProviderFactory):
    name = "oracle"
    description = "answers from gold labels: each method's upper bound (simulated)"
    simulated = True

    def check(self, arg: str | None, options: Mapping[str, str]) -> None:
        if arg:
            raise GcdbenchError(
                f"oracle takes no argument (got {arg!r}); for a noisy one use noisy-oracle:{arg}."
            )
        _no_options(self.name, options)

    def create(
        self, arg: str | None, options: Mapping[str, str], env: FeedbackEnv
    ) -> FeedbackProvider:
        return OracleProvider(env.gold, env.seed, spec=self.name)


class NoisyOracleFactory(FeedbackProviderFactory):
    name = "noisy-oracle"
    description = "gold answers right with probability P, else a uniform wrong option (simulated)"
    simulated = True

    def check(self, arg: str | None, options: Mapping[str, str]) -> None:
        parse_accuracy(arg)
        _no_options(self.name, options)

    def create(
        self, arg: str | None, options: Mapping[str, str], env: FeedbackEnv
    ) -> FeedbackProvider:
        spec = LLMSpec(self.name, arg, options).canonical()
        return OracleProvider(env.gold, env.seed, parse_accuracy(arg), spec=spec)


class LLMProviderFactory(FeedbackProviderFactory):
    name = "llm"
    description = "asks an LLM backend (--llm BACKEND[:MODEL]) through the feedback ledger"

    def _split(
        self, arg: str | None, options: Mapping[str, str]
    ) -> tuple[Budget | None, int | None, LLMOptions, dict[str, str]]:
        if not arg:
            raise GcdbenchError(
                f"the llm provider needs a backend: --llm BACKEND[:MODEL], one of "
                f"{', '.join(registry.names('llm')) or 'none installed'}."
            )
        backend = registry.get("llm", arg.partition(":")[0])
        rest = dict(options)
        budget = Budget.parse(rest.pop(BUDGET_KEY, None))
        max_failures = parse_failure_budget(rest.pop(FAILURE_BUDGET_KEY, None))
        llm_options, backend_options = LLMOptions.split(rest)
        known = getattr(backend, "OPTIONS", None)
        if known is not None:
            # Here, before a run writes anything, not when the backend first opens (after
            # pre-training): a mistyped key, or an API key typed as an option, stops at once.
            BackendOptions(str(backend.name), backend_options, known)
        return budget, max_failures, llm_options, backend_options

    def check(self, arg: str | None, options: Mapping[str, str]) -> None:
        self._split(arg, options)

    def create(
        self, arg: str | None, options: Mapping[str, str], env: FeedbackEnv
    ) -> FeedbackProvider:
        from gcdbench.feedback.llm_provider import LLMFeedbackProvider
        from gcdbench.llm.resolve import open_backend

        budget, max_failures, llm_options, backend_options = self._split(arg, options)
        ledger = Ledger(default_path(env.ledger_path))
        backend = open_backend(str(arg), backend_options)
        return LLMFeedbackProvider(
            backend,
            ledger,
            llm_options,
            budget=budget,
            offline=env.offline,
            run_hash=env.run_hash,
            spec=LLMSpec(self.name, arg, options).canonical(),
            max_failures=max_failures,
        )


def parse_failure_budget(raw: str | None) -> int | None:
    """``max_failures``'s value: a count of questions, 0 or more; None when not given."""
    if raw is None:
        return None
    text = raw.strip()
    if not text.isdigit():
        raise GcdbenchError(
            f"--llm-option {FAILURE_BUDGET_KEY}={raw!r} is not a number of questions (0 or "
            f"more); e.g. --llm-option {FAILURE_BUDGET_KEY}=10, or leave it out to record "
            "every error and go on."
        )
    return int(text)
