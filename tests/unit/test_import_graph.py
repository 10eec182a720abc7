"""No import cycle among the project's own modules under include/ and plugins/.

Every ``import`` counts, at module level or inside a function: an import put inside a function to
dodge a cycle still ties the two modules together. Only edges between project modules are kept
(the top-level packages and modules found under include/ and plugins/). Importing ``a.b.c`` also
runs ``a/__init__`` and ``a/b/__init__``; those implicit parent edges are left out (a package
``__init__`` that registers its submodules is not a cycle), an explicit ``from a.b import name``
of a non-module name is an edge to the package ``a.b``."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = (ROOT / "include", ROOT / "plugins")


def module_files(source_dirs) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the source dirs."""
    modules: dict[str, Path] = {}
    for base in source_dirs:
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            if parts:
                modules[".".join(parts)] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """Project modules one import statement loads (the most specific module each name resolves to)."""
    def resolve(name: str) -> str | None:
        # the longest prefix of ``name`` that is a project module
        parts = name.split(".")
        for i in range(len(parts), 0, -1):
            candidate = ".".join(parts[:i])
            if candidate in modules:
                return candidate
        return None

    found: set[str] = set()
    if isinstance(node, ast.Import):
        for alias in node.names:
            if (target := resolve(alias.name)) is not None:
                found.add(target)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        for alias in node.names:
            full = f"{base}.{alias.name}" if base else alias.name
            target = full if full in modules else resolve(base)
            if target is not None:
                found.add(target)
    return found


def import_graph(source_dirs=SOURCE_DIRS) -> dict[str, set[str]]:
    modules = module_files(source_dirs)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(tree):  # every level: module, class, function bodies
            edges |= _imported(node, name, is_package, modules)
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One concrete cycle per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    found = []
    for component in components:
        start = min(component)
        # breadth-first from start back to start inside the component: a shortest cycle through it
        paths = {start: [start]}
        queue = [start]
        cycle = None
        while queue and cycle is None:
            v = queue.pop(0)
            for w in sorted(graph[v] & component):
                if w == start:
                    cycle = paths[v] + [start]
                    break
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    queue.append(w)
        found.append(cycle)
    return sorted(found)


def test_no_import_cycle_in_include_and_plugins():
    graph = import_graph()
    assert "bulkchange.notify" in graph and "bulkchange_plugins.hooks" in graph  # the walk saw both trees
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_an_import_inside_a_function_that_closes_a_cycle_is_found(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("import os\n\ndef f():\n    from ..a import helper\n    return helper\n")
    (pkg / "d.py").write_text("import pkg.a\n")  # into the cycle, not part of it
    assert cycles(import_graph([tmp_path])) == [["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]]
