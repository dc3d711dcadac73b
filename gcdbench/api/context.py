"""The run context as plugins see it: a protocol the runner implements once
(:class:`gcdbench.runner.context.RunContext`).

Methods, the training engine and the feedback layer type against this protocol, so none of
them imports the runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from gcdbench.api.encoder import Encoder
    from gcdbench.api.feedback import FeedbackProvider
    from gcdbench.api.progress import Reporter
    from gcdbench.api.spec import RunSpec
    from gcdbench.api.task import TaskPart


@runtime_checkable
class RunContext(Protocol):
    """What a method gets besides its task.

    Randomness comes only from :meth:`rng`: each stage draws from its own generator, derived
    from the run seed and the stage's name, so adding a stage never changes another's draws.
    """

    spec: RunSpec
    reporter: Reporter

    @property
    def seed(self) -> int: ...

    def rng(self, stage: str) -> np.random.Generator:
        """The generator of ``stage`` (same seed and name, same stream)."""
        ...

    @property
    def encoder(self) -> Encoder:
        """The run's ``--encoder`` as a frozen encoder, loaded on first use."""
        ...

    def load_backbone(self, *, pooling: str, with_mlm_head: bool, max_length: int) -> Any:
        """The run's ``--encoder`` as a trainable backbone, for methods that fine-tune it: a
        fresh :class:`gcdbench.training.backbone.TextBackbone` (typed ``Any`` here so the
        API never imports torch) of the model that value names, whether a registered name
        (``all-MiniLM-L6-v2``, ``sentence-transformers:REF``), a local folder or a hub id.
        An encoder without weights (``bag-of-words``) is one clear error. The run record
        names the encoder and its weight fingerprint either way."""
        ...

    def embed(self, part: TaskPart, encoder: Encoder | None = None) -> np.ndarray:
        """Features of ``part``'s rows, computed once per (encoder, data file)."""
        ...

    @property
    def feedback(self) -> FeedbackProvider:
        """The run's feedback provider (methods that list "feedback" in ``uses``)."""
        ...

    @property
    def feedback_loaded(self) -> bool:
        """Whether :attr:`feedback` was built (reading :attr:`feedback` builds it)."""
        ...

    @property
    def checkpoint_dir(self) -> Path | None:
        """Where this run keeps its training checkpoints (a folder named by the run id, kept
        across a kill and removed once the record is written), or None when it keeps none
        (docs/resume.md)."""
        ...

    def note_resumed(self, where: Mapping[str, Any]) -> None:
        """Record that the run continued from a checkpoint (the record's
        ``provenance.resumed``); the run's identity and results stay what they are."""
        ...

    def leak_novel_examples(self, per_class: int, why: str) -> list[tuple[str, str]]:
        """Gold-labelled dev examples of the novel classes; the run is marked as leaky."""
        ...

    def leak_gold_labels(self, part: str, why: str) -> np.ndarray:
        """Gold class ids (global, arbitrary but fixed order) of every text of ``part``
        (``"train"``: the training pool in pool order, ``"test"``). Only for ``--variant
        official`` reproductions of released code that reads them: the run record says so
        (``leaks_labels``), and leaderboards mark the run."""
        ...

    def timed(self, name: str) -> AbstractContextManager[None]:
        """Adds the time spent inside to the record's ``timings[name]``."""
        ...


__all__ = ["RunContext"]
