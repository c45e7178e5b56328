"""Imports go at the top of geo_synthesis' modules (read from the source with :mod:`ast`; nothing is imported).

A function-level import is refused unless it names one of :data:`LAZY_IMPORTS_ALLOWED` (or a submodule
of one): none today; every dependency of geo-synthesis (geo-retrieval, tqdm, Pillow, ...) is a
required one, so nothing is imported late.
"""

from __future__ import annotations

from pathlib import Path

from geo_transforms.testing.imports import (
    assert_imports_at_top,
    lazy_allowed,
)

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "geo_synthesis"

# Modules that may be imported inside a function (and their submodules), each with its reason.
LAZY_IMPORTS_ALLOWED: set[str] = set()


def _lazy_allowed(module: str) -> bool:
    return lazy_allowed(module, LAZY_IMPORTS_ALLOWED)


class TestImportsAtTop:
    def test_imports_at_top_of_modules(self):
        # and the allow-list has no stale entry
        assert_imports_at_top(SRC / PACKAGE, LAZY_IMPORTS_ALLOWED)

    def test_allow_list_reading(self):
        assert not _lazy_allowed("..x") and not _lazy_allowed("numpy") and not _lazy_allowed("torch")
