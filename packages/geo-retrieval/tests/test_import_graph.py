"""The import graph among geo-retrieval's modules is acyclic, and declaring a recipe imports no training code.

The graph is read from the source with :mod:`ast`, so it also holds the imports that run late (inside
functions) or never (under ``TYPE_CHECKING``): a cycle hidden behind either still couples the modules.
Edges: ``import a.b.c`` / ``from a.b import c`` point at the module imported (``a.b.c`` when it is a
module, else ``a.b``) and at every package above it (Python runs their ``__init__`` first), except the
packages above the importing module itself, which Python has initialised before it runs (``from .. import
__version__`` or a package ``__init__`` re-exporting its submodules is no cycle).

Imports go at the top of modules: a function-level import is refused unless it names one of
:data:`LAZY_IMPORTS_ALLOWED` (optional dependencies, torch internals some builds lack).
"""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from geo_transforms.testing.imports import (
    assert_imports_at_top,
    import_cycles,
    lazy_allowed,
)

PACKAGE = "geo_retrieval"
SRC = Path(__file__).resolve().parents[1] / "src"

# Modules that may be imported inside a function (and their submodules), each with its reason. The
# geo-synthesis recipes come through ``importlib.metadata`` entry points (``ep.load()``), not an import
# statement, so they need no entry here.
LAZY_IMPORTS_ALLOWED = {
    # optional dependency (the `faiss` / `faiss-gpu` extras); FaissIndex raises MissingDependencyError
    "faiss",
    # importable only on torch builds with distributed support; used only inside a process group
    "torch.distributed.nn.functional",
    # private torch module, absent from some builds and versions (feature-detected, else None)
    "torch.distributed._functional_collectives",
}


def _modules() -> dict[str, Path]:
    """Dotted name -> source file of every module of the package (packages by their ``__init__``)."""
    spec = importlib.util.find_spec(PACKAGE)  # does not run the package's __init__
    assert spec is not None and spec.submodule_search_locations
    root = Path(next(iter(spec.submodule_search_locations)))
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package that ``name`` (source ``path``) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    here = name.split(".") if is_package else name.split(".")[:-1]  # the package relative imports start in
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                base_name = ".".join([*base, node.module] if node.module else base)
            else:
                base_name = node.module or ""
            targets.add(base_name)
            targets.update(f"{base_name}.{alias.name}" for alias in node.names)
    edges = set()
    for target in targets:
        if target not in modules:  # a name imported from a module, or outside the package
            continue
        for dep in (*_ancestors(target), target):
            if dep != name and dep not in _ancestors(name):
                edges.add(dep)
    return edges


def _run_isolated(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter with the package as a bare namespace (its ``__init__``, which
    imports everything, is not run); return the names in ``sys.modules`` afterwards."""
    prelude = (
        "import importlib.util, sys, types\n"
        f"spec = importlib.util.find_spec({PACKAGE!r})\n"
        f"pkg = types.ModuleType({PACKAGE!r}); pkg.__path__ = list(spec.submodule_search_locations)\n"
        f"sys.modules[{PACKAGE!r}] = pkg\n"
    )
    epilogue = "\nprint('\\n'.join(sorted(sys.modules)))\n"
    command = [sys.executable, "-c", prelude + code + epilogue]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


def _lazy_allowed(module: str) -> bool:
    return lazy_allowed(module, LAZY_IMPORTS_ALLOWED)


class TestImportGraph:
    def test_graph_is_read(self):
        modules = _modules()
        assert {f"{PACKAGE}.config", f"{PACKAGE}.recipes", f"{PACKAGE}.training.augment"} <= set(modules)
        graph = {name: _imported(name, path, modules) for name, path in modules.items()}
        assert f"{PACKAGE}.config" in graph[f"{PACKAGE}.recipes"]
        assert f"{PACKAGE}.config" in graph[f"{PACKAGE}.training.augment"]

    def test_acyclic(self):
        modules = _modules()
        graph = {name: _imported(name, path, modules) for name, path in modules.items()}
        cycles = import_cycles(graph)
        assert not cycles, "import cycles among geo-retrieval modules: " + "; ".join(
            " <-> ".join(c) for c in cycles
        )

    def test_config_and_recipes_import_no_training_code(self):
        graph_modules = _modules()
        for name in (f"{PACKAGE}.config", f"{PACKAGE}.recipes"):
            deps = _imported(name, graph_modules[name], graph_modules)
            assert not any(d.startswith(f"{PACKAGE}.training") for d in deps), (name, sorted(deps))

    def test_imports_at_top_of_modules(self):
        # and the allow-list has no stale entry
        assert_imports_at_top(SRC / PACKAGE, LAZY_IMPORTS_ALLOWED)

    def test_allow_list_reading(self):
        assert _lazy_allowed("faiss") and _lazy_allowed("faiss.contrib")
        assert not _lazy_allowed("..losses") and not _lazy_allowed("faissx") and not _lazy_allowed("torch")


class TestImportIsolated:
    def test_config_imports_no_tensor_code(self):
        loaded = _run_isolated(f"import {PACKAGE}.config")
        assert "torch" not in loaded
        assert not any(m.startswith(f"{PACKAGE}.") and m != f"{PACKAGE}.config" for m in loaded)

    @pytest.mark.slow  # a fresh interpreter importing torch: seconds
    def test_declaring_a_recipe_imports_no_training_code(self):
        loaded = _run_isolated(f"import {PACKAGE}.recipes")
        assert f"{PACKAGE}.recipes" in loaded
        assert not any(m.startswith(f"{PACKAGE}.training") for m in loaded), sorted(
            m for m in loaded if m.startswith(PACKAGE)
        )
