"""pytest configuration shared by ``tests/`` and the docstring examples under ``src/``.

``pytest --doctest-modules src`` (run by ``nox -s tests``) collects no conftest from ``tests/``, so
the toolkit's plugin (offline guard, ``HF_HUB_OFFLINE``) is loaded here for the examples too, and
the examples that need an optional dependency are skipped when it is not installed.
"""

from __future__ import annotations

import importlib

import pytest

pytest_plugins = ["geo_transforms.testing.plugin"]

#: doctest item (the object's dotted name) -> the optional modules its example imports
DOCTEST_REQUIRES: dict[str, tuple[str, ...]] = {
    "geo_retrieval.search.FaissIndex": ("faiss",),  # the `faiss` / `faiss-gpu` extra
}


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a docstring example whose optional dependencies are not installed."""
    missing = [name for name in DOCTEST_REQUIRES.get(item.name, ()) if not _importable(name)]
    if missing:
        pytest.skip(f"needs the optional dependency {', '.join(missing)}")
