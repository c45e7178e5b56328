"""geo-synthesis' models, recipes and test doubles against geo-retrieval's interfaces and registry."""

from __future__ import annotations

import pytest

import geo_synthesis
from geo_retrieval.protocols import ConfiguresOptimizers, CrossViewEncoder, CustomStepModel, PairDataset
from geo_retrieval.recipes import (
    build,
    builder_package,
    get_builder,
    get_recipe,
    has_custom_builder,
    register_builder,
)
from geo_synthesis.recipes import build_toker21
from geo_synthesis.smdt import SMDTModel, build_smdt
from geo_synthesis.smdt.segmentation import SegmentationUNet
from geo_synthesis.testing import SMDTToyPairs
from geo_synthesis.toker import Toker21Model

pytestmark = pytest.mark.one_thread


@pytest.mark.parametrize(("name", "cls"), [("toker21", Toker21Model), ("smdt", SMDTModel)])
def test_gan_recipes_build_custom_step_encoders(name, cls):
    model = build(get_recipe(name, "small"))
    assert isinstance(model, cls)
    assert isinstance(model, CrossViewEncoder)
    assert isinstance(model, CustomStepModel) and isinstance(model, ConfiguresOptimizers)


def test_segmentation_net_has_a_custom_step_only():
    net = SegmentationUNet(6, width=4, depth=2)
    assert isinstance(net, CustomStepModel) and not isinstance(net, ConfiguresOptimizers)
    assert not isinstance(net, CrossViewEncoder)


def test_recipes_ask_the_public_builder_queries():
    assert get_builder("toker21") is build_toker21 and get_builder("smdt") is build_smdt
    for name in ("toker21", "smdt"):
        assert has_custom_builder(name) and has_custom_builder(get_recipe(name, "small"))
        assert builder_package(name) == "geo_synthesis"  # the recipe needs geo-synthesis installed


def test_builders_are_not_silently_replaced():
    with pytest.raises(ValueError, match=r"recipe builder 'toker21' is already registered"):
        register_builder("toker21")(build_toker21)


def test_toy_pairs_are_a_pair_dataset_in_testing():
    ds = SMDTToyPairs(2, aerial_size=16, ground_size=(8, 32))
    assert isinstance(ds, PairDataset)
    assert {"ground", "aerial", "id", "ground_seg"} <= set(ds[0])
    assert not hasattr(geo_synthesis.smdt, "toy")
