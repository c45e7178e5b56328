"""The ``smdt`` recipe (full + small) and its builder, registered in geo-retrieval's recipe registry.

Convention:
    :class:`SMDTRecipe` is a :class:`~geo_retrieval.recipes.Recipe` with one extra field,
    ``smdt`` (:class:`~geo_synthesis.smdt.model.SMDTConfig`). The retrieval fields (backbone,
    head, loss, optimiser, schedule, clipping) are copied from the ``l2ltr`` recipe of the same
    variant. ``ground_size`` is the GAN size (the trainer resizes panoramas to it; the model
    resizes again to the transformer's ``retrieval_ground_size``); ``aerial_size`` is the raw,
    square aerial (``polar=False``: the model applies the mixed perspective-polar mapping itself).
    Images are normalised to [-1, 1] (mean = std = 0.5) for the tanh generator; L2LTR used
    ImageNet statistics. No joint geometric augmentation: ``ground_seg`` is not transformed by
    the trainer's batch pipeline, so the builder refuses recipes that enable flips, rotations or
    panorama rolls.

    ``full`` (never run here: no GPU budget; sizes are SMDT's parents', the rest *unverified*):
    GAN at 256x1024 (PanoGAN's size, at which the paper's figure matches SAFA's polar formula),
    aerial 256x256, U-Nets ngf 64 / 4 levels / 9 residual blocks / 512 channels, 3-scale patch Ds
    (ndf 64), BCE + 100 L1 per branch, Adam 2e-4 (0.5, 0.999); transformer retrieval at L2LTR's
    128x512 with L2LTR's trunk, head, triplet loss (alpha 10), AdamW and schedule; batch 32 (SMDT's
    shipped default of 1 is the B = 1 NaN defect, ``docs/methods.md#the-transformer-as-shipped``); 200 epochs.
    Keep / remove augmentation probabilities (0.1 each) are our guess.

    ``small``: CPU-sized (about 0.3 s per step on one CPU thread): 32x128 GAN and transformer
    inputs, 64x64 aerial, ngf 8, 3 levels, 1 residual block, 2-scale Ds (ndf 8) with 2 stride-2
    layers, the l2ltr small transformer, batch 16, 20 epochs with retrieval from epoch 5 (the GAN
    alone first) and the GANs frozen after epoch 10 (``gan_epochs=10``; chosen on the synthetic
    world's val region). One design change from ``full``: G2 sees the mapped aerial besides G1's
    segmentation (``g2_input="seg+aerial"``); from the segmentation alone the small GAN kept too
    little of a place to retrieve it (R@1 0.8-12 % on the synthetic world's test region against
    9.6-15 % with the aerial, one seed per setting; see the geo-bench README). Stated in its note.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from geo_retrieval.config import Normalisation
from geo_retrieval.losses import create_loss
from geo_retrieval.model import build_model
from geo_retrieval.recipes import Recipe, get_recipe, register_builder, register_recipe
from geo_transforms import MixedParams

from .augment import SemanticAugment
from .cascade import CascadeConfig, SMDTCascade
from .model import SMDTConfig, SMDTModel

__all__ = ["SMDTRecipe", "build_smdt", "register_smdt", "smdt_recipes"]

_SOURCE = (
    "Tian et al., ICME 2022, 'Cross-View Image Matching for Geo-localization in Urban Environments "
    "via Semantic Mask and Dual cGAN Transformer' (TianXiaoYang-UESTC/SMDT-PyTorch; segmentation, "
    "mixed mapping and GAN cascade never released: our design)"
)
_SOURCE_SHORT = "SMDT (Tian et al., ICME'22); segmentation / mixed mapping / GAN cascade: our design"


@dataclass(frozen=True)
class SMDTRecipe(Recipe):
    """A :class:`~geo_retrieval.recipes.Recipe` plus SMDT's own options (``smdt``)."""

    smdt: SMDTConfig = field(default_factory=SMDTConfig)


