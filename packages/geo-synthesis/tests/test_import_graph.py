"""Imports go at the top of geo_synthesis' modules (read from the source with :mod:`ast`; nothing is imported).

A function-level import is refused unless it names one of :data:`LAZY_IMPORTS_ALLOWED` (or a submodule
of one): none today; every dependency of geo-synthesis (geo-retrieval, tqdm, Pillow, ...) is a
required one, so nothing is imported late.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "geo_synthesis"

# Modules that may be imported inside a function (and their submodules), each with its reason.
LAZY_IMPORTS_ALLOWED: set[str] = set()


def _function_level_imports(root: Path) -> list[tuple[str, int, str]]:
    """``(file, line, module)`` of every import statement inside a function body in the ``*.py`` files
    under ``root``; relative imports keep their leading dots (``from ..x import y`` -> ``..x``)."""
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


class TestImportsAtTop:
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
            "    import numpy.linalg, sys\n"
            "    from ..x import y\n"
            "    def g():\n"
            "        from numpy import asarray\n"
            "class C:\n"
            "    import json\n"
            "    def m(self):\n"
            "        import tqdm\n"
        )
        assert _function_level_imports(package) == [
            ("pkg/m.py", 3, "numpy.linalg"),
            ("pkg/m.py", 3, "sys"),
            ("pkg/m.py", 4, "..x"),
            ("pkg/m.py", 6, "numpy"),
            ("pkg/m.py", 10, "tqdm"),
        ]
        assert not _lazy_allowed("..x") and not _lazy_allowed("numpy") and not _lazy_allowed("torch")
