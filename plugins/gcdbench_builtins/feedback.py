"""Built-in feedback providers: ``oracle``, ``noisy-oracle`` and ``llm`` (any LLM backend)."""

from __future__ import annotations

from gcdbench.api import hookimpl
from gcdbench.feedback.factories import LLMProviderFactory, NoisyOracleFactory, OracleFactory


@hookimpl
def register_feedback_providers(register):
    register(OracleFactory())
    register(NoisyOracleFactory())
    register(LLMProviderFactory())
