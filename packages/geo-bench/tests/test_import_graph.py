"""The import graph of geo_bench, read from the source with ``ast`` (nothing is imported).

(a) No cycle among geo_bench's modules: a module-level import of ``a.b.c`` also imports the
    packages ``a`` and ``a.b`` (their ``__init__`` runs), so those count as edges too; imports under
    ``if TYPE_CHECKING:`` do not run and do not count.
(b) No function-level import of a geo_bench module: imports go at the top of modules; only optional
    third-party dependencies (rasterio, pyproj, faiss, ...) and heavy ones kept lazy for start-up
    time (matplotlib) stay inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "geo_bench"

# Files other engineers are restructuring right now; drop each entry once its split has landed.
FUNCTION_IMPORT_ALLOWED = {
    "geo_bench/cli/*",
    "geo_bench/leaderboard/runner.py",
    "geo_bench/leaderboard/evaluation.py",
    "geo_bench/metrics/recall.py",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: dict[str, Path]) -> list[str]:
    """The geo_bench modules an import statement names (``from pkg import sub`` names ``pkg.sub``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
    if node.level:
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        name = ".".join(base + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    if name.split(".")[0] != PACKAGE:
        return []
    return [f"{name}.{a.name}" if f"{name}.{a.name}" in modules else name for a in node.names]


def _imports(modules: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """Module-level edges (with the packages each import runs) and the function-level imports."""
    edges: dict[str, set[str]] = {}
    local: list[tuple[str, int, str]] = []
    for module, path in modules.items():
        found: set[str] = set()

        def visit(
            node: ast.AST, in_function: bool, module: str = module, path: Path = path, found: set[str] = found
        ) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    visit(child, True)
                elif isinstance(child, ast.If) and _is_type_checking(child):
                    continue
                elif isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _targets(child, module, path, modules):
                        if in_function:
                            local.append((module, child.lineno, target))
                        else:
                            found.add(target)
                else:
                    visit(child, in_function)

        visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), False)
        closure = set()
        for target in found:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                # a module's own enclosing packages are already being imported when it runs
                if name in modules and name != module and not module.startswith(name + "."):
                    closure.add(name)
        edges[module] = closure
    return edges, local


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
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
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def _allowed(path: Path) -> bool:
    rel = path.relative_to(SRC).as_posix()
    return any(rel == entry or (entry.endswith("/*") and rel.startswith(entry[:-1])) for entry in FUNCTION_IMPORT_ALLOWED)


class TestImportGraph:
    def test_finds_the_modules(self):
        modules = _modules()
        assert {"geo_bench", "geo_bench.datasets.base", "geo_bench.datasets.cache"} <= set(modules)
        edges, _ = _imports(modules)
        # the dataset base class uses the cache; the cache only knows a Protocol of the dataset
        assert "geo_bench.datasets.cache" in edges["geo_bench.datasets.base"]
        assert not any(e.startswith("geo_bench.datasets.base") for e in edges["geo_bench.datasets.cache"])

    def test_no_cycle(self):
        edges, _ = _imports(_modules())
        cycles = _cycles(edges)
        assert not cycles, "import cycles among geo_bench modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)

    def test_no_function_level_import_of_geo_bench(self):
        modules = _modules()
        _, local = _imports(modules)
        bad = [f"{modules[m].relative_to(SRC)}:{line}: {target}" for m, line, target in local if not _allowed(modules[m])]
        assert not bad, "import geo_bench modules at the top of the module:\n" + "\n".join(bad)

    def test_allow_list_is_current(self):
        # every allow-listed path still exists (remove entries as the other splits land)
        for entry in FUNCTION_IMPORT_ALLOWED:
            target = SRC / entry.removesuffix("/*")
            assert target.exists(), f"{entry} no longer exists: drop it from FUNCTION_IMPORT_ALLOWED"


class TestCycleFinder:
    @pytest.mark.parametrize(
        ("edges", "expected"),
        [
            ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
            ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
            ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ],
    )
    def test_cycles(self, edges, expected):
        assert _cycles(edges) == expected