def _from_l2ltr(variant: str, **changes: Any) -> SMDTRecipe:
    base = get_recipe("l2ltr", variant)
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(Recipe)}
    values.update(changes)
    return SMDTRecipe(**values)


def smdt_recipes() -> list[SMDTRecipe]:
    """The ``smdt`` recipes, ``full`` and ``small`` (see the module docstring)."""
    white, black = 1.0, -1.0  # in [-1, 1] normalisation: keep modes blank to white, remove_sky to black
    full_cfg = SMDTConfig(
        cascade=CascadeConfig(
            num_classes=6,
            gan_size=(256, 1024),
            mixed=MixedParams(),
            architecture="cascade",
            ngf=64,
            num_downs=4,
            n_blocks=9,
            max_channels=512,
            ndf=64,
            d_layers=3,
            d_scales=3,
        ),
        retrieval_ground_size=(128, 512),
        retrieval_aerial_size=(128, 512),
        semantic_aug=SemanticAugment(
            p_keep_tree=0.1, p_keep_road=0.1, p_remove_sky=0.1, keep_fill=white, remove_fill=black
        ),
        segmenter_width=32,
        segmenter_depth=4,
    )
    full = _from_l2ltr(
        "full",
        name="smdt",
        ground_size=(256, 1024),
        aerial_size=(256, 256),
        polar=False,
        polar_preset=None,
        normalisation=Normalisation.minus_one_one(),
        epochs=200,
        batch_size=32,
        source=_SOURCE,
        smdt=full_cfg,
        note=(
            "Our design of SMDT from the paper's description (docs/methods.md#smdt): mixed perspective-polar "
            "aerial (geo-transforms MixedParams defaults, not calibrated to a dataset) -> G1 segmentation "
            "-> G2 ground-style image -> L2LTR transformer (l2ltr full trunk/head). GAN at PanoGAN's "
            "256x1024, transformer at 128x512. Unverified: loss weights, seg loss (L1 on probabilities), "
            "joint one-loop training with detached fakes for retrieval, augmentation probabilities, "
            "[-1, 1] normalisation for the transformer, batch 32, 200 epochs; the recipe's lr schedule and "
            "grad clip (L2LTR's) apply to the GAN optimisers too. Not run at this size."
        ),
    )
    small_cfg = SMDTConfig(
        cascade=CascadeConfig(
            num_classes=6,
            gan_size=(32, 128),
            mixed=MixedParams(meters_per_pixel=0.4),  # the full geometry scaled to a 64 px aerial
            architecture="cascade",
            ngf=8,
            num_downs=3,
            n_blocks=1,
            max_channels=64,
            ndf=8,
            d_layers=2,
            d_scales=2,
            g2_input="seg+aerial",
        ),
        retrieval_ground_size=(32, 128),
        retrieval_aerial_size=(32, 128),
        semantic_aug=SemanticAugment(
            p_keep_tree=0.1, p_keep_road=0.1, p_remove_sky=0.1, keep_fill=white, remove_fill=black
        ),
        segmenter_width=8,
        segmenter_depth=2,
        retrieval_start_epoch=5,
        gan_epochs=10,
    )
    small = _from_l2ltr(
        "small",
        name="smdt",
        ground_size=(32, 128),
        aerial_size=(64, 64),
        polar=False,
        polar_preset=None,
        normalisation=Normalisation.minus_one_one(),
        epochs=20,
        batch_size=16,
        source=_SOURCE_SHORT,
        smdt=small_cfg,
        note=(
            "CPU-sized: 32x128 GAN and transformer inputs, 64x64 aerial, U-Nets ngf 8 / 3 levels / 1 "
            "residual block, 2-scale patch Ds (ndf 8, 2 stride-2 layers), the l2ltr small transformer "
            "(ResNet-10-T cut at layer2 + 2-layer 128-d self-cross); Adam 2e-4 for the GANs, AdamW 1e-3 for "
            "retrieval (cosine); 20 epochs, the GAN alone for the first 5, the GANs frozen after epoch 10 "
            "(gan_epochs=10; the retrieval trains on until epoch 20 on the frozen GANs' images). Deviation "
            "from 'full': G2 sees the mapped aerial besides the segmentation (g2_input='seg+aerial'), "
            "re-derived on the synthetic "
            "world's val region (world seed 0, 250 queries, binomial s.e. about 2 points; "
            "tuning/tune_on_val.py smdt-g2-seg): best val R@1 13.6 with seg+aerial and 11.6 with seg only, "
            "both with amp; 14.8 with seg+aerial in float32; 15.6 with the CPU attention written out in "
            "float32 (geo_retrieval's heads.transformer.attention, issue 15). GANs frozen after epoch 10 "
            "(issue 15, tuning/tune_on_val.py smdt-gan-all-epochs, with geo_synthesis.pooling), on the "
            "synthetic world's val region (250 queries): best val R@1 21.6 vs 18.8 with the GANs trained all "
            "20 epochs (world seed 0), 12.4 vs 12.0 (world seed 1), for about a quarter less CPU. bf16 "
            "autocast in training (amp; float32 evaluation). Keep modes blank to white, remove_sky to black, "
            "as the paper's Fig. 2. Same design "
            "caveats as 'full'."
        ),
    )
    return [full, small]


