"""``--llm NAME[:MODEL]`` to a loaded backend, through the plugin registry."""

from __future__ import annotations

from collections.abc import Mapping

from gcdbench import registry
from gcdbench.errors import GcdbenchError
from gcdbench.llm.api import Backend, BackendFactory


def parse_backend_spec(text: str) -> tuple[str, str | None]:
    """``"llamacpp:smollm2-135m"`` -> ``("llamacpp", "smollm2-135m")``; only the first colon
    splits, so paths and hub ids keep theirs."""
    name, sep, model = text.strip().partition(":")
    if not name:
        raise GcdbenchError(
            f"--llm {text!r} names no backend; pass NAME[:MODEL], e.g. llamacpp or "
            "openai:gpt-4o-mini."
        )
    if sep and not model:
        raise GcdbenchError(
            f"--llm {text!r} ends with ':' but names no model; drop the colon for the "
            "backend's default model or pass NAME:MODEL."
        )
    return name, model or None


def backend_factory(name: str) -> BackendFactory:
    """The registered factory (an unknown name fails with the registry's did-you-mean)."""
    return registry.get("llm", name)


def open_backend(text: str, options: Mapping[str, str] | None = None) -> Backend:
    name, model = parse_backend_spec(text)
    return backend_factory(name).create(model, dict(options or {}))
