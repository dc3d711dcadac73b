"""Query kinds, looked up in the registry: every kind is a plugin
(:class:`gcdbench.api.query_kind.QueryKind`, hook ``register_query_kinds``)."""

from __future__ import annotations

from gcdbench import registry
from gcdbench.api.feedback import Query
from gcdbench.api.query_kind import QueryKind

__all__ = ["get_kind", "validate"]


def get_kind(name: str) -> QueryKind:
    """The registered kind; an unknown name fails with the known ones listed."""
    kind: QueryKind = registry.get("query-kind", name)
    return kind


def validate(query: Query) -> QueryKind:
    """The query's kind, after checking its payload and meta; one clear error otherwise."""
    kind = get_kind(query.kind)
    kind.validate(query)
    return kind
