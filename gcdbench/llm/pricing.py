"""What a batch of LLM calls costs, in USD, from a dated list-price table.

Local backends cost nothing per token. An API model that is not in the table has an unknown
price (``None``), reported as unknown, never as free. List prices change: the table carries
the date it was written and a run record should quote that date with any cost it reports.
"""

from __future__ import annotations

from collections.abc import Mapping

#: when the prices below were copied from the providers' public price pages
PRICES_AS_OF = "2025-06"

LOCAL_PROVIDERS = frozenset({"llamacpp", "transformers", "vllm"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})

#: host -> model prefix -> (USD per 1M input tokens, USD per 1M output tokens), standard tier,
#: no cache discount. Dated snapshots ("gpt-4o-mini-2024-07-18") match their base name.
PRICES: dict[str, dict[str, tuple[float, float]]] = {
    "api.openai.com": {
        "gpt-4o-mini": (0.15, 0.60),
        "gpt-4o": (2.50, 10.00),
        "gpt-4.1-nano": (0.10, 0.40),
        "gpt-4.1-mini": (0.40, 1.60),
        "gpt-4.1": (2.00, 8.00),
        "gpt-3.5-turbo": (0.50, 1.50),
        "o4-mini": (1.10, 4.40),
    },
    "api.deepseek.com": {
        "deepseek-chat": (0.27, 1.10),
        "deepseek-reasoner": (0.55, 2.19),
    },
    "api.together.xyz": {
        "deepseek-ai/DeepSeek-V3": (1.25, 1.25),
        "meta-llama/Llama-3.3-70B-Instruct-Turbo": (0.88, 0.88),
        "Qwen/Qwen2.5-72B-Instruct-Turbo": (1.20, 1.20),
    },
}


def _host(identity: Mapping[str, str]) -> str:
    host = identity.get("host", "")
    if host.startswith("["):  # [::1]:8000
        return host[1 : host.find("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def price(identity: Mapping[str, str]) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for the backend ``identity``; None when unknown."""
    provider = identity.get("provider", "")
    if provider in LOCAL_PROVIDERS:
        return (0.0, 0.0)
    host = _host(identity)
    if host in LOCAL_HOSTS:
        return (0.0, 0.0)
    table = PRICES.get(host)
    model = identity.get("model", "")
    if not table or not model:
        return None
    # the longest matching name wins, so "gpt-4o-mini-…" is not priced as "gpt-4o"
    matches = [name for name in table if model == name or model.startswith(name + "-")]
    return table[max(matches, key=len)] if matches else None


def cost(identity: Mapping[str, str], prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for these token counts; None when the price is unknown."""
    rates = price(identity)
    if rates is None:
        return None
    return (prompt_tokens * rates[0] + completion_tokens * rates[1]) / 1_000_000
