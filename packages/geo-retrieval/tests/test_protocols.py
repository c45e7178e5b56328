"""The shipped models and datasets conform to the interfaces the trainer and the search call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import geo_retrieval
from geo_retrieval.protocols import ConfiguresOptimizers, CrossViewEncoder, CustomStepModel, PairDataset
from geo_retrieval.recipes import build, get_recipe, list_recipes
from geo_retrieval.testing import SyntheticPairs, TinyCrossView, tiny_recipe
from geo_retrieval.training import Trainer

pytestmark = pytest.mark.one_thread

BUILTIN = ("safa", "dsm", "sample4geo", "l2ltr")


class TestCrossViewEncoder:
    @pytest.mark.parametrize("name", BUILTIN)
    def test_builtin_recipes_build_encoders(self, name):
        model = build(get_recipe(name, "small"))
        assert isinstance(model, CrossViewEncoder)
        assert isinstance(model, geo_retrieval.CrossViewModel)
        assert not isinstance(model, CustomStepModel) and not isinstance(model, ConfiguresOptimizers)

    def test_tiny_double_and_shapes(self):
        model = TinyCrossView(dim=8, dropout=0.0)
        assert isinstance(model, CrossViewEncoder) and not isinstance(model, CustomStepModel)
        g, a = model.encode_ground(torch.rand(2, 3, 16, 64)), model.encode_aerial(torch.rand(3, 3, 16, 64))
        assert g.shape == (2, 8) and a.shape == (3, 8) and model.similarity(g, a).shape == (2, 3)

    def test_non_conforming(self):
        assert not isinstance(nn.Linear(2, 2), CrossViewEncoder)
        assert not isinstance(object(), CrossViewEncoder)


class TestCustomStep:
    def test_trainer_finds_the_hooks_through_the_protocols(self, tmp_path):
        class Custom(TinyCrossView):
            def training_step(self, batch, trainer):
                g, a = self(batch["ground"], batch["aerial"])
                return {"loss": -(g * a).sum(-1).mean()}

        model = Custom(dim=8, dropout=0.0)
        assert isinstance(model, CustomStepModel) and isinstance(model, CrossViewEncoder)
        assert not isinstance(model, ConfiguresOptimizers)
        data = SyntheticPairs(8, aerial_size=16, ground_size=(16, 64))
        trainer = Trainer(model, tiny_recipe(), data, out_dir=tmp_path, device="cpu", progress=False)
        assert trainer.custom_step and not trainer.custom_optim
        plain = Trainer(TinyCrossView(dim=8), tiny_recipe(), data, out_dir=tmp_path / "plain", device="cpu")
        assert not plain.custom_step and not plain.custom_optim


class TestPairDataset:
    def test_synthetic_pairs(self):
        ds = SyntheticPairs(3, aerial_size=16, ground_size=(8, 32))
        assert isinstance(ds, PairDataset)
        sample = ds[0]
        assert {"ground", "aerial", "id"} <= set(sample) and sample["ground"].shape == (3, 8, 32)

    def test_non_conforming(self):
        assert not isinstance(3, PairDataset)


def test_protocols_are_public():
    for name in ("ConfiguresOptimizers", "CrossViewEncoder", "CustomStepModel", "PairDataset"):
        assert name in geo_retrieval.__all__ and getattr(geo_retrieval, name) is getattr(
            geo_retrieval.protocols, name
        )
    assert set(BUILTIN) <= set(list_recipes())


def test_test_doubles_are_not_in_the_library_namespace():
    assert not hasattr(geo_retrieval, "SyntheticPairs")
    assert not hasattr(geo_retrieval.training, "SyntheticPairs")
