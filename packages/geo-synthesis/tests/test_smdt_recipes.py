import json

import pytest
import torch

from geo_retrieval.config import Augmentation, Normalisation
from geo_retrieval.recipes import build, get_recipe, list_recipes
from geo_synthesis.smdt import SMDTModel, SMDTRecipe, register_smdt
from geo_transforms import MixedParams

# on shared CPUs two spinning OpenMP threads ran these small ops 50-250x slower than one thread
pytestmark = pytest.mark.one_thread


def test_registered_through_the_entry_point():
    assert "smdt" in list_recipes("full") and "smdt" in list_recipes("small")
    assert isinstance(get_recipe("smdt", "small"), SMDTRecipe)
    assert [r.key for r in register_smdt()] == [("smdt", "full"), ("smdt", "small")]  # idempotent


def test_full_variant_values():
    r = get_recipe("smdt", "full")
    l2ltr = get_recipe("l2ltr", "full")
    for name in (
        "backbone",
        "backbone_kwargs",
        "head",
        "head_kwargs",
        "loss",
        "loss_kwargs",
        "optimizer",
        "schedule",
        "grad_clip",
    ):
        assert getattr(r, name) == getattr(l2ltr, name), name
    assert r.ground_size == (256, 1024) and r.aerial_size == (256, 256) and not r.polar
    assert r.normalisation == Normalisation.minus_one_one()
    assert r.batch_size == 32
    c = r.smdt.cascade
    assert c.gan_size == (256, 1024) and (c.ngf, c.num_downs, c.n_blocks, c.max_channels) == (64, 4, 9, 512)
    assert (c.lambda_image, c.lambda_seg, c.gan_loss, c.real_label) == (100.0, 100.0, "bce", 1.0)
    assert r.smdt.gan_lr == 2e-4 and r.smdt.gan_betas == (0.5, 0.999)
    assert r.smdt.retrieval_ground_size == r.smdt.retrieval_aerial_size == (128, 512)
    assert c.mixed == MixedParams()
    assert "unverified" in r.note.lower() and "our design" in r.note.lower()


def test_small_variant_is_cpu_sized_and_serialisable():
    r = get_recipe("smdt", "small")
    assert r.note.startswith("CPU-sized")
    assert r.ground_size == r.smdt.cascade.gan_size == (32, 128) and r.aerial_size == (64, 64)
    record = json.loads(json.dumps(r.to_dict()))
    assert record["smdt"]["cascade"]["mixed"]["meters_per_pixel"] == 0.4
    assert record["smdt"]["grouping"]["mapping"]["tree"] == "vegetation"


def test_build_small():
    model = build("smdt", "small")
    assert isinstance(model, SMDTModel)
    model.eval()
    with torch.no_grad():
        g, a = model(torch.rand(2, 3, 32, 128) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1)
    assert g.shape == a.shape == (2, get_recipe("l2ltr", "small").head_kwargs["dim"])


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"augmentation": Augmentation(hflip_p=0.5)}, "geometric"),
        ({"augmentation": Augmentation(pano_shift_deg=360.0)}, "geometric"),
        ({"normalisation": Normalisation.imagenet()}, "-1, 1"),
        ({"polar": True}, "polar"),
        ({"ground_size": (64, 256)}, "GAN size"),
        ({"fov": 90.0}, "fov"),
        ({"aerial_size": (64, 32)}, "square"),
    ],
)
def test_builder_refuses_inconsistent_recipes(changes, match):
    with pytest.raises(ValueError, match=match):
        build(get_recipe("smdt", "small").replace(**changes))


def test_builder_needs_an_smdt_recipe():
    from geo_synthesis.smdt import build_smdt

    with pytest.raises(TypeError):
        build_smdt(get_recipe("l2ltr", "small"))


@pytest.mark.slow
def test_build_full_sizes():
    model = build("smdt", "full")
    n_gen = sum(p.numel() for p in model.cascade.generator_parameters())
    n_disc = sum(p.numel() for p in model.cascade.discriminator_parameters())
    assert 80e6 < n_gen < 110e6 and n_disc > 1e6
    model.eval()
    with torch.no_grad():
        out = model.cascade.synthesise(torch.rand(1, 3, 256, 256) * 2 - 1)
        assert out.image.shape == (1, 3, 256, 1024) and out.seg_prob.shape == (1, 6, 256, 1024)
        assert model.encode_synthesised(out.image).shape == (1, 768)
