"""The import graph of geo_bench, read from the source with ``ast`` (nothing is imported).

(a) No cycle among geo_bench's modules: a module-level import of ``a.b.c`` also imports the
    packages ``a`` and ``a.b`` (their ``__init__`` runs), so those count as edges too; imports under
    ``if TYPE_CHECKING:`` do not run and do not count.
(b) No function-level import of a geo_bench module, and none of anything else but the modules of
    :data:`LAZY_IMPORTS_ALLOWED`: imports go at the top of modules; only optional third-party
    dependencies (rasterio, pyproj, faiss) and matplotlib (heavy; pyplot must load after the Agg
    backend is chosen) stay inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "geo_bench"

# Modules that may be imported inside a function (and their submodules), each with its reason.
LAZY_IMPORTS_ALLOWED = {
    # optional dependency (the `faiss` extra); metrics.faiss_backend raises MissingDependencyError
    "faiss",
    # optional dependencies (the `map` extra): localize.maps and world.layouts read/write map rasters
    "rasterio",
    "pyproj",
    # a dependency, but heavy (seconds on a loaded machine) and only needed to plot; pyplot must load
    # after the caller (leaderboard.plots, localize.report, world.preview) chose the Agg backend
    "matplotlib",
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


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: dict[str, Path]
) -> list[str]:
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


def _function_level_imports(root: Path) -> list[tuple[str, int, str]]:
    """``(file, line, module)`` of every import statement inside a function body in the ``*.py`` files
    under ``root``; relative imports keep their leading dots (``from ..metrics import x`` -> ``..metrics``)."""
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, name: str, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import):
                found.extend((name, child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((name, child.lineno, "." * child.level + (child.module or "")))
            function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, name, in_function or function)

    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        visit(tree, path.relative_to(root.parent).as_posix(), False)
    return found


def _lazy_allowed(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in LAZY_IMPORTS_ALLOWED)


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
        assert not cycles, "import cycles among geo_bench modules:\n" + "\n".join(
            " <-> ".join(c) for c in cycles
        )

    def test_no_function_level_import_of_geo_bench(self):
        modules = _modules()
        _, local = _imports(modules)
        bad = [f"{modules[m].relative_to(SRC)}:{line}: {target}" for m, line, target in local]
        assert not bad, "import geo_bench modules at the top of the module:\n" + "\n".join(bad)

    def test_imports_at_top_of_modules(self):
        local = _function_level_imports(SRC / PACKAGE)
        bad = [f"{path}:{line}: {module}" for path, line, module in local if not _lazy_allowed(module)]
        assert not bad, "import these at the top of the module (or allow-list an optional dependency):\n" + (
            "\n".join(bad)
        )

    def test_lazy_allow_list_is_current(self):
        modules = [module for _, _, module in _function_level_imports(SRC / PACKAGE)]
        unused = {
            n for n in LAZY_IMPORTS_ALLOWED if not any(m == n or m.startswith(n + ".") for m in modules)
        }
        assert not unused, (
            f"no function-level import of {sorted(unused)} is left: drop it from LAZY_IMPORTS_ALLOWED"
        )

    def test_function_level_import_scan(self, tmp_path):
        package = tmp_path / "pkg"
        package.mkdir()
        (package / "m.py").write_text(
            "import os\n"
            "def f():\n"
            "    import rasterio.vrt, sys\n"
            "    from ..metrics import recall\n"
            "    def g():\n"
            "        from numpy import asarray\n"
            "class C:\n"
            "    import json\n"
            "    def m(self):\n"
            "        import tqdm\n"
        )
        assert _function_level_imports(package) == [
            ("pkg/m.py", 3, "rasterio.vrt"),
            ("pkg/m.py", 3, "sys"),
            ("pkg/m.py", 4, "..metrics"),
            ("pkg/m.py", 6, "numpy"),
            ("pkg/m.py", 10, "tqdm"),
        ]
        assert _lazy_allowed("rasterio") and _lazy_allowed("rasterio.vrt")
        assert not _lazy_allowed("..metrics") and not _lazy_allowed("rasteriox") and not _lazy_allowed("PIL")


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
