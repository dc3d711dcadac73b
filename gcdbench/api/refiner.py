"""Refiners: a second stage that improves a pseudo-labelling method's output.

``gcdbench run llm-cluster --refine silr`` runs the method, then the refiner on its output,
and scores the refined assignment; the record keeps the unrefined metrics beside it
(``diagnostics.refine.before``). A refiner applies to methods tagged ``pseudo_labels``
(their clusters are labels assigned text by text, and they return the labels of the labeled
texts in ``MethodOutput.labeled_assignments``). Its name, version and parameters join the
run id (``RunSpec.refine``), so a refined run is never mistaken for the plain one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from gcdbench.api.method import Method, MethodOutput, NoParams

if TYPE_CHECKING:
    from gcdbench.api.context import RunContext
    from gcdbench.api.task import GCDTask


class Refiner(ABC):
    """Base class of refiner plugins (hook ``register_refiners``).

    A subclass sets ``name``, ``description``, a ``Params`` dataclass built with
    :func:`gcdbench.api.param` (``--refine-param key=value`` sets them), the component kinds
    it ``uses`` (``encoder`` when it embeds texts), and implements :meth:`refine`. Bump
    ``version`` whenever a change alters results.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    uses: ClassVar[tuple[str, ...]] = ("encoder",)
    Params: ClassVar[type] = NoParams
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # How parameter errors name this refiner and the flag that sets its parameters.
    param_owner: ClassVar[str] = "refiner"
    param_flag: ClassVar[str] = "--refine-param"

    def __init__(self, params: Any) -> None:
        self.params = params

    @abstractmethod
    def refine(self, task: GCDTask, ctx: RunContext, output: MethodOutput) -> MethodOutput:
        """The refined output: new ``test_assignments`` (and whatever else changes); the
        method's ``feedback_log`` should be passed on so its questions are still scored."""

    @classmethod
    def resolve_params(cls, overrides: Mapping[str, Any]) -> Any:
        """Defaults, then ``--refine-param`` overrides, each checked against the schema."""
        # The same rules and messages as a method's parameters.
        return Method.resolve_params.__func__(cls, None, overrides)  # type: ignore[attr-defined]

    @classmethod  # noqa: B027 - optional
    def cross_check(cls, params: Any, num_classes: int | None = None) -> None:
        """Rules that span several parameters; raise :class:`GcdbenchError`."""


__all__ = ["Refiner"]
