from __future__ import annotations

import json

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


# -- misspelled hooks (pluggy's check_pending) -------------------------------------------------


class _MisspelledPlugin:
    @hookimpl
    def register_method(self, register):  # the hook is register_methods
        register(_Toy)


def test_misspelled_hook_is_refused_naming_the_right_one():
    with pytest.raises(GcdbenchError) as info:
        registry.register_plugin(_MisspelledPlugin(), "misspelled")
    message = str(info.value)
    assert "'misspelled'" in message
    assert "unknown hook 'register_method', did you mean register_methods?" in message
    assert "\n" not in message
    # Nothing of it stays registered, and the rest still works.
    assert registry.plugin_manager().get_plugin("misspelled") is None
    assert "misspelled" not in {p.name for p in registry.plugins()}
    assert "toy-method" not in registry.names("method")
    assert "kmeans" in registry.names("method")


def test_unknown_hook_without_a_close_name_lists_the_hooks():
    class Odd:
        @hookimpl
        def frobnicate(self, register):
            pass

    with pytest.raises(GcdbenchError, match="unknown hook 'frobnicate', the hooks: register_"):
        registry.register_plugin(Odd(), "odd")
    assert registry.plugin_manager().get_plugin("odd") is None


TYPO_PLUGIN = """
from gcdbench import hookimpl
from gcdbench.api import Method


class Typo(Method):
    name = "typo-method"

    def run(self, task, ctx):
        raise NotImplementedError


@hookimpl
def register_method(register):
    register(Typo)
"""


@pytest.fixture
def typo_installed(tmp_path, monkeypatch):
    """A fresh plugin manager that also finds an installed plugin whose module misspells
    ``register_methods``; the session's manager comes back afterwards."""
    (tmp_path / "gcdbench_typo_plugin.py").write_text(TYPO_PLUGIN, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = registry.md.entry_points

    def entry_points(**params):
        found = real(**params)
        if params.get("group") != registry.ENTRY_POINT_GROUP:
            return found
        typo = registry.md.EntryPoint("typo", "gcdbench_typo_plugin", registry.ENTRY_POINT_GROUP)
        return registry.md.EntryPoints([*found, typo])

    monkeypatch.setattr(registry.md, "entry_points", entry_points)
    monkeypatch.setattr(registry._State, "pm", None)
    monkeypatch.setattr(registry._State, "infos", {})
    monkeypatch.setattr(registry._State, "registries", {})


def test_installed_plugin_with_a_misspelled_hook_is_marked_broken(typo_installed, capsys):
    infos = {p.name: p for p in registry.plugins()}
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert "plugin 'typo'" in lines[0] and "failed to load" in lines[0]
    assert "unknown hook 'register_method', did you mean register_methods?" in lines[0]
    assert "did you mean register_methods?" in (infos["typo"].error or "")
    assert infos["typo"].registered == {}
    # The other plugins load and register as ever.
    assert infos["builtin-kmeans"].error is None
    assert "kmeans" in registry.names("method")
    assert "typo-method" not in registry.names("method")


def test_gcdbench_plugins_shows_the_misspelled_hook(typo_installed):
    from click.testing import CliRunner

    from gcdbench.cli import cli

    result = CliRunner().invoke(cli, ["plugins", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1 and "did you mean register_methods?" in result.stderr
    by_name = {p["name"]: p for p in json.loads(result.stdout)}
    assert "did you mean register_methods?" in by_name["typo"]["error"]
    assert by_name["builtin-kmeans"]["error"] is None
    assert by_name["builtin-kmeans"]["registered"] == {"method": ["kmeans"]}


def test_registries_are_built_one_kind_at_a_time(monkeypatch):
    monkeypatch.setattr(registry._State, "registries", {})
    assert "banking" in registry.names("dataset")
    assert set(registry._State.registries) == {"dataset"}
    # `gcdbench plugins` still sees every kind, in the order of KINDS.
    kmeans = {p.name: p for p in registry.plugins()}["builtin-kmeans"]
    assert set(registry._State.registries) == set(registry.KINDS)
    assert kmeans.registered == {"method": ["kmeans"]}
