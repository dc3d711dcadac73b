"""The ``vllm`` backend: vLLM's in-process engine, one ``LLM.chat`` call per batch.

A thin adapter: each request becomes a conversation plus ``SamplingParams``; ``choices`` and
``json_schema`` become structured-output constraints, so a constrained answer is always valid;
``option_labels`` read the first generated token's top log-probabilities. vLLM is imported only
when the backend is created: it needs a GPU build and cannot be installed on CPU-only machines.
Note that vLLM's greedy outputs can change with batch composition (see vllm#5898); set
``VLLM_BATCH_INVARIANT=1`` where supported if that matters.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from gcdbench.errors import GcdbenchError
from gcdbench.llm.api import Backend, BackendFactory, ChatRequest, ChatResult
from gcdbench.llm.options import BackendOptions

TOP_LOGPROBS = 20


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise GcdbenchError(
            "the vllm backend needs vLLM, which needs a GPU machine; install it there with "
            "`pip install vllm`, or use --llm llamacpp (CPU) or --llm openai with `vllm serve`."
        ) from None
    return vllm


def structured_params(vllm: Any, request: ChatRequest) -> dict[str, Any]:
    """SamplingParams keywords that constrain the answer (vLLM >= 0.12 and older)."""
    if not request.choices and request.json_schema is None:
        return {}
    spec: dict[str, Any] = (
        {"choice": list(request.choices)}
        if request.choices
        else {"json": dict(request.json_schema or {})}
    )
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # before 0.12 the same constraint was "guided decoding"
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**spec)}
    return {"structured_outputs": StructuredOutputsParams(**spec)}


class VllmBackend(Backend):
    name = "vllm"
    supports_choices = True
    supports_json_schema = True
    supports_logprobs = True

    def __init__(self, model: str, engine_args: Mapping[str, Any]) -> None:
        self._vllm = import_vllm()
        self.model = model
        self.engine_args = dict(engine_args)
        self.llm = self._vllm.LLM(model=model, **self.engine_args)

    @property
    def identity(self) -> Mapping[str, str]:
        revision = self.engine_args.get("revision") or "unknown"
        return {"provider": "vllm", "model": self.model, "revision": str(revision)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "vllm": self._vllm.__version__, **self.engine_args}

    def _sampling(self, request: ChatRequest) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            logprobs=TOP_LOGPROBS if request.option_labels else None,
            **structured_params(self._vllm, request),
        )

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        if not requests:
            return []
        conversations = [r.message_dicts() for r in requests]
        started = time.perf_counter()
        outputs = self.llm.chat(
            conversations, [self._sampling(r) for r in requests], use_tqdm=False
        )
        # one engine call answers the whole round; each request's share of it
        latency = (time.perf_counter() - started) / len(requests)
        return [self._result(out, req, latency) for out, req in zip(outputs, requests, strict=True)]

    @staticmethod
    def _result(output: Any, request: ChatRequest, latency: float) -> ChatResult:
        completion = output.outputs[0]
        option_logprobs = None
        if request.option_labels and completion.logprobs:
            option_logprobs = {}
            for alt in completion.logprobs[0].values():
                label = (alt.decoded_token or "").strip()
                if label in request.option_labels and label not in option_logprobs:
                    option_logprobs[label] = float(alt.logprob)
        return ChatResult(
            text=completion.text,
            prompt_tokens=len(output.prompt_token_ids or ()),
            completion_tokens=len(completion.token_ids),
            latency_s=latency,
            option_logprobs=option_logprobs,
            extra={"finish_reason": completion.finish_reason},
        )

    def close(self) -> None:
        self.llm = None


class VllmFactory(BackendFactory):
    name = "vllm"
    description = "vLLM's in-process engine (GPU); structured outputs restrict answers to choices"
    default_model = "Qwen/Qwen2.5-1.5B-Instruct"
    #: engine arguments passed through to vllm.LLM, with their types
    ENGINE_ARGS: ClassVar[dict[str, type]] = {
        "dtype": str,
        "revision": str,
        "max_model_len": int,
        "gpu_memory_utilization": float,
        "tensor_parallel_size": int,
        "seed": int,
        "quantization": str,
        "enforce_eager": bool,
    }

    def create(self, model: str | None, options: Mapping[str, str]) -> Backend:
        opts = BackendOptions(self.name, options, self.ENGINE_ARGS)
        engine_args: dict[str, Any] = {}
        for key, kind in self.ENGINE_ARGS.items():
            if key not in opts.values:
                continue
            if kind is int:
                engine_args[key] = opts.integer(key, 0)
            elif kind is float:
                engine_args[key] = opts.number(key, 0.0)
            elif kind is bool:
                engine_args[key] = opts.flag(key, False)
            else:
                engine_args[key] = opts.text(key)
        return VllmBackend(model or self.default_model or "", engine_args)
