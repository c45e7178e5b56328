"""geo-bench uses the toolkit's shared types: one missing-dependency error, public recipe queries."""

from __future__ import annotations

import pytest

import geo_retrieval
import geo_transforms
from geo_bench import datasets, metrics
from geo_bench.leaderboard import uses_synthesis
from geo_bench.leaderboard.pool import _cost
from geo_bench.localize import maps
from geo_retrieval.recipes import get_recipe

pytestmark = pytest.mark.one_thread


def test_one_missing_dependency_error():
    err = geo_transforms.MissingDependencyError
    assert metrics.MissingDependencyError is err and datasets.MissingDependencyError is err
    assert maps.MissingDependencyError is err and geo_retrieval.MissingDependencyError is err
    assert issubclass(err, ImportError)


def test_missing_map_dependency_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyproj", None)
    with pytest.raises(geo_transforms.MissingDependencyError, match=r"geo-bench\[map\]"):
        maps.import_pyproj()


@pytest.mark.parametrize(
    ("name", "synthesis"), [("safa", False), ("sample4geo", False), ("toker21", True), ("smdt", True)]
)
def test_synthesis_and_cost_from_the_public_recipe_queries(name, synthesis):
    recipe = get_recipe(name, "small").replace(epochs=2, batch_size=4)
    assert uses_synthesis(recipe) is synthesis
    assert _cost(recipe, 40) == 2 * 10 * (3.0 if synthesis else 1.0)
