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

from geo_transforms.testing.imports import (
    assert_imports_at_top,
    import_cycles,
    lazy_allowed,
)

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


def _lazy_allowed(module: str) -> bool:
    return lazy_allowed(module, LAZY_IMPORTS_ALLOWED)


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
        cycles = import_cycles(edges)
        assert not cycles, "import cycles among geo_bench modules:\n" + "\n".join(
            " <-> ".join(c) for c in cycles
        )

    def test_no_function_level_import_of_geo_bench(self):
        modules = _modules()
        _, local = _imports(modules)
        bad = [f"{modules[m].relative_to(SRC)}:{line}: {target}" for m, line, target in local]
        assert not bad, "import geo_bench modules at the top of the module:\n" + "\n".join(bad)

    def test_imports_at_top_of_modules(self):
        # and the allow-list has no stale entry
        assert_imports_at_top(SRC / PACKAGE, LAZY_IMPORTS_ALLOWED)

    def test_allow_list_reading(self):
        assert _lazy_allowed("rasterio") and _lazy_allowed("rasterio.vrt")
        assert not _lazy_allowed("..metrics") and not _lazy_allowed("rasteriox") and not _lazy_allowed("PIL")
