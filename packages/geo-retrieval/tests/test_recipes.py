import dataclasses
import json
import math

import pytest
import torch

from geo_retrieval import recipes
from geo_retrieval.config import GradClip
from geo_retrieval.recipes import build, get_recipe, list_recipes, register_recipe

BUILTIN = ("safa", "dsm", "sample4geo", "l2ltr")


pytestmark = pytest.mark.one_thread


class TestRegistry:
    def test_builtin_recipes_have_both_variants(self):
        assert set(BUILTIN) <= set(list_recipes())
        for name in BUILTIN:
            assert get_recipe(name).variant == "full"
            small = get_recipe(name, "small")
            assert small.variant == "small" and "CPU-sized" in small.note
            assert name in list_recipes("small")

    def test_unknown_names(self):
        with pytest.raises(ValueError, match="available"):
            get_recipe("nope")
        with pytest.raises(ValueError, match="no variant"):
            get_recipe("safa", "huge")

    def test_frozen_and_copied(self):
        r = get_recipe("safa")
        with pytest.raises(dataclasses.FrozenInstanceError):
            r.epochs = 3  # type: ignore[misc]
        r.head_kwargs["num_heads"] = 99  # a caller's copy, not the registry's
        assert get_recipe("safa").head_kwargs["num_heads"] == 8
        assert r.replace(epochs=3).epochs == 3 and get_recipe("safa").epochs == 100

    def test_register_duplicate_and_overwrite(self):
        r = get_recipe("safa", "small").replace(name="test_dup")
        register_recipe(r)
        try:
            with pytest.raises(ValueError, match="already registered"):
                register_recipe(r)
            register_recipe(r.replace(epochs=2), overwrite=True)
            assert get_recipe("test_dup", "small").epochs == 2
        finally:
            recipes.unregister_recipe("test_dup", "small")
        with pytest.raises(TypeError, match="Recipe"):
            register_recipe({"name": "x"})  # type: ignore[arg-type]

    def test_entry_point_discovery(self, monkeypatch):
        plugin = get_recipe("safa", "small").replace(name="toker21_test")

        class FakeEP:
            name = "geo-synthesis"

            def load(self):
                return lambda registry: [plugin]

        class BrokenEP:
            name = "broken"

            def load(self):
                raise ImportError("missing optional dependency")

        def fake_entry_points(group):
            assert group == "geo_retrieval.recipes"
            return [FakeEP(), BrokenEP()]

        monkeypatch.setattr("importlib.metadata.entry_points", fake_entry_points)
        monkeypatch.setattr(recipes, "_ENTRY_POINTS_LOADED", False)
        try:
            assert "toker21_test" in list_recipes()
            assert get_recipe("toker21_test", "small").head == "safa"
        finally:
            if "toker21_test" in list_recipes():
                recipes.unregister_recipe("toker21_test", "small")

    def test_validation(self):
        r = get_recipe("safa", "small")
        with pytest.raises(ValueError, match="variant"):
            r.replace(variant="medium")
        with pytest.raises(ValueError, match="batch_size"):
            r.replace(batch_size=1)
        with pytest.raises(ValueError, match="grad_clip"):
            r.replace(grad_clip=GradClip("max", 1.0))

    def test_fingerprint_and_hash(self):
        a, b = get_recipe("safa"), get_recipe("safa")
        assert a == b and hash(a) == hash(b) and a.fingerprint() == b.fingerprint()
        assert a.replace(epochs=1).fingerprint() != a.fingerprint()
        assert len({a, b, get_recipe("dsm")}) == 2

    def test_to_dict_is_json(self):
        for name in BUILTIN:
            d = get_recipe(name).to_dict()
            assert json.loads(json.dumps(d))["name"] == name


