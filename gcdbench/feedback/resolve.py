"""``--llm SPEC``: parse it, validate it before a run starts, and open the provider.

A spec names a feedback provider (``oracle``, ``noisy-oracle:0.8``) or an LLM backend
(``llamacpp``, ``llamacpp:smollm2-135m``, ``openai:gpt-4o-mini``), which the ``llm``
provider wraps. ``--llm-option key=value`` pairs and ``--llm-budget`` shape the answers, so
they join the spec's canonical string — ``NAME[:ARG];key=value;…`` with sorted keys — which
the run's spec stores and hashes. ``--llm-offline`` and ``--ledger`` do not change answers
and stay out of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gcdbench import registry
from gcdbench.api.feedback import FeedbackEnv, FeedbackProvider, FeedbackProviderFactory
from gcdbench.errors import GcdbenchError, UnknownNameError
from gcdbench.feedback.accounting import Budget

#: What ``--llm`` means for a method that asks feedback when the user names nothing.
DEFAULT_LLM = "llamacpp"
LLM_PROVIDER = "llm"
BUDGET_KEY = "budget"


@dataclass(frozen=True)
class LLMSpec:
    name: str  # a feedback provider name
    arg: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    def canonical(self) -> str:
        if self.name == LLM_PROVIDER and self.arg:
            head = self.arg  # the backend spec itself: "llamacpp:MODEL"
        else:
            head = self.name if self.arg is None else f"{self.name}:{self.arg}"
        return ";".join([head, *(f"{k}={v}" for k, v in sorted(self.options.items()))])


def option_pairs(values: Sequence[str]) -> dict[str, str]:
    """``--llm-option`` values (``KEY=VALUE``) as a dict."""
    out: dict[str, str] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key.strip():
            raise GcdbenchError(
                f"--llm-option takes KEY=VALUE, got {value!r}; e.g. --llm-option temperature=0.7."
            )
        out[key.strip()] = raw.strip()
    check_options(out)
    return out


def check_options(options: Mapping[str, str]) -> None:
    """Refuse what the canonical spec could not hold: it joins ``key=value`` pairs with ';'
    and splits each at its first '=', so a ';' anywhere or a '=' in a key would be read
    back mid-run as other options than the ones checked now."""
    for key, value in options.items():
        if ";" in key or ";" in value or "=" in key or not key.strip():
            raise GcdbenchError(
                f"--llm-option {f'{key}={value}'!r} cannot be stored: an option's key needs a name "
                "without ';' or '=', and its value no ';' (';' separates options in the "
                "run's LLM spec)."
            )


def parse_llm_spec(
    text: str,
    options: Mapping[str, str] | None = None,
    budget: str | None = None,
) -> LLMSpec:
    """Split ``NAME[:ARG][;k=v…]``, merge ``--llm-option`` pairs and ``--llm-budget``."""
    head, *pairs = [p.strip() for p in text.strip().split(";")]
    if head.startswith(f"{LLM_PROVIDER}:"):  # "llm:llamacpp" says the same as "llamacpp"
        head = head[len(LLM_PROVIDER) + 1 :]
    merged = {**option_pairs([p for p in pairs if p]), **(options or {})}
    check_options(merged)  # options handed over as a mapping (a plan, the API) too
    parsed_budget = Budget.parse(budget if budget is not None else merged.pop(BUDGET_KEY, None))
    if parsed_budget is not None:
        merged[BUDGET_KEY] = parsed_budget.canonical()
    name, sep, arg = head.partition(":")
    if not name:
        raise GcdbenchError(
            f"--llm {text!r} names nothing; pass a backend (llamacpp, openai:gpt-4o-mini) or an "
            "oracle (oracle, noisy-oracle:0.8), or leave --llm out for the default (llamacpp)."
        )
    if sep and not arg.strip():
        # "openai:" used to fall back to the default model silently; say so instead.
        raise GcdbenchError(
            f"--llm {text!r} ends with ':' but names nothing after it; {_fix(name)}."
        )
    feedback_names = registry.names("feedback")
    if name in feedback_names:
        return LLMSpec(name, arg if sep else None, merged)
    backends = registry.names("llm")
    if name in backends:
        model = arg if sep and arg else getattr(registry.get("llm", name), "default_model", None)
        return LLMSpec(LLM_PROVIDER, f"{name}:{model}" if model else name, merged)
    raise UnknownNameError("LLM backend or feedback provider", name, [*feedback_names, *backends])


def _fix(name: str) -> str:
    """What to write instead of ``NAME:`` with nothing after the colon."""
    if name == "noisy-oracle":
        return "give the accuracy, e.g. --llm noisy-oracle:0.8"
    if name in registry.names("llm"):
        default = getattr(registry.get("llm", name), "default_model", None)
        plain = f", or drop the colon for its default ({default})" if default else ""
        return f"name a model, e.g. --llm {name}:MODEL{plain}"
    return f"drop the colon: --llm {name}"


def check_llm_spec(spec: LLMSpec) -> None:
    factory: FeedbackProviderFactory = registry.get("feedback", spec.name)
    factory.check(spec.arg, spec.options)


def resolve_llm(
    text: str | None,
    options: Mapping[str, str] | None = None,
    budget: str | None = None,
) -> str:
    """The canonical spec string for ``--llm`` (the default when None, never when empty),
    validated."""
    spec = parse_llm_spec(DEFAULT_LLM if text is None else text, options, budget)
    check_llm_spec(spec)
    return spec.canonical()


def open_feedback(text: str, env: FeedbackEnv) -> FeedbackProvider:
    """The provider a canonical (or user-typed) spec names, built for one run."""
    spec = parse_llm_spec(text)
    factory: FeedbackProviderFactory = registry.get("feedback", spec.name)
    factory.check(spec.arg, spec.options)
    return factory.create(spec.arg, spec.options, env)
