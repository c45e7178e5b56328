"""One registry type and one duplicate policy for backbones, heads, losses, recipes and builders."""

from __future__ import annotations

import pytest
from torch import nn

from geo_retrieval import backbones, losses, recipes
from geo_retrieval.heads import _registry as heads
from geo_retrieval.heads import create_head, list_heads, register_head
from geo_retrieval.losses import create_loss, list_losses, register_loss
from geo_retrieval.recipes import (
    build,
    builder_package,
    get_builder,
    get_recipe,
    has_custom_builder,
    register_builder,
    register_recipe,
    unregister_recipe,
)
from geo_transforms.registry import Registry

pytestmark = pytest.mark.one_thread


class TestOneRegistryType:
    def test_every_registry_is_a_registry(self):
        for reg in (backbones._BACKBONES, heads._HEADS, losses._LOSSES, recipes._RECIPES, recipes._BUILDERS):
            assert isinstance(reg, Registry)


class TestDuplicatePolicy:
    def test_head(self):
        with pytest.raises(ValueError, match=r"head 'gem' is already registered; pass overwrite=True"):
            register_head("gem")(nn.Identity)
        original = heads._HEADS.get("gem")
        try:
            register_head("gem", overwrite=True)(nn.Identity)
            assert isinstance(create_head("gem"), nn.Identity)
        finally:
            register_head("gem", overwrite=True)(original)
        assert create_head("gem", in_channels=4).__class__.__name__ == "GeMHead"

    def test_head_new_name_and_filter(self):
        register_head("test_identity_head")(nn.Identity)
        try:
            assert "test_identity_head" in list_heads() and list_heads("test_*") == ["test_identity_head"]
        finally:
            heads._HEADS.unregister("test_identity_head")

    def test_backbone(self):
        builder = backbones._BACKBONES.get("vgg16")
        with pytest.raises(ValueError, match=r"backbone 'vgg16' is already registered"):
            backbones.register_backbone("vgg16")(builder)
        with pytest.raises(ValueError, match=r"backbone 'convnext_\*' is already registered"):
            backbones.register_backbone("convnext_*")(builder)
        assert backbones.list_backbones("convnext*") == ["convnext_*"]

    def test_loss(self):
        with pytest.raises(ValueError, match=r"loss 'infonce' is already registered"):
            register_loss("infonce")(nn.Identity)
        register_loss("test_l1")(nn.L1Loss)
        try:
            assert isinstance(create_loss("test_l1"), nn.L1Loss) and "test_l1" in list_losses()
        finally:
            losses._LOSSES.unregister("test_l1")
        with pytest.raises(
            ValueError, match=r"unknown loss 'test_l1'; available: \['infonce', 'soft_margin_triplet'\]"
        ):
            create_loss("test_l1")

    def test_recipe(self):
        r = get_recipe("safa", "small").replace(name="test_registry_recipe")
        register_recipe(r)
        try:
            with pytest.raises(
                ValueError, match=r"recipe 'test_registry_recipe/small' is already registered"
            ):
                register_recipe(r)
            assert register_recipe(r.replace(epochs=3), overwrite=True).epochs == 3
        finally:
            assert unregister_recipe("test_registry_recipe", "small").epochs == 3
        with pytest.raises(ValueError, match="unknown recipe 'test_registry_recipe'"):
            get_recipe("test_registry_recipe", "small")

    def test_builder(self):
        @register_builder("test_registry_builder")
        def make(recipe):
            return nn.Identity()

        try:
            with pytest.raises(
                ValueError, match=r"recipe builder 'test_registry_builder' is already registered"
            ):
                register_builder("test_registry_builder")(make)
            register_builder("test_registry_builder", overwrite=True)(make)
            r = get_recipe("safa", "small").replace(name="test_registry_builder")
            assert isinstance(build(r), nn.Identity)
            assert (
                get_builder(r) is make
                and has_custom_builder(r)
                and has_custom_builder("test_registry_builder")
            )
            assert builder_package(r) == make.__module__.partition(".")[0]  # the builder's package
        finally:
            recipes._BUILDERS.unregister("test_registry_builder")


class TestBuilderQueries:
    @pytest.mark.parametrize("name", ["safa", "dsm", "sample4geo", "l2ltr"])
    def test_builtin_recipes_use_the_default_builder(self, name):
        assert get_builder(name) is None and not has_custom_builder(get_recipe(name, "small"))
        assert builder_package(name) == "geo_retrieval"

    def test_exception(self):
        with pytest.raises(TypeError, match="recipe must be a Recipe or a recipe name"):
            has_custom_builder(3)  # type: ignore[arg-type]
