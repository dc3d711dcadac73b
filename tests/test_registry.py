from __future__ import annotations

import pytest

from gcdbench import hookimpl, registry
from gcdbench.api import Component, Method, MethodOutput
from gcdbench.errors import GcdbenchError, UnknownNameError


def test_builtins_load_through_the_entry_point_group():
    plugins = {p.name: p for p in registry.plugins()}
    for name in ("builtin-datasets", "builtin-encoders", "builtin-executors", "builtin-kmeans"):
        assert plugins[name].distribution == "gcdbench", name
        assert plugins[name].error is None
    assert plugins["builtin-kmeans"].registered == {"method": ["kmeans"]}
    assert "banking" in registry.names("dataset")
    assert {"local", "processes"} <= set(registry.names("executor"))


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UnknownNameError) as info:
        registry.get("method", "kmean")
    message = str(info.value)
    assert "unknown method 'kmean'" in message
    assert "Did you mean 'kmeans'" in message
    assert "\n" not in message


class _Toy(Method):
    name = "toy-method"
    components = (
        Component("a", "part a"),
        Component("b", "part b"),
        Component("ab", "both", includes=("a", "b")),
    )

    def run(self, task, ctx):
        return MethodOutput(test_assignments=[0] * len(task.test))


class _ToyPlugin:
    @hookimpl
    def register_methods(self, register):
        register(_Toy)


def test_runtime_plugin_and_ablation_expansion():
    registry.register_plugin(_ToyPlugin(), "toy")
    try:
        assert registry.get("method", "toy-method") is _Toy
        assert registry.owner("method", "toy-method").name == "toy"
        assert _Toy.expand_ablations(["ab"]) == {"ab", "a", "b"}
        with pytest.raises(UnknownNameError, match="Did you mean 'a'"):
            _Toy.expand_ablations(["aa"])
    finally:
        registry.unregister_plugin("toy")
    with pytest.raises(UnknownNameError):
        registry.get("method", "toy-method")


def test_duplicate_names_are_refused():
    class Clash:
        @hookimpl
        def register_methods(self, register):
            class Dup(_Toy):
                name = "kmeans"

            register(Dup)

    registry.register_plugin(Clash(), "clash")
    try:
        with pytest.raises(GcdbenchError, match="registered by both"):
            registry.names("method")
    finally:
        registry.unregister_plugin("clash")
    assert "kmeans" in registry.names("method")


def test_method_without_components_refuses_ablation():
    kmeans = registry.get("method", "kmeans")
    with pytest.raises(GcdbenchError, match="declares no components"):
        kmeans.expand_ablations(["anything"])
