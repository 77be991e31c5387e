"""The package's layering: every module imports, and the imports go one way.

The command line (``dcsm.cli``) sits on top; under it the data-set scale tools (``dcsm.batch``,
``dcsm.training``, ``dcsm.evaluation``, ``dcsm.bench``); under those the library (the API, the
methods, segmentation, the method's stages in ``dcsm.pipeline``, input and output). The imports
are read from the source with ``ast`` (those inside functions included, ``if TYPE_CHECKING:``
blocks left out, as they never run), so a cycle that only closes at run time is found too.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections import defaultdict
from pathlib import Path

import pytest

import dcsm

SRC = Path(dcsm.__file__).resolve().parent
TOOLS = {"batch", "training", "evaluation", "bench", "integrations"}
# No exception: the benchmarks' peers are registered methods (dcsm.methods), so the Quantus
# integration no longer imports dcsm.bench.
ALLOWED_UNIT_CYCLE_EDGES: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = ("dcsm", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST) -> list[str]:
    """Every dcsm module a tree imports, at any depth, outside TYPE_CHECKING blocks."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "dcsm uses absolute imports only"
            for a in node.names:  # `from dcsm import cli` imports the module dcsm.cli
                full = f"{node.module}.{a.name}"
                found.append(full if full in MODULES else str(node.module))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return [name for name in found if name == "dcsm" or name.startswith("dcsm.")]


def _owner(name: str) -> str:
    """The dcsm module a dotted import name refers to (``dcsm.x.Y`` -> ``dcsm.x``)."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


GRAPH: dict[str, set[str]] = {
    mod: {_owner(n) for n in _imported(ast.parse(path.read_text(encoding="utf-8")))} - {mod}
    for mod, path in MODULES.items()
}


def _unit(module: str) -> str:
    """The top-level part of the package a module belongs to: ``dcsm.cli.batch`` -> ``cli``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dcsm"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "dcsm.__main__"))
def test_every_module_imports(module):
    importlib.import_module(module)


def test_the_walk_finds_every_module():
    walked = {m.name for m in pkgutil.walk_packages(dcsm.__path__, "dcsm.")} | {"dcsm"}
    assert walked == set(MODULES)


def test_no_module_import_cycle():
    assert _cycles(GRAPH) == []


def test_no_cycle_between_the_top_level_parts():
    units: dict[str, set[str]] = defaultdict(set)
    for mod, targets in GRAPH.items():
        for target in targets:
            edge = (_unit(mod), _unit(target))
            if edge[0] != edge[1] and edge not in ALLOWED_UNIT_CYCLE_EDGES \
                    and edge[0] != "dcsm" and edge[1] != "dcsm":  # dcsm/__init__ is the facade
                units[edge[0]].add(edge[1])
    assert _cycles(units) == []


def _importers(unit_test, target_units: set[str]) -> list[str]:
    return sorted(f"{mod} -> {t}" for mod, targets in GRAPH.items() if unit_test(_unit(mod))
                  for t in targets if _unit(t) in target_units)


def test_only_the_command_line_imports_the_command_line():
    outside = sorted(f"{mod} -> {t}" for mod, targets in GRAPH.items()
                     if _unit(mod) != "cli" and mod != "dcsm.__main__"
                     for t in targets if _unit(t) == "cli")
    assert outside == []


def test_the_library_does_not_import_the_tools():
    assert _importers(lambda u: u not in TOOLS | {"cli"}, TOOLS) == []


def _imports_of(unit: str) -> set[str]:
    return {_unit(t) for mod, targets in GRAPH.items() if _unit(mod) == unit for t in targets}


def test_the_layers_of_the_library():
    """errors and optional (the optional dependencies) < io < pipeline (the method's stages) <
    methods: each imports only those below."""
    assert _imports_of("optional") <= {"optional", "errors"}
    assert _imports_of("io") <= {"io", "errors", "optional"}
    assert _imports_of("pipeline") <= {"pipeline", "io", "errors", "optional"}
    assert _imports_of("methods") <= {"methods", "pipeline", "io", "errors", "optional"}


def test_the_tools_do_not_import_each_other_in_a_circle():
    tools = {u: {_unit(t) for m, ts in GRAPH.items() if _unit(m) == u for t in ts} & TOOLS - {u}
             for u in TOOLS}
    tools = {u: {t for t in ts if (u, t) not in ALLOWED_UNIT_CYCLE_EDGES}
             for u, ts in tools.items()}
    assert _cycles(tools) == []
    assert tools["evaluation"] == set() and tools["batch"] == set()  # the bottom of the tools


def test_the_console_script_and_python_m_dcsm():
    import tomllib

    project = tomllib.loads((SRC.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["scripts"]["dcsm"] == "dcsm.cli:main"
    from dcsm.cli import main

    assert callable(main)
    assert "from dcsm.cli import main" in (SRC / "__main__.py").read_text(encoding="utf-8")
