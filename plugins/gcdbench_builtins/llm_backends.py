"""Built-in LLM backends: ``llamacpp`` (in process, the offline default), ``openai`` (any
OpenAI-compatible endpoint), ``vllm`` (in-process engine on a GPU) and ``transformers``."""

from __future__ import annotations

from gcdbench.api import hookimpl
from gcdbench.llm.llamacpp import LlamaCppFactory
from gcdbench.llm.openai_compat import OpenAICompatibleFactory
from gcdbench.llm.transformers_backend import TransformersFactory
from gcdbench.llm.vllm_backend import VllmFactory


@hookimpl
def register_llm_backends(register):
    register(LlamaCppFactory())
    register(OpenAICompatibleFactory())
    register(VllmFactory())
    register(TransformersFactory())
