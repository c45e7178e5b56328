"""geo-synthesis recipes (``toker21``; ``smdt`` lives in :mod:`geo_synthesis.smdt.recipes`) and builders.

Convention:
    recipes register into geo-retrieval's registry through the entry-point group
    ``geo_retrieval.recipes`` (``geo_synthesis.recipes:register_all`` in this package's
    ``pyproject.toml``), so ``geo_retrieval.recipes.get_recipe("toker21", "small")`` and
    ``geo_retrieval.recipes.build(...)`` work once geo-synthesis is installed.

    :class:`Toker21Recipe` is a :class:`~geo_retrieval.recipes.Recipe` plus ``toker``
    (:class:`Toker21Config`: generator / discriminator widths and the GAN loss weights). The
    retrieval fields mean: ``backbone`` / ``backbone_kwargs`` the street branch, ``head_kwargs``
    the two SAFA heads (sa1, sa2), ``loss_kwargs`` the soft-margin triplet with the mining
    schedule, ``optimizer`` the three Adams. ``ground_size == aerial_size`` (the polar aerial and
    the panorama share one grid, divisible by 8), ``polar=True``, normalisation to [-1, 1].

    - ``full``: the paper (see docs/methods.md#toker21): polar aerial 112x616 (SAFA geometry from a 750 px
      aerial), panorama 112x616, batch 32, 200 epochs, Adam lr 1e-4 betas (0.5, 0.999), mining
      0-20 all / 21-40 0.1 / 41-60 0.05 / then 0.01, joint horizontal flip (p 0.5) only, seed 10;
      G 9.51 M, D 2.79 M, R 26.79 M parameters. ``pretrained=False``: the paper's street ResNet-34
      starts from ImageNet weights (pass ``backbone_kwargs={"weights": path}`` offline).
    - ``small``: CPU-sized, stated in its note: 32x128 polar aerial and panorama, generator base
      16 (bottleneck 128 x 4 x 16), discriminator base 16, a narrow ResNet-34-layout street branch
      (one block per stage, widths 32/64/128, stem max-pool removed), K = 8; Adam 2e-4; the
      synthesis terms on 2 of the 16 samples per batch (``synthesis_samples``); a few minutes on
      two CPU cores.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from geo_retrieval.config import Augmentation, Normalisation, OptimizerConfig, ScheduleConfig
from geo_retrieval.recipes import Recipe, register_builder

from .smdt.recipes import smdt_recipes
from .toker import TOKER_SCHEDULE, Toker21Model

__all__ = ["Toker21Config", "Toker21Recipe", "build_toker21", "register_all", "toker21_recipes"]


@dataclass(frozen=True)
class Toker21Config:
    """Synthesis-side options of ``toker21`` (see :class:`~geo_synthesis.toker.Toker21Model`)."""

    gen_base: int = 32
    n_res: int = 6
    disc_base: int = 64
    gan_kind: str = "bce"
    real_label: float = 0.9
    fake_label: float = 0.0
    gan_weight: float = 1.0
    l1_weight: float = 100.0
    triplet_weight: float = 1000.0
    spectral_norm: bool = True
    synthesis_samples: int | None = None


@dataclass(frozen=True)
class Toker21Recipe(Recipe):
    """A :class:`~geo_retrieval.recipes.Recipe` plus ``toker`` (:class:`Toker21Config`)."""

    toker: Toker21Config = field(default_factory=Toker21Config)


_SOURCE = (
    "Toker, Zhou, Maximov, Leal-Taixe, CVPR 2021, 'Coming Down to Earth: Satellite-to-Street View "
    "Synthesis for Geo-Localization' (aysim/comingdowntoearth)"
)

_FULL = Toker21Recipe(
    name="toker21",
    variant="full",
    backbone="resnet34_layer3",
    backbone_kwargs={},
    head="safa",
    head_kwargs={"num_heads": 8, "pool": "max", "flatten": "channel_major"},
    loss="soft_margin_triplet",
    loss_kwargs={"alpha": 10.0, "schedule": list(TOKER_SCHEDULE)},
    ground_size=(112, 616),
    aerial_size=(112, 616),
    polar=True,
    polar_preset="safa",
    polar_center="safa",
    geo_mask_m=25.0,
    optimizer=OptimizerConfig("adam", lr=1e-4, betas=(0.5, 0.999), weight_decay=0.0, eps=1e-8),
    schedule=ScheduleConfig("constant"),
    epochs=200,
    batch_size=32,
    grad_clip=None,
    amp=False,
    augmentation=Augmentation(hflip_p=0.5),
    normalisation=Normalisation.minus_one_one(),
    seed=10,
    source=_SOURCE,
    note=(
        "Multitask: residual U-Net G (SN, IN, self-attention; 9.51 M), conditional SA-PatchGAN D (2.79 M), "
        "street ResNet-34 to layer3 without max-pool + SAFA sa2, aerial descriptor sa1(G bottleneck) "
        "(R 26.79 M); per step D (BCE, real label 0.9), R (triplet), G (GAN + 100 L1 + 1000 triplet). "
        "Fixed vs the public code: the street ResNet runs once per step (its G-step descriptor reuses the "
        "pre-R-step features, detached); the 25 m geo mask (geo_mask_m, Toker's CVACT mask, not tuned) leaves masked pairs out of both triplet "
        "terms instead of counting them at log 2; exact resume. "
        "pretrained=False here: the paper's ResNet starts from ImageNet (pass weights=). 200 epochs is the "
        "code default (the paper's count is unverified)."
    ),
    toker=Toker21Config(),
)

_SMALL = dataclasses.replace(
    _FULL,
    variant="small",
    backbone_kwargs={"channels": (32, 64, 128, 256), "layers": (1, 1, 1, 1), "stem_width": 32},
    ground_size=(32, 128),
    aerial_size=(32, 128),
    loss_kwargs={"alpha": 10.0, "schedule": [(0, None), (10, 0.5)]},
    optimizer=OptimizerConfig("adam", lr=2e-4, betas=(0.5, 0.999), weight_decay=0.0, eps=1e-8),
    epochs=15,
    batch_size=16,
    amp=True,
    seed=10,
    note=(
        "CPU-sized: 32x128 polar aerial and panorama, G base 16 (bottleneck 128x4x16, 2 residual blocks), "
        "D base 16, a narrow ResNet-34-layout street branch (1 block per stage, widths 32/64/128, no "
        "max-pool), K=8, randomly initialised; Adam 2e-4 (0.5, 0.999), batch 16, mining all terms then "
        "ratio 0.5 from epoch 10; bf16 autocast in training (amp; float32 evaluation). On the synthetic "
        "world's val region (world seed 0, 250 queries, binomial s.e. about 3 points) best val R@1 66.4 with "
        "amp vs 69.2 in float32 (the float32 run's best was its last epoch, up from 60.8); 8 epochs with "
        "cosine lr 4e-4 reached only 50.4 by epoch 7, so the 15 epochs stay. Synthesis (decoder, D, GAN and "
        "L1 terms) on the first 2 samples of each batch (synthesis_samples=2; retrieval and the encoder see "
        "all 16; issue 15, chosen on val, tuning/tune_on_val.py toker21-synthesise-*): best val R@1 on worlds "
        "0 / 1 with 2 samples 67.2 / 66.8, with 1 68.4 / 58.4, with 4 65.2 / 58.8, with all 16 66.4 / 60.4; "
        "a step costs 411 ms against 463 ms with 4 (one thread, bf16, A/B in one process; a whole run with "
        "all 16 cost 727 CPU-s against 484 with 4). Two samples had the best mean over the two worlds (67.0; "
        "one sample 63.4, the best on world 0 alone but 8 points lower on world 1)."
    ),
    toker=Toker21Config(gen_base=16, n_res=2, disc_base=16, synthesis_samples=2),
)


def toker21_recipes() -> list[Toker21Recipe]:
    """The ``toker21`` recipes, ``full`` and ``small``."""
    return [_FULL, _SMALL]


@register_builder("toker21")
def build_toker21(recipe: Recipe) -> nn.Module:
    """Build an untrained :class:`~geo_synthesis.toker.Toker21Model` from a ``toker21`` recipe."""
    if tuple(recipe.ground_size) != tuple(recipe.aerial_size):
        raise ValueError(
            f"toker21 needs ground_size == aerial_size (one grid for the polar aerial and the synthesised "
            f"panorama), got {recipe.ground_size} and {recipe.aerial_size}"
        )
    if not recipe.polar:
        raise ValueError("toker21 synthesises panoramas from *polar* aerials: polar must be True")
    if recipe.fov != 360:
        raise ValueError(f"toker21 synthesises full panoramas: fov must be 360, got {recipe.fov}")
    if recipe.head != "safa":
        raise ValueError(f"toker21 uses SAFA heads, got head={recipe.head!r}")
    cfg: Toker21Config = getattr(recipe, "toker", Toker21Config())
    head_kwargs: dict[str, Any] = dict(recipe.head_kwargs)
    num_heads = int(head_kwargs.pop("num_heads", 8))
    return Toker21Model(
        image_size=(recipe.ground_size[0], recipe.ground_size[1]),
        gen_base=cfg.gen_base,
        n_res=cfg.n_res,
        disc_base=cfg.disc_base,
        street_backbone=recipe.backbone,
        backbone_kwargs=dict(recipe.backbone_kwargs),
        num_heads=num_heads,
        safa_kwargs=head_kwargs,
        gan_kind=cfg.gan_kind,
        real_label=cfg.real_label,
        fake_label=cfg.fake_label,
        gan_weight=cfg.gan_weight,
        l1_weight=cfg.l1_weight,
        triplet_weight=cfg.triplet_weight,
        triplet_kwargs=dict(recipe.loss_kwargs),
        geo_mask_m=recipe.geo_mask_m,
        spectral_norm=cfg.spectral_norm,
        synthesis_samples=cfg.synthesis_samples,
    )


def register_all(registry: object = None) -> list[Recipe]:
    """Entry point of the ``geo_retrieval.recipes`` group: every geo-synthesis recipe.

    Returns the recipes (the registry registers those it does not hold yet); importing this module
    has registered the builders. ``registry`` (the registry module) is accepted for the entry-point
    convention and unused.
    """
    recipes: list[Recipe] = list(toker21_recipes())
    recipes += smdt_recipes()
    return recipes
