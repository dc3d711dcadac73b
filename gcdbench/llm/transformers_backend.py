"""The ``transformers`` backend: a local or hub causal LM through ``AutoModelForCausalLM``.

Free-text requests are generated in left-padded batches. Multiple-choice requests need no
generation: ``option_labels`` are scored by the log-softmax of the first token of each label
at the first answer position, and ``choices`` by the summed log-probability of each choice's
tokens after the prompt (the answer is the best-scoring choice, so it is always one of them).
The prompt is the model's own chat template. A GGUF loads through ``gguf_file=`` (needs the
``gguf`` package; transformers dequantises it, so the first load of a 1.5B takes over a minute
and about 7 GB in fp32); the ``llamacpp`` backend runs GGUFs far faster.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gcdbench.errors import GcdbenchError
from gcdbench.llm.api import Backend, BackendFactory, ChatRequest, ChatResult
from gcdbench.llm.models import verified_sha256
from gcdbench.llm.options import BackendOptions

DTYPES = ("auto", "float32", "bfloat16", "float16")


def weights_digest(folder: Path) -> str:
    """One sha256 over the weight files of a model folder (each hashed once, then cached)."""
    files = sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")
    )
    combined = hashlib.sha256()
    for path in files:
        combined.update(f"{path.name}:{verified_sha256(path)}\n".encode())
    return combined.hexdigest()


class TransformersBackend(Backend):
    name = "transformers"
    supports_choices = True
    supports_json_schema = False  # answered as free text; nothing constrains the output
    supports_logprobs = True

    def __init__(
        self,
        model_ref: str,
        *,
        gguf_file: str | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_ref = model_ref
        self.batch_size = batch_size
        self.gguf_file = gguf_file
        load_kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_ref, **load_kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(
                model_ref,
                dtype=dtype if dtype == "auto" else getattr(torch, dtype),
                **load_kwargs,
            )
        except ImportError as exc:  # e.g. gguf_file= without the gguf package
            raise GcdbenchError(
                f"loading {model_ref!r} needs a missing package ({exc}); for a GGUF run "
                "`pip install gguf accelerate`."
            ) from None
        except (OSError, ValueError) as exc:
            raise GcdbenchError(
                f"could not load the causal LM {model_ref!r} ({type(exc).__name__}); pass a local "
                "model folder or a hub id (with network), and gguf_file=NAME for a GGUF."
            ) from None
        self.model.eval()
        if not getattr(self.tokenizer, "chat_template", None):
            raise GcdbenchError(
                f"the tokenizer of {model_ref!r} has no chat template; use an instruct model "
                "(or save one with tokenizer.chat_template set)."
            )
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        folder = Path(model_ref).expanduser()
        if folder.is_dir():
            self._revision = "sha256:" + weights_digest(folder)
        else:
            self._revision = str(getattr(self.model.config, "_commit_hash", None) or "unknown")

    @property
    def identity(self) -> Mapping[str, str]:
        model = f"{self.model_ref}:{self.gguf_file}" if self.gguf_file else self.model_ref
        return {"provider": "transformers", "model": model, "revision": self._revision}

    # -- helpers ----------------------------------------------------------------------------
    def _prompt_ids(self, request: ChatRequest) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            request.message_dicts(),
            tokenize=False,
            add_generation_prompt=True,
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _padded(self, sequences: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        import torch

        width = max(len(s) for s in sequences)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:  # left padding: the answer position is the last column for every row
                ids[row, width - len(seq) :] = torch.tensor(list(seq))
                mask[row, width - len(seq) :] = 1
        return ids, mask

    def _log_softmax(self, sequences: Sequence[Sequence[int]]) -> Any:
        import torch

        ids, mask = self._padded(sequences)
        with torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits
        return torch.log_softmax(logits.float(), dim=-1), ids.shape[1]

    def _first_token(self, label: str) -> int:
        ids = self.tokenizer(label, add_special_tokens=False)["input_ids"]
        if not ids:
            raise GcdbenchError(
                f"option label {label!r} encodes to no token; pass a visible label."
            )
        return int(ids[0])

    # -- the three kinds of request ---------------------------------------------------------
    def _score_labels(self, prompts: list[list[int]], requests: list[ChatRequest]) -> list[dict]:
        logprobs, _ = self._log_softmax(prompts)
        # each distinct label is tokenised once per batch, not once per request
        token = {
            lab: self._first_token(lab)
            for lab in dict.fromkeys(lab for r in requests for lab in r.option_labels or ())
        }
        out = []
        for row, request in enumerate(requests):
            labels = request.option_labels or ()
            out.append({lab: float(logprobs[row, -1, token[lab]]) for lab in labels})
        return out

    def _score_choices(self, prompt: list[int], choices: Sequence[str]) -> dict[str, float]:
        continuations = [
            list(self.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in choices
        ]
        logprobs, width = self._log_softmax([prompt + c for c in continuations])
        scores = {}
        for row, (choice, cont) in enumerate(zip(choices, continuations, strict=True)):
            # token t of the continuation is predicted at position (its index - 1)
            start = width - len(cont)
            scores[choice] = float(
                sum(logprobs[row, start + k - 1, tok] for k, tok in enumerate(cont))
            )
        return scores

    def _generate(self, prompts: list[list[int]], request: ChatRequest) -> list[tuple[str, int]]:
        import torch

        ids, mask = self._padded(prompts)
        sample = request.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": request.max_tokens, "do_sample": sample}
        if sample:
            kwargs.update(temperature=request.temperature, top_p=request.top_p)
        # Sampling draws from torch's global generator; fork_rng seeds a private copy for this
        # call and restores the caller's state afterwards.
        rng_scope = torch.random.fork_rng() if sample else contextlib.nullcontext()
        with rng_scope, torch.inference_mode():
            if sample:
                torch.manual_seed(request.seed)
            output = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )
        stop = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        results = []
        for row in output[:, ids.shape[1] :].tolist():
            n = next((i for i, tok in enumerate(row) if tok in stop), len(row))
            results.append((str(self.tokenizer.decode(row[:n], skip_special_tokens=True)), n))
        return results

    def chat(self, requests: Sequence[ChatRequest]) -> list[ChatResult]:
        results: list[ChatResult] = []
        for start in range(0, len(requests), self.batch_size):
            results.extend(self._chat_batch(list(requests[start : start + self.batch_size])))
        return results

    def _chat_batch(self, batch: list[ChatRequest]) -> list[ChatResult]:
        started = time.perf_counter()
        prompts = [self._prompt_ids(r) for r in batch]
        results = [ChatResult(prompt_tokens=len(p)) for p in prompts]
        labelled = [i for i, r in enumerate(batch) if r.option_labels]
        if labelled:
            scores = self._score_labels(
                [prompts[i] for i in labelled], [batch[i] for i in labelled]
            )
            for i, score in zip(labelled, scores, strict=True):
                results[i].option_logprobs = score
        free = []
        for i, request in enumerate(batch):
            if request.choices:
                by_choice = self._score_choices(prompts[i], request.choices)
                results[i].text = max(by_choice, key=by_choice.__getitem__)
                results[i].extra["choice_logprobs"] = by_choice
            elif request.option_labels:
                best = results[i].option_logprobs or {}
                results[i].text = max(best, key=best.__getitem__)  # MC by logits, no generation
            else:
                free.append(i)
        # requests that generate share a batch only with equal decoding settings
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i in free:
            r = batch[i]
            groups.setdefault((r.max_tokens, r.temperature, r.top_p, r.seed), []).append(i)
        for members in groups.values():
            texts = self._generate([prompts[i] for i in members], batch[members[0]])
            for i, (text, n_tokens) in zip(members, texts, strict=True):
                results[i].text, results[i].completion_tokens = text, n_tokens
        elapsed = time.perf_counter() - started
        for result in results:
            result.latency_s = elapsed / len(batch)  # amortised over the batch
        return results


class TransformersFactory(BackendFactory):
    name = "transformers"
    description = (
        "a causal LM through transformers (local folder or hub id, GGUF via gguf_file=); "
        "multiple choice by label logits without generation"
    )
    default_model = None
    OPTIONS = ("gguf_file", "dtype", "batch_size")

    def create(self, model: str | None, options: Mapping[str, str]) -> Backend:
        opts = BackendOptions(self.name, options, self.OPTIONS)
        if not model:
            raise GcdbenchError(
                "the transformers backend needs a model: pass --llm transformers:PATH_OR_HUB_ID."
            )
        return TransformersBackend(
            model,
            gguf_file=opts.text("gguf_file"),
            dtype=opts.choice("dtype", "auto", DTYPES),
            batch_size=opts.integer("batch_size", 8, minimum=1),
        )
