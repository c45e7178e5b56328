"""Import-graph checks shared by every package's ``tests/test_import_graph.py`` (source read with :mod:`ast`;
nothing is imported).

- :func:`function_level_imports` lists the import statements inside function bodies, so a test can
  refuse all but an allow-list of optional dependencies (imports go at the top of modules);
- :func:`lazy_allowed` / :func:`unused_allowances` read such an allow-list (a name allows itself and
  its submodules);
- :func:`import_cycles` finds the cycles of a module graph (the strongly connected components with
  more than one module).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "assert_imports_at_top",
    "function_level_imports",
    "import_cycles",
    "lazy_allowed",
    "unused_allowances",
]


def function_level_imports(root: Path) -> list[tuple[str, int, str]]:
    r"""``(file, line, module)`` of every import statement inside a function body in the ``*.py`` files
    under ``root`` (files relative to ``root``'s parent); relative imports keep their leading dots
    (``from ..x import y`` -> ``..x``).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp()) / "pkg"
        >>> root.mkdir()
        >>> _ = (root / "m.py").write_text("import os\ndef f():\n    from ..x import y\n")
        >>> function_level_imports(root)
        [('pkg/m.py', 3, '..x')]
    """
    found: list[tuple[str, int, str]] = []

    def visit(node: ast.AST, name: str, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import):
                found.extend((name, child.lineno, alias.name) for alias in child.names)
            elif in_function and isinstance(child, ast.ImportFrom):
                found.append((name, child.lineno, "." * child.level + (child.module or "")))
            function = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, name, in_function or function)

    for path in sorted(Path(root).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        visit(tree, path.relative_to(Path(root).parent).as_posix(), False)
    return found


def lazy_allowed(module: str, allowed: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``allowed`` or a submodule of one (``"PIL.Image"`` for ``"PIL"``)."""
    return any(module == name or module.startswith(name + ".") for name in allowed)


def unused_allowances(modules: Iterable[str], allowed: Iterable[str]) -> set[str]:
    """The names of ``allowed`` that no module of ``modules`` is (or lies below): stale allow-list entries."""
    modules = list(modules)
    return {name for name in allowed if not any(lazy_allowed(m, (name,)) for m in modules)}


def assert_imports_at_top(root: Path, allowed: Iterable[str]) -> None:
    """Fail unless every function-level import under ``root`` is of ``allowed`` (optional dependencies)
    and every name of ``allowed`` is still used (no stale entry); the messages name the files and lines."""
    allowed = set(allowed)
    local = function_level_imports(root)
    bad = [f"{path}:{line}: {module}" for path, line, module in local if not lazy_allowed(module, allowed)]
    assert not bad, "import these at the top of the module (or allow-list an optional dependency):\n" + (
        "\n".join(bad)
    )
    unused = unused_allowances((module for _, _, module in local), allowed)
    assert not unused, f"no function-level import of {sorted(unused)} is left: drop it from the allow-list"


def import_cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The cycles of the module graph ``edges`` (module -> modules it imports): its strongly connected
    components with more than one module, each sorted (Tarjan's algorithm, iterative).

    Example:
        >>> import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
        [['a', 'b', 'c']]
    """
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