@register_builder("smdt")
def build_smdt(recipe: Recipe) -> nn.Module:
    """Build an untrained :class:`SMDTModel` from an :class:`SMDTRecipe`."""
    if not isinstance(recipe, SMDTRecipe):
        raise TypeError(f"the smdt builder needs an SMDTRecipe, got {type(recipe).__name__}")
    cfg = recipe.smdt
    aug = recipe.augmentation
    if aug.hflip_p > 0 or aug.rot90_p > 0 or aug.pano_shift_deg > 0:
        raise ValueError(
            "smdt recipes cannot use joint geometric augmentation (hflip_p, rot90_p, pano_shift_deg): "
            "the trainer does not transform batch['ground_seg'] with the images"
        )
    if recipe.normalisation.name != "minus_one_one":
        raise ValueError(
            f"smdt needs images in [-1, 1] (Normalisation.minus_one_one()) for its tanh generator, "
            f"got normalisation {recipe.normalisation.name!r}"
        )
    if recipe.polar:
        raise ValueError("smdt maps the raw aerial itself (mixed perspective-polar); set polar=False")
    if tuple(recipe.ground_size) != tuple(cfg.cascade.gan_size):
        raise ValueError(f"ground_size {recipe.ground_size} must equal the GAN size {cfg.cascade.gan_size}")
    if recipe.fov != 360:
        raise ValueError("smdt synthesises full panoramas; fov must be 360")
    if recipe.aerial_size[0] != recipe.aerial_size[1]:
        raise ValueError(f"aerial_size must be square (raw aerial), got {recipe.aerial_size}")
    retrieval = build_model(
        backbone=recipe.backbone,
        head=recipe.head,
        shared=recipe.shared,
        ground_size=cfg.retrieval_ground_size,
        aerial_size=cfg.retrieval_aerial_size,
        aerial_backbone=recipe.aerial_backbone,
        backbone_kwargs=dict(recipe.backbone_kwargs),
        **dict(recipe.head_kwargs),
    )
    loss = create_loss(recipe.loss, **dict(recipe.loss_kwargs))
    return SMDTModel(SMDTCascade(cfg.cascade), retrieval, loss, cfg)


def register_smdt(registry: object = None) -> list[SMDTRecipe]:
    """Register the ``smdt`` recipes (idempotent) and return them. ``registry`` is accepted for the
    entry-point convention (``register(registry_module)``) and unused."""
    recipes = smdt_recipes()
    for recipe in recipes:
        try:
            get_recipe(recipe.name, recipe.variant)
        except ValueError:
            register_recipe(recipe)
    return recipes
