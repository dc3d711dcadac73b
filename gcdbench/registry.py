"""The plugin manager and one registry per component kind.

Plugins come from the ``gcdbench`` entry-point group: the built-ins in ``plugins/`` are
registered there exactly like third-party packages. Lookups fail with a "did you mean".
"""

from __future__ import annotations

import importlib.metadata as md
import sys
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pluggy

from gcdbench import hookspecs
from gcdbench.errors import GcdbenchError, UnknownNameError

ENTRY_POINT_GROUP = "gcdbench"

#: component kind -> the hook that fills its registry
KINDS: dict[str, str] = {
    "method": "register_methods",
    "dataset": "register_datasets",
    "encoder": "register_encoders",
    "miner": "register_miners",
    "feedback": "register_feedback_providers",
    "query-kind": "register_query_kinds",
    "loss": "register_loss_hooks",
    "executor": "register_executors",
    "llm": "register_llm_backends",
}


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    error: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Entry:
    obj: Any
    plugin: str


class _State:
    pm: pluggy.PluginManager | None = None
    infos: ClassVar[dict[str, PluginInfo]] = {}
    registries: ClassVar[dict[str, dict[str, _Entry]] | None] = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed plugin loaded."""
    if _State.pm is None:
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        _State.infos = {}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else None
            info = PluginInfo(ep.name, dist, ep.dist.version if ep.dist else None)
            _State.infos[ep.name] = info
            if pm.get_plugin(ep.name) is not None:
                info.error = "another installed plugin already uses this entry-point name"
                continue
            try:
                pm.register(ep.load(), name=ep.name)
            except Exception as exc:  # a broken third-party plugin must not hide the rest
                info.error = f"{type(exc).__name__}: {exc}"
                print(
                    f"gcdbench: plugin {ep.name!r} ({dist}) failed to load ({info.error}); "
                    "fix or uninstall it.",
                    file=sys.stderr,
                )
        _State.pm = pm
    return _State.pm


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object (module or instance) at run time, e.g. from a test."""
    plugin_manager().register(plugin, name=name)
    _State.infos[name] = PluginInfo(name)
    _State.registries = None


def unregister_plugin(name: str) -> None:
    pm = plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    _State.infos.pop(name, None)
    _State.registries = None


def _build() -> dict[str, dict[str, _Entry]]:
    pm = plugin_manager()
    registries: dict[str, dict[str, _Entry]] = {kind: {} for kind in KINDS}
    for info in _State.infos.values():
        info.registered = {}
    for kind, hook_name in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin_name = impl.plugin_name

            def register(obj: Any, _kind: str = kind, _plugin: str = plugin_name) -> None:
                name = getattr(obj, "name", None)
                if not isinstance(name, str) or not name:
                    raise GcdbenchError(
                        f"plugin {_plugin!r} registered a {_kind} without a name; "
                        "give it a `name` attribute."
                    )
                taken = registries[_kind].get(name)
                if taken is not None:
                    raise GcdbenchError(
                        f"{_kind} {name!r} is registered by both {taken.plugin!r} and "
                        f"{_plugin!r}; uninstall one of them or rename the {_kind}."
                    )
                registries[_kind][name] = _Entry(obj, _plugin)
                info = _State.infos.setdefault(_plugin, PluginInfo(_plugin))
                info.registered.setdefault(_kind, []).append(name)

            impl.function(register=register)
    return registries


def _registries() -> dict[str, dict[str, _Entry]]:
    if _State.registries is None:
        _State.registries = _build()
    return _State.registries


def names(kind: str) -> list[str]:
    return sorted(_registries()[kind])


def get(kind: str, name: str) -> Any:
    """The object registered under ``name``; a clear error with suggestions otherwise."""
    entries = _registries()[kind]
    if name not in entries:
        raise UnknownNameError(kind, name, entries)
    return entries[name].obj


def owner(kind: str, name: str) -> PluginInfo:
    """The plugin that registered ``name`` (for provenance)."""
    entry = _registries()[kind][name]
    return _State.infos.get(entry.plugin, PluginInfo(entry.plugin))


def plugins() -> list[PluginInfo]:
    _registries()
    return sorted(_State.infos.values(), key=lambda i: i.name)
