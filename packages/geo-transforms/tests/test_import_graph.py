"""Imports go at the top of geo_transforms' modules (read from the source with :mod:`ast`; nothing is imported).

A function-level import is refused unless it names one of :data:`LAZY_IMPORTS_ALLOWED` (or a submodule
of one): Pillow, an optional dependency here (the ``preview`` extra), which only
:mod:`geo_transforms.preview` needs.
"""

from __future__ import annotations

from pathlib import Path

from geo_transforms.testing.imports import (
    assert_imports_at_top,
    function_level_imports,
    import_cycles,
    lazy_allowed,
    unused_allowances,
)

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "geo_transforms"

# Modules that may be imported inside a function (and their submodules), each with its reason.
LAZY_IMPORTS_ALLOWED: set[str] = {
    # optional dependency (the `preview` extra): geo_transforms.preview raises MissingDependencyError
    "PIL",
}


def _lazy_allowed(module: str) -> bool:
    return lazy_allowed(module, LAZY_IMPORTS_ALLOWED)


class TestImportsAtTop:
    def test_imports_at_top_of_modules(self):
        # and the allow-list has no stale entry
        assert_imports_at_top(SRC / PACKAGE, LAZY_IMPORTS_ALLOWED)

    def test_function_level_import_scan(self, tmp_path):
        """The shared scanner (geo_transforms.testing.imports), used by every package's import test."""
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
        assert function_level_imports(package) == [
            ("pkg/m.py", 3, "numpy.linalg"),
            ("pkg/m.py", 3, "sys"),
            ("pkg/m.py", 4, "..x"),
            ("pkg/m.py", 6, "numpy"),
            ("pkg/m.py", 10, "tqdm"),
        ]
        assert not _lazy_allowed("..x") and not _lazy_allowed("numpy") and not _lazy_allowed("torch")
        assert _lazy_allowed("PIL") and _lazy_allowed("PIL.Image") and not _lazy_allowed("PILx")


def test_import_cycles():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert import_cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []  # a diamond is no cycle


def test_unused_allowances():
    assert unused_allowances(["PIL.Image", "faiss"], {"PIL", "rasterio"}) == {"rasterio"}
    assert unused_allowances([], set()) == set()
