"""The layering of gcdbench, checked on the source: every import statement of every module
under ``gcdbench/`` and ``plugins/`` counts — module level, inside functions and under
``TYPE_CHECKING`` alike, since each is a dependency someone has to reason about.

* no import cycles among those modules;
* the engine (api, training, feedback, encoders, data, llm) never imports the runner or the
  command line: they sit on top of it;
* a plugin imports from gcdbench only ``gcdbench.api`` (and its submodules) and
  ``gcdbench.hookimpl``: the public surface, so the engine can change under it.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: source root -> what a module's dotted name is relative to
ROOTS = (REPO, REPO / "plugins")
PACKAGES = (REPO / "gcdbench", REPO / "plugins")

ENGINE = (
    "gcdbench.api",
    "gcdbench.training",
    "gcdbench.feedback",
    "gcdbench.encoders",
    "gcdbench.data",
    "gcdbench.llm",
)
UPPER_LAYERS = ("gcdbench.runner", "gcdbench.cli")
PLUGIN_SURFACE = ("gcdbench.api", "gcdbench.hookimpl")
#: The built-in plugins that register gcdbench's own engine implementations (the way
#: simonw/llm ships its default models as plugins): each may import, besides the public API,
#: the one engine package whose implementations it registers — nothing else.
ENGINE_REGISTRARS = {
    "gcdbench_builtins.encoders": ("gcdbench.encoders",),
    "gcdbench_builtins.executors": ("gcdbench.runner.executors", "gcdbench.runner.ray_executor"),
    "gcdbench_builtins.feedback": ("gcdbench.feedback",),
    "gcdbench_builtins.llm_backends": ("gcdbench.llm",),
}


def _module_name(path: Path) -> str:
    root = REPO / "plugins" if path.is_relative_to(REPO / "plugins") else REPO
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _sources() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _imported_names(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """(dotted name, line) of every import in the file; ``from a import b`` yields ``a.b``
    (resolved to a module or to ``a`` below), relative imports made absolute."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield f"{base}.{alias.name}" if alias.name != "*" else base, node.lineno


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is one of ``modules`` (``gcdbench.api.Method`` ->
    ``gcdbench.api``), or None for a third-party or standard-library import."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


@cache
def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module: first line importing it}."""
    modules = _sources()
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges: dict[str, int] = {}
        for name, line in _imported_names(module, path):
            target = _resolve(name, modules)
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def _raw_imports(module: str) -> list[tuple[str, int]]:
    """Every gcdbench name ``module`` imports, as written (``gcdbench.hookimpl`` is a name
    in ``gcdbench``, not a module, so the resolved graph cannot tell it apart)."""
    path = _sources()[module]
    return [
        (name, line)
        for name, line in _imported_names(module, path)
        if name == "gcdbench" or name.startswith("gcdbench.")
    ]


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return [_cycle_in(set(c), graph) for c in components]


def _cycle_in(component: set[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child not in component:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    return sorted(component)  # unreachable for a strongly connected component


def _show_cycle(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    hops = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in itertools.pairwise(cycle)]
    return "\n    ".join(hops)


def test_the_parser_sees_every_kind_of_import(tmp_path: Path) -> None:
    # Guards the checks below: a function-level, a relative and a TYPE_CHECKING import are
    # edges like any other.
    path = tmp_path / "x.py"
    path.write_text(
        "import typing\n"
        "if typing.TYPE_CHECKING:\n"
        "    from gcdbench.api import task\n"
        "def f():\n"
        "    from . import method\n"
        "    import gcdbench.runner.context\n",
        encoding="utf-8",
    )
    names = {name for name, _ in _imported_names("gcdbench.api.x", path)}
    assert {"gcdbench.api.task", "gcdbench.api.method", "gcdbench.runner.context"} <= names
    graph = _graph()
    assert "gcdbench.hookspecs" in graph["gcdbench"]
    assert "gcdbench_builtins.kmeans" in graph


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    assert not cycles, "import cycles among gcdbench modules:\n  " + "\n  ".join(
        _show_cycle(c, graph) for c in cycles
    )


def test_the_engine_never_imports_the_runner_or_the_cli() -> None:
    graph = _graph()
    wrong = [
        f"{module} (line {line}) imports {target}"
        for module, edges in sorted(graph.items())
        if _within(module, ENGINE)
        for target, line in sorted(edges.items())
        if _within(target, UPPER_LAYERS)
    ]
    assert not wrong, (
        "the engine must not import the runner or the CLI (type against "
        "gcdbench.api.RunContext instead):\n  " + "\n  ".join(wrong)
    )


PLUGINS = sorted(m for m in _sources() if _within(m, ("gcdbench_builtins",)))


@pytest.mark.parametrize("plugin", PLUGINS)
def test_plugins_import_only_the_public_api(plugin: str) -> None:
    allowed = PLUGIN_SURFACE + ENGINE_REGISTRARS.get(plugin, ())
    wrong = [
        f"line {line}: {name}" for name, line in _raw_imports(plugin) if not _within(name, allowed)
    ]
    assert not wrong, (
        f"plugin {plugin} imports gcdbench internals; import only gcdbench.api (and its "
        "submodules) and gcdbench.hookimpl:\n  " + "\n  ".join(wrong)
    )


#: plugins whose import (what ``gcdbench plugins`` and ``gcdbench list`` do) loads no backend
LIGHT_PLUGINS = (
    "gcdbench_builtins.kmeans",
    "gcdbench_builtins.mtp",
    "gcdbench_builtins.no_llm",
    "gcdbench_builtins.losses",
)
HEAVY = ("torch", "sklearn", "scipy", "transformers")


def test_the_public_api_and_the_light_plugins_import_without_backends() -> None:
    modules = ("gcdbench.api", "gcdbench.api.training", "gcdbench.api.toolkit", *LIGHT_PLUGINS)
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "", f"importing {modules} loaded {done.stdout.strip()}"


def test_the_training_facade_binds_the_engine_on_first_use() -> None:
    from gcdbench.api import training

    assert training.RoundParams().losses == "ncl,ce"
    missing = [name for name in training.__all__ if not hasattr(training, name)]
    assert not missing, f"gcdbench.api.training.__all__ names what it cannot give: {missing}"
    from gcdbench.training.pipeline import train_and_cluster

    assert training.train_and_cluster is train_and_cluster
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        training.nothing_here  # noqa: B018