class TestPaperValues:
    def test_safa(self):
        r = get_recipe("safa")
        assert (r.backbone, r.shared, r.head, r.head_kwargs["num_heads"]) == ("vgg16", False, "safa", 8)
        assert (r.optimizer.name, r.optimizer.lr, r.optimizer.betas) == ("adam", 1e-5, (0.9, 0.999))
        assert (r.batch_size, r.epochs, r.loss, r.loss_kwargs["alpha"]) == (
            32,
            100,
            "soft_margin_triplet",
            10.0,
        )
        assert r.polar and r.polar_preset == "safa" and r.ground_size == r.aerial_size == (112, 616)
        assert not r.augmentation.enabled and r.normalisation.name == "caffe"

    def test_dsm(self):
        r = get_recipe("dsm")
        assert r.orientation_aware and r.head == "dsm" and r.aerial_size == (128, 512)
        assert r.backbone_kwargs == {"out_index": 3, "frozen_stages": 3}
        assert r.augmentation.pano_shift_deg == 360.0 and r.optimizer.lr == 1e-5

    def test_sample4geo(self):
        r = get_recipe("sample4geo")
        assert r.shared and not r.polar and r.loss == "infonce" and r.loss_kwargs["label_smoothing"] == 0.1
        assert (r.ground_size, r.aerial_size) == ((140, 768), (384, 384))
        assert (r.optimizer.name, r.optimizer.lr, r.optimizer.weight_decay) == ("adamw", 1e-3, 0.01)
        assert (r.epochs, r.batch_size, r.amp, r.grad_clip) == (40, 128, True, GradClip("value", 100.0))
        assert (r.schedule.kind, r.schedule.warmup_epochs) == ("cosine", 1.0)
        assert (r.augmentation.hflip_p, r.augmentation.rot90_p) == (0.5, 0.75)
        assert (r.sampling.kind, r.sampling.n_near, r.sampling.neighbour_range) == ("similarity", 32, 128)

    def test_l2ltr(self):
        r = get_recipe("l2ltr")
        assert (r.optimizer.lr, r.optimizer.weight_decay, r.optimizer.eps) == (1e-4, 0.03, 1e-6)
        assert (r.schedule.warmup_steps, r.schedule.total_steps) == (500, 222_000)
        assert r.grad_clip == GradClip("norm", 1.0) and r.head_kwargs["self_cross"]
        assert (r.head_kwargs["depth"], r.head_kwargs["dim"]) == (12, 768)


@pytest.mark.parametrize("name", BUILTIN)
def test_build_small(name):
    r = get_recipe(name, "small")
    torch.manual_seed(0)
    model = build(r)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 2_000_000, "small variants must stay CPU-sized"
    from geo_transforms.panorama import fov_width

    g = torch.rand(3, 3, r.ground_size[0], fov_width(r.fov, r.ground_size[1]))
    a = torch.rand(3, 3, *(r.aerial_size))
    gd, ad = model(g, a)
    sim = model.similarity(gd, ad)
    assert sim.shape == (3, 3) and torch.isfinite(sim).all()
    if r.shared:
        assert model.shared_backbone


def test_build_by_name():
    assert build("safa", "small").ground_head is not None


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILTIN)
def test_build_full(name):
    r = get_recipe(name)
    model = build(r)
    g = torch.rand(2, 3, *r.ground_size)
    a = torch.rand(2, 3, *r.aerial_size)
    with torch.no_grad():
        sim = model.similarity(*model(g, a))
    assert sim.shape == (2, 2) and bool(torch.isfinite(sim).all())
    assert not math.isnan(float(sim.sum()))


class TestMethodFidelity:
    """Settings each method's own code uses (the geo mask, L2LTR's attention dropout)."""

    @pytest.mark.parametrize("variant", ["full", "small"])
    def test_geo_mask_as_each_method_s_code(self, variant):
        # SAFA / DSM (and Toker, in geo-synthesis) mask negatives closer than 25 m on CVACT; L2LTR and
        # Sample4Geo train without any geo mask
        expected = {"safa": 25.0, "dsm": 25.0, "l2ltr": None, "sample4geo": None}
        for name, radius in expected.items():
            assert get_recipe(name, variant).geo_mask_m == radius, name

    def test_geo_mask_must_be_positive(self):
        with pytest.raises(ValueError, match="geo_mask_m"):
            get_recipe("safa", "small").replace(geo_mask_m=0.0)

    def test_l2ltr_full_has_no_attention_dropout(self):
        # upstream L2LTR (ViT-B config): dropout_rate 0.1, attention_dropout_rate 0.0
        recipe = get_recipe("l2ltr", "full")
        assert recipe.head_kwargs["dropout"] == 0.1 and recipe.head_kwargs["attn_dropout"] == 0.0
        from geo_retrieval.heads import create_head

        head = create_head(
            "transformer",
            in_channels=8,
            feature_size=(2, 4),
            dim=8,
            depth=1,
            num_heads=2,
            dropout=0.1,
            attn_dropout=0.0,
        )
        assert head.blocks[0].attn_dropout == 0.0 and head.blocks[0].dropout.p == 0.1
