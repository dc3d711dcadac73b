"""The plugin manager and one registry per component kind.

Plugins come from the ``gcdbench`` entry-point group: the built-ins in ``plugins/`` are
registered there exactly like third-party packages. Lookups fail with a "did you mean".

Registries are built one kind at a time, on first use: answering ``gcdbench data list`` asks
only the dataset hooks. Every plugin module is still imported up front (which plugin
implements which hook is only known once it is), so plugin modules keep their heavy imports
(torch, scikit-learn, ...) inside the functions that need them.
"""

from __future__ import annotations

import difflib
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
    "refiner": "register_refiners",
    "k-estimator": "register_k_estimators",
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
    #: kind -> name -> entry, for the kinds built so far
    registries: ClassVar[dict[str, dict[str, _Entry]]] = {}


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, with every installed plugin loaded."""
    if _State.pm is None:
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        _State.infos = {}
        _State.registries = {}
        # Each `dist.name` / `dist.version` parses the distribution's METADATA again (the
        # whole README for gcdbench's): once per distribution, not twice per plugin.
        distributions: dict[int, tuple[str | None, str | None]] = {}
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if id(ep.dist) not in distributions:
                meta = ep.dist.metadata if ep.dist else None
                distributions[id(ep.dist)] = (
                    (meta["Name"], meta["Version"]) if meta is not None else (None, None)
                )
            dist, version = distributions[id(ep.dist)]
            info = PluginInfo(ep.name, dist, version)
            _State.infos[ep.name] = info
            if pm.get_plugin(ep.name) is not None:
                info.error = "another installed plugin already uses this entry-point name"
                continue
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
                info.error = _unknown_hooks(pm, plugin)
            except Exception as exc:  # a broken third-party plugin must not hide the rest
                info.error = f"{type(exc).__name__}: {exc}"
            if info.error is not None:
                print(
                    f"gcdbench: plugin {ep.name!r} ({dist}) failed to load ({info.error}); "
                    "fix or uninstall it.",
                    file=sys.stderr,
                )
        _State.pm = pm
    return _State.pm


def _unknown_hooks(pm: pluggy.PluginManager, plugin: Any) -> str | None:
    """pluggy's ``check_pending`` for one plugin: a hook implementation whose name no hookspec
    declares (``register_method`` for ``register_methods``) would never be called, and the
    plugin would silently register nothing. Such a plugin is unregistered; the returned
    problem names each unknown hook and the likely right one (None when all are known)."""
    unknown = sorted(
        caller.name
        for caller in pm.get_hookcallers(plugin) or []
        if not caller.has_spec()
        and any(impl.plugin is plugin and not impl.optionalhook for impl in caller.get_hookimpls())
    )
    if not unknown:
        return None
    pm.unregister(plugin)
    problems = []
    for hook in unknown:
        close = difflib.get_close_matches(hook, KINDS.values(), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"the hooks: {', '.join(KINDS.values())}"
        problems.append(f"unknown hook {hook!r}, {hint}")
    return "; ".join(problems)


def register_plugin(plugin: Any, name: str) -> None:
    """Register a plugin object (module or instance) at run time, e.g. from a test.

    A hook implementation no hookspec declares (a misspelled hook name) raises
    :class:`GcdbenchError` naming it, and leaves the plugin unregistered."""
    pm = plugin_manager()
    pm.register(plugin, name=name)
    problem = _unknown_hooks(pm, plugin)
    if problem is not None:
        raise GcdbenchError(f"plugin {name!r}: {problem}")
    _State.infos[name] = PluginInfo(name)
    _State.registries = {}


def unregister_plugin(name: str) -> None:
    pm = plugin_manager()
    plugin = pm.get_plugin(name)
    if plugin is not None:
        pm.unregister(plugin)
    _State.infos.pop(name, None)
    _State.registries = {}


def _build(kind: str) -> dict[str, _Entry]:
    """Ask every plugin's hook for ``kind`` what it registers."""
    pm = plugin_manager()
    registry: dict[str, _Entry] = {}
    for info in _State.infos.values():
        info.registered.pop(kind, None)
    for impl in getattr(pm.hook, KINDS[kind]).get_hookimpls():
        plugin_name = impl.plugin_name

        def register(obj: Any, _plugin: str = plugin_name) -> None:
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not name:
                raise GcdbenchError(
                    f"plugin {_plugin!r} registered a {kind} without a name; "
                    "give it a `name` attribute."
                )
            taken = registry.get(name)
            if taken is not None:
                raise GcdbenchError(
                    f"{kind} {name!r} is registered by both {taken.plugin!r} and "
                    f"{_plugin!r}; uninstall one of them or rename the {kind}."
                )
            registry[name] = _Entry(obj, _plugin)
            info = _State.infos.setdefault(_plugin, PluginInfo(_plugin))
            info.registered.setdefault(kind, []).append(name)

        impl.function(register=register)
    return registry


def _registry(kind: str) -> dict[str, _Entry]:
    plugin_manager()  # first: loading the plugins starts with empty registries
    built = _State.registries.get(kind)
    if built is None:
        built = _State.registries[kind] = _build(kind)
    return built


def names(kind: str) -> list[str]:
    return sorted(_registry(kind))


def get(kind: str, name: str) -> Any:
    """The object registered under ``name``; a clear error with suggestions otherwise."""
    entries = _registry(kind)
    if name not in entries:
        raise UnknownNameError(kind, name, entries)
    return entries[name].obj


def owner(kind: str, name: str) -> PluginInfo:
    """The plugin that registered ``name`` (for provenance)."""
    entry = _registry(kind)[name]
    return _State.infos.get(entry.plugin, PluginInfo(entry.plugin))


def plugins() -> list[PluginInfo]:
    """Every plugin with what it registers, every kind built."""
    for kind in KINDS:
        _registry(kind)
    infos = sorted(_State.infos.values(), key=lambda i: i.name)
    for info in infos:  # kinds in KINDS order, whichever was built first
        info.registered = {k: info.registered[k] for k in KINDS if k in info.registered}
    return infos
