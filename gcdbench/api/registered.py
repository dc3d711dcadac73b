"""Looking up what plugins registered, for a method whose parameters name a component (a
miner, a loss): the same lookup ``gcdbench`` itself uses, with the same clear errors."""

from __future__ import annotations

from typing import Any


def registered(kind: str, name: str) -> Any:
    """The ``kind`` component registered as ``name`` (kinds: ``gcdbench plugins``); an unknown
    name fails with the registered ones and a "did you mean"."""
    # The registry loads every installed plugin: import it only when a lookup happens.
    from gcdbench import registry

    return registry.get(kind, name)
