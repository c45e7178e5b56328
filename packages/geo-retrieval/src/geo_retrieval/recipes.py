"""Named model recipes: frozen configs (model, loss, sizes, optimiser, schedule, augmentation) plus a builder.

Convention:
    a :class:`Recipe` is looked up by ``(name, variant)``; ``variant="full"`` carries the paper's
    values (``docs/methods.md``; deviations are written in ``note``), ``variant="small"`` is a CPU-sized
    variant (small images, tiny backbones, ``pretrained=False``) that trains in minutes on two
    cores and says so in its ``note``. Sizes are (H, W). ``ground_size`` is the full panorama before
    the FoV crop; ``aerial_size`` is the polar (H, W) when ``polar=True`` (square aerial inputs are
    polar-transformed on the fly by the trainer, with geo-transforms' ``polar_center``), else the
    resized aerial. Recipes are immutable; derive variants with :func:`dataclasses.replace` (or
    :meth:`Recipe.replace`). ``get_recipe`` returns a deep copy, so the registry never changes
    behind a caller's back.

    Other packages add recipes through the entry-point group ``geo_retrieval.recipes``: each entry
    point names a callable ``register(registry_module)`` or an iterable of :class:`Recipe`
    (geo-synthesis adds ``toker21`` and ``smdt``). Entry points are loaded once, on the first
    lookup.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import nn

from geo_transforms.panorama import fov_width
from geo_transforms.registry import Registry

from . import hybrid as _hybrid  # noqa: F401  (registers the r50_hybrid backbone)
from .config import Augmentation, GradClip, Normalisation, OptimizerConfig, SamplingConfig, ScheduleConfig
from .model import build_model

if TYPE_CHECKING:
    from geo_transforms.polar import Center

__all__ = [
    "ENTRY_POINT_GROUP",
    "GradClip",
    "OptimizerConfig",
    "Recipe",
    "SamplingConfig",
    "ScheduleConfig",
    "build",
    "build_recipe",
    "builder_package",
    "get_builder",
    "get_recipe",
    "has_custom_builder",
    "list_recipes",
    "register_builder",
    "register_recipe",
    "unregister_recipe",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "geo_retrieval.recipes"


@dataclass(frozen=True)
class Recipe:
    """A named, frozen model + training configuration (see the module docstring).

    Attributes:
        name, variant: registry key; variant is ``"full"`` or ``"small"``.
        backbone: backbone registry name for the ground view (and the aerial view when
            ``aerial_backbone`` is None).
        aerial_backbone: a different aerial backbone name, if any.
        shared: one backbone + head for both views (Sample4Geo) or separate weights.
        backbone_kwargs: :func:`~geo_retrieval.backbones.create_backbone` options (timm kwargs).
        head, head_kwargs: :func:`~geo_retrieval.heads.create_head` name and options.
        loss, loss_kwargs: :func:`~geo_retrieval.losses.create_loss` name and options (including
            the hard-negative schedule as a list of ``(start_epoch, ratio)``).
        ground_size, aerial_size: (H, W) inputs of the two encoders (see module docstring).
        polar, polar_preset, polar_center: aerial polar transform on the fly and its geometry.
        orientation_aware: the model estimates the panorama's azimuth (DSM).
        geo_mask_m: radius (metres) of the training loss's geo-distance mask: in-batch negatives
            closer than this to the anchor are left out of the loss, as each method's own code
            does on CVACT (SAFA, DSM, Toker: 25 m); None = no mask (L2LTR, Sample4Geo). Applied
            when the batch carries ``utm`` (CVACT, VIGOR, the synthetic world) and recorded in the
            result protocol.
        fov: ground field of view in degrees (360 when ``augmentation.fov_mode`` is "random" or
            "curriculum": one model sees limited-FoV windows in the full panorama frame).
        optimizer, schedule, epochs, batch_size, grad_clip, amp: optimisation.
        augmentation, normalisation, sampling: data pipeline.
        seed: the paper's seed (None if not stated).
        source, note: citation and deviations / CPU-sizing statement.

    ``task`` (a class attribute, outside the fingerprint): ``"retrieval"`` here; pose recipes
    (:class:`~geo_retrieval.pose.recipes.CCVPERecipe`) say ``"pose"``.
    """

    task: ClassVar[str] = "retrieval"
    name: str
    variant: str
    backbone: str
    head: str
    loss: str
    ground_size: tuple[int, int]
    aerial_size: tuple[int, int]
    polar: bool
    source: str
    aerial_backbone: str | None = None
    shared: bool = False
    backbone_kwargs: Mapping[str, Any] = field(default_factory=dict)
    head_kwargs: Mapping[str, Any] = field(default_factory=dict)
    loss_kwargs: Mapping[str, Any] = field(default_factory=dict)
    polar_preset: str | None = None
    polar_center: Center = "safa"
    orientation_aware: bool = False
    geo_mask_m: float | None = None
    fov: float = 360.0
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    epochs: int = 1
    batch_size: int = 32
    grad_clip: GradClip | None = None
    amp: bool = False
    augmentation: Augmentation = field(default_factory=Augmentation)
    normalisation: Normalisation = field(default_factory=Normalisation)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.variant not in ("full", "small"):
            raise ValueError(f"variant must be 'full' or 'small', got {self.variant!r}")
        for name in ("ground_size", "aerial_size"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"{name} must be (H, W) of positive ints, got {size!r}")
        if not 0 < self.fov <= 360:
            raise ValueError(f"fov must lie in (0, 360], got {self.fov}")
        if self.augmentation.fov_mode != "fixed" and self.fov != 360:
            raise ValueError(
                f"augmentation.fov_mode={self.augmentation.fov_mode!r} needs fov=360 (one model takes the "
                f"full panorama frame at every FoV), got fov={self.fov}; use fov_mode='fixed' for a "
                "fixed-FoV recipe"
            )
        if self.geo_mask_m is not None and not self.geo_mask_m > 0:
            raise ValueError(f"geo_mask_m must be a positive radius in metres or None, got {self.geo_mask_m}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 for in-batch negatives, got {self.batch_size}")
        if self.grad_clip is not None and self.grad_clip.kind not in ("norm", "value"):
            raise ValueError(f"grad_clip.kind must be 'norm' or 'value', got {self.grad_clip.kind!r}")
        if self.sampling.kind not in ("unique", "gps", "similarity"):
            raise ValueError(f"sampling.kind must be unique, gps or similarity, got {self.sampling.kind!r}")

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.variant)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-serialisable) for results records and ``recipe.json``."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Short SHA-256 of the canonical JSON of :meth:`to_dict` (provenance / config hash)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __hash__(self) -> int:  # the mapping fields are not hashable; hash the canonical form
        return hash(self.fingerprint())


# ------------------------------------------------------------------------------------------------
# registry

_RECIPES: Registry[Recipe] = Registry("recipe")  # keyed by ``name/variant`` (:func:`_key`)
_ENTRY_POINTS_LOADED = False


def _key(name: str, variant: str) -> str:
    return f"{name}/{variant}"


def register_recipe(recipe: Recipe, *, overwrite: bool = False) -> Recipe:
    """Add ``recipe`` under ``(recipe.name, recipe.variant)``; an existing key raises ``ValueError``
    unless ``overwrite=True`` (the toolkit's one registry policy)."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe, got {type(recipe).__name__}")
    return _RECIPES.register(_key(*recipe.key), recipe, overwrite=overwrite)


def unregister_recipe(name: str, variant: str) -> Recipe:
    """Remove the recipe ``name`` / ``variant`` and return it (tests, plugins undoing a registration)."""
    return _RECIPES.unregister(_key(name, variant))


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    # the plugins' (geo-synthesis') modules are imported here, on the first lookup, not when this module
    # loads: they import this registry themselves
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception:  # a broken plugin must not break the registry
            logger.exception("could not load recipe entry point %r", ep.name)
            continue
        if callable(obj) and not isinstance(obj, Recipe):
            obj = obj(sys.modules[__name__])
        if isinstance(obj, Recipe):
            obj = [obj]
        for recipe in obj or ():
            if _key(*recipe.key) not in _RECIPES:  # a recipe registered before the first lookup wins
                register_recipe(recipe)


def list_recipes(variant: str | None = None, task: str | None = "retrieval") -> list[str]:
    """Registered recipe names (sorted), optionally only those with ``variant``, of one ``task``.

    Args:
        variant: ``"full"``, ``"small"`` or None (any).
        task: ``"retrieval"`` (default: the recipes the leaderboard ranks), ``"pose"`` (fine-grained
            pose, :mod:`geo_retrieval.pose.recipes`) or None (every recipe).
    """
    _load_entry_points()
    out = set()
    for key in _RECIPES.names():
        name, _, var = key.rpartition("/")
        if variant is not None and var != variant:
            continue
        if task is not None and getattr(_RECIPES.get(key), "task", "retrieval") != task:
            continue
        out.add(name)
    return sorted(out)


def get_recipe(name: str, variant: str = "full") -> Recipe:
    """A deep copy of the recipe ``name`` in ``variant`` (``"full"`` or ``"small"``)."""
    _load_entry_points()
    recipe = _RECIPES.find(_key(name, variant))
    if recipe is None:
        names = list_recipes(task=None)
        if name in names:
            variants = sorted(v for n, _, v in (k.rpartition("/") for k in _RECIPES.names()) if n == name)
            raise ValueError(f"recipe {name!r} has no variant {variant!r}; available: {variants}")
        raise ValueError(f"unknown recipe {name!r}; available: {names}")
    return copy.deepcopy(recipe)


# ------------------------------------------------------------------------------------------------
# builder

_BUILDERS: Registry[Callable[[Recipe], nn.Module]] = Registry("recipe builder")


def register_builder(
    name: str, *, overwrite: bool = False
) -> Callable[[Callable[[Recipe], nn.Module]], Callable[[Recipe], nn.Module]]:
    """Decorator registering a custom model builder for the recipes called ``name`` whose model is
    not a plain :class:`~geo_retrieval.model.CrossViewModel` (e.g. geo-synthesis' GAN recipes); an
    existing name raises ``ValueError`` unless ``overwrite=True``."""
    return _BUILDERS.register(name, overwrite=overwrite)


def _recipe_name(recipe: Recipe | str) -> str:
    if isinstance(recipe, Recipe):
        return recipe.name
    if isinstance(recipe, str):
        return recipe
    raise TypeError(f"recipe must be a Recipe or a recipe name, got {type(recipe).__name__}")


def get_builder(recipe: Recipe | str) -> Callable[[Recipe], nn.Module] | None:
    """The custom builder registered for ``recipe`` (a :class:`Recipe` or its name), or None when
    :func:`build` makes a plain :class:`~geo_retrieval.model.CrossViewModel` from it.

    Example:
        >>> get_builder("safa") is None
        True
    """
    _load_entry_points()
    return _BUILDERS.find(_recipe_name(recipe))


def has_custom_builder(recipe: Recipe | str) -> bool:
    """Whether ``recipe`` (a :class:`Recipe` or its name) is built by a custom builder (its model is
    not a plain cross-view model; the geo-synthesis GANs, which also bring their own training step:
    check a built model with ``isinstance(model, geo_retrieval.protocols.CustomStepModel)``)."""
    return get_builder(recipe) is not None


def builder_package(recipe: Recipe | str) -> str:
    """The top-level package whose builder makes ``recipe``'s model: ``"geo_retrieval"`` for plain
    cross-view models, else the custom builder's package (``"geo_synthesis"`` for toker21 and smdt,
    i.e. the recipe needs geo-synthesis installed).

    Example:
        >>> builder_package("safa")
        'geo_retrieval'
    """
    builder = get_builder(recipe)
    if builder is None:
        return __name__.partition(".")[0]
    return str(getattr(builder, "__module__", "") or "").partition(".")[0]


def _input_sizes(recipe: Recipe) -> tuple[tuple[int, int], tuple[int, int]]:
    ground_w = fov_width(recipe.fov, recipe.ground_size[1])
    return (recipe.ground_size[0], ground_w), tuple(recipe.aerial_size)  # type: ignore[return-value]


def build(recipe: Recipe | str, variant: str = "full") -> nn.Module:
    """Build the (untrained, ``pretrained=False`` unless the recipe says otherwise) model of a recipe."""
    if isinstance(recipe, str):
        recipe = get_recipe(recipe, variant)
    builder = _BUILDERS.find(recipe.name)
    return builder(recipe) if builder is not None else _build_cross_view(recipe)


build_recipe = build  # the name re-exported by ``geo_retrieval`` (``build`` alone is too generic there)


def _build_cross_view(recipe: Recipe) -> nn.Module:
    ground_size, aerial_size = _input_sizes(recipe)
    return build_model(
        backbone=recipe.backbone,
        head=recipe.head,
        shared=recipe.shared,
        ground_size=ground_size,
        aerial_size=aerial_size,
        aerial_backbone=recipe.aerial_backbone,
        backbone_kwargs=dict(recipe.backbone_kwargs),
        **dict(recipe.head_kwargs),
    )


# ------------------------------------------------------------------------------------------------
# the built-in recipes (values from docs/methods.md; every deviation is written in ``note``)

_CPU_NOTE = (
    "CPU-sized: small images, tiny randomly initialised backbone, bf16 autocast in training (amp; float32 "
    "evaluation); trains in minutes on 2 cores. "
)
#: where the small variants' settings were checked: the leaderboard world's val region (world seed 0)
_VAL = "val R@1 on the synthetic world's val region (world seed 0, 250 queries, binomial s.e. about 3 points)"
# A narrow ResNet-10-T (channels 32-256, deep stem 16) cut at layer2 (stride 8, 64 ch, 0.08 M
# parameters): a 32x128 input gives a 4x16 map.
_TINY_CNN = "timm:resnet10t"
_TINY_CNN_KW: dict[str, Any] = {"cut": "layer2", "channels": (32, 64, 128, 256), "stem_width": 16}
_SMALL_PANO = (32, 128)
_SMALL_OPT = OptimizerConfig("adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4)
_SMALL_SCHED = ScheduleConfig("cosine", warmup_steps=20)

_SAFA = Recipe(
    name="safa",
    variant="full",
    backbone="vgg16",
    backbone_kwargs={"ceil_mode": True},
    head="safa",
    head_kwargs={"num_heads": 8, "pool": "max", "flatten": "head_major"},
    loss="soft_margin_triplet",
    loss_kwargs={"alpha": 10.0},
    ground_size=(112, 616),
    aerial_size=(112, 616),
    polar=True,
    polar_preset="safa",
    polar_center="safa",
    geo_mask_m=25.0,
    optimizer=OptimizerConfig("adam", lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8),
    schedule=ScheduleConfig("constant"),
    epochs=100,
    batch_size=32,
    grad_clip=None,
    amp=False,
    normalisation=Normalisation.caffe(),
    source="Shi et al., NeurIPS 2019, 'Spatial-Aware Feature Aggregation for Cross-View Image Based "
    "Geo-Localization' (YujiaoShi/cross_view_localization_SAFA)",
    note="Separate VGG-16 per view, SA head K=8 (channel max pool; the 2020 code uses mean), 4096-d. "
    "Deviations: no dropout (keep 0.8) after conv4/conv5; caffe mean subtraction in RGB order; "
    "ImageNet init only with weights= given (pretrained=False here). geo_mask_m 25 m: the CVACT "
    "training mask of SAFA's own code (not a tuned value).",
)

_DSM = Recipe(
    name="dsm",
    variant="full",
    backbone="vgg16",
    backbone_kwargs={"out_index": 3, "frozen_stages": 3},
    head="dsm",
    head_kwargs={"channels": (256, 64, 16), "h_strides": (2, 2, 1)},
    loss="soft_margin_triplet",
    loss_kwargs={"alpha": 10.0},
    ground_size=(128, 512),
    aerial_size=(128, 512),
    polar=True,
    polar_preset="dsm",
    polar_center="safa",
    orientation_aware=True,
    geo_mask_m=25.0,
    fov=360.0,
    optimizer=OptimizerConfig("adam", lr=1e-5, betas=(0.9, 0.999), weight_decay=0.0, eps=1e-8),
    schedule=ScheduleConfig("constant"),
    epochs=100,
    batch_size=32,
    augmentation=Augmentation(pano_shift_deg=360.0),
    normalisation=Normalisation.caffe(),
    source="Shi et al., CVPR 2020, 'Where am I looking at? Joint Location and Orientation Estimation by "
    "Cross-View Matching' (YujiaoShi/cross_view_localization_DSM)",
    note="VGG-16 conv1-conv4_3 (conv1-3 frozen) + 3 convs to a 4x64x16 map; circular padding on the aerial "
    "branch; aligned circular correlation over 64 shifts. One model per FoV: derive limited-FoV variants "
    "with recipe.replace(fov=...) (the code's default is 180). Training panoramas are rolled at random "
    "(train_grd_noise 360). Deviation: no dropout on conv4. geo_mask_m 25 m: the CVACT training mask "
    "of DSM's own code (not a tuned value).",
)

_SAMPLE4GEO = Recipe(
    name="sample4geo",
    variant="full",
    backbone="convnext_base.fb_in22k_ft_in1k_384",
    backbone_kwargs={"pool": True},
    shared=True,
    head="avg",
    head_kwargs={},
    loss="infonce",
    loss_kwargs={"label_smoothing": 0.1},
    ground_size=(140, 768),
    aerial_size=(384, 384),
    polar=False,
    optimizer=OptimizerConfig("adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01, eps=1e-8),
    schedule=ScheduleConfig("cosine", warmup_epochs=1.0),
    epochs=40,
    batch_size=128,
    grad_clip=GradClip("value", 100.0),
    amp=True,
    augmentation=Augmentation(
        hflip_p=0.5,
        rot90_p=0.75,
        color_jitter=0.15,
        color_jitter_p=0.5,
        blur_p=0.3,
        dropout_p=0.3,
        dropout_holes=(10, 25),
    ),
    normalisation=Normalisation.imagenet(),
    sampling=SamplingConfig("similarity", n_near=32, n_far=32, neighbour_range=128, similarity_every=4),
    seed=42,
    source="Deuser et al., ICCV 2023, 'Sample4Geo: Hard Negative Sampling For Cross-View Geo-Localisation' "
    "(Skyy93/Sample4Geo)",
    note="One weight-shared ConvNeXt-B (pooled 1024-d), symmetric InfoNCE with learnable logit scale "
    "(init ln(1/0.07)), label smoothing 0.1; GPS batches first, similarity batches after every 4th epoch. "
    "Deviations: no JPEG-quality augmentation; blur is Gaussian (not AdvancedBlur/Sharpen); the paper "
    "starts from the fb_in22k_ft_in1k_384 weights (pass weights= / pretrained=True).",
)

_L2LTR = Recipe(
    name="l2ltr",
    variant="full",
    backbone="r50_hybrid",
    backbone_kwargs={"layers": (3, 4, 9)},
    head="transformer",
    head_kwargs={
        "dim": 768,
        "depth": 12,
        "num_heads": 12,
        "mlp_ratio": 4.0,
        "dropout": 0.1,
        "attn_dropout": 0.0,
        "self_cross": True,
    },
    loss="soft_margin_triplet",
    loss_kwargs={"alpha": 10.0},
    ground_size=(128, 512),
    aerial_size=(128, 512),
    polar=True,
    polar_preset="safa",
    polar_center="safa",
    optimizer=OptimizerConfig("adamw", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.03, eps=1e-6),
    schedule=ScheduleConfig("cosine", warmup_steps=500, total_steps=222_000),
    epochs=200,
    batch_size=32,
    grad_clip=GradClip("norm", 1.0),
    amp=False,
    normalisation=Normalisation.imagenet(),
    source="Yang, Lu, Zhu, NeurIPS 2021, 'Cross-view Geo-localization with Layer-to-Layer Transformer' "
    "(yanghongji2007/cross_view_localization_L2LTR)",
    note="Two separate R50 + 12-layer self-cross transformers (768-d CLS). The trunk is the hybrid's "
    "ResNetV2 (r50_hybrid: units 3/4/9, post-activation, GroupNorm, as ViT-pytorch builds it), so L2LTR checkpoints "
    "and the converted R50+ViT-B_16.npz load. Deviations: the polar map is "
    "rendered directly at 128x512 (no second resample); optional apex AMP not used. Dropout 0.1, "
    "attention dropout 0.0 and no geo mask, as upstream's ViT-B config and training code (not tuned).",
)

_SMALL_COMMON: dict[str, Any] = {
    "variant": "small",
    "backbone": _TINY_CNN,
    "backbone_kwargs": _TINY_CNN_KW,
    "ground_size": _SMALL_PANO,
    "optimizer": _SMALL_OPT,
    "schedule": _SMALL_SCHED,
    "epochs": 8,
    "batch_size": 32,
    "grad_clip": GradClip("norm", 5.0),
    # bf16 autocast on the CPU (fp16 + loss scaling on CUDA): 1.4-1.6x faster steps on the 2-core
    # machine for every small recipe but smdt (which inherits this and gains nothing), val R@1 on
    # the world's val region within run-to-run spread of fp32 (world seed 0; the notes give the
    # figures); evaluation stays float32
    "amp": True,
}

_BUILTIN: list[Recipe] = [
    _SAFA,
    _SAFA.replace(
        **{**_SMALL_COMMON, "epochs": 16},
        head_kwargs={"num_heads": 4, "pool": "max", "flatten": "head_major"},
        aerial_size=_SMALL_PANO,
        note=_CPU_NOTE
        + "narrow ResNet-10-T cut at layer2 per view (4x16 map), SA head K=4; AdamW 1e-3 + cosine, "
        "16 epochs: on the synthetic world's val region (world seed 0, commit e7d26a3) val R@1 was 36 % "
        "at epoch 8 and 43 % from epoch 13 on (first set in 0.1 from a test-region result; val now supports it). "
        f"amp (bf16): best {_VAL} 44.0 vs 43.2 in float32.",
    ),
    _DSM,
    _DSM.replace(
        **{**_SMALL_COMMON, "epochs": 10},
        head_kwargs={"channels": (64, 32, 8), "h_strides": (2, 2, 1)},
        aerial_size=_SMALL_PANO,
        note=_CPU_NOTE + "narrow ResNet-10-T cut at layer2 per view, DSM convs to a 1x16x8 map, 16 shifts; "
        "random panorama roll as in the paper; AdamW 1e-3 + cosine, 10 epochs. Chosen on val: best "
        f"{_VAL} 37.2 with amp and 10 epochs, 29.2 with amp and 8, 30.0 in float32 with 8.",
    ),
    _SAMPLE4GEO,
    _SAMPLE4GEO.replace(
        **{
            **_SMALL_COMMON,
            "schedule": ScheduleConfig("cosine", warmup_epochs=1.0),
            "epochs": 32,
            "backbone": "convnext_atto",
            # layer scale starts at 1, not timm's 1e-6: from random weights a 1e-6 gate leaves each
            # block's residual branch (its only non-linearity) shut for the first ~16 epochs
            "backbone_kwargs": {
                "pool": True,
                "depths": (1, 1, 2, 1),
                "dims": (24, 48, 96, 192),
                "ls_init_value": 1.0,
            },
        },
        aerial_size=(64, 64),
        augmentation=Augmentation(hflip_p=0.5, rot90_p=0.75, color_jitter=0.15, color_jitter_p=0.5),
        sampling=SamplingConfig("similarity", n_near=4, n_far=4, neighbour_range=16, similarity_every=2),
        note=_CPU_NOTE + "A shrunken ConvNeXt (depths 1/1/2/1, dims 24-192, layer scale initialised to 1), "
        "shared, raw 64x64 aerial; colour jitter only per view; GPS then similarity batches every 2 epochs; "
        "32 epochs. amp (bf16): best "
        f"{_VAL} 23.2 vs 24.0 in float32 with timm's layer-scale init 1e-6 and 40 epochs (it learned little "
        "before epoch 16: every block's residual branch, its only non-linearity, starts gated by 1e-6). "
        "Layer scale 1.0 (issue 15, tuning/tune_on_val.py), on the synthetic world's val region (250 "
        "queries): best val R@1 51.6 after 40 epochs, 33.2 after 32, 20.8 after 24 (world seed 0); 32.0 "
        "after 32 epochs and 14.8 after 24 on world seed 1, against 16.8 with the earlier setting. 32 "
        "epochs: 20 % less CPU than the 40 before, and better on val on both worlds.",
    ),
    _L2LTR,
    _L2LTR.replace(
        **{
            **_SMALL_COMMON,
            "optimizer": OptimizerConfig("adamw", lr=1e-3, betas=(0.9, 0.999), weight_decay=0.03, eps=1e-6),
            "epochs": 32,
        },
        head_kwargs={
            "dim": 128,
            "depth": 2,
            "num_heads": 4,
            "mlp_ratio": 2.0,
            "dropout": 0.0,
            "self_cross": True,
            "pos_init": "sincos",
        },
        aerial_size=_SMALL_PANO,
        note=_CPU_NOTE
        + "narrow ResNet-10-T cut at layer2 per view + a 2-layer, 128-d self-cross transformer "
        "(no dropout; position embedding initialised with 2-D sin-cos instead of ViT weights, which a "
        "randomly initialised small model needs to use the layout at all); AdamW 1e-3 (weight decay 0.03) "
        "+ cosine, clip norm 5, 32 epochs. Re-derived on val (tuning/tune_on_val.py): best "
        f"{_VAL} 36.4 with the sin-cos position embedding and amp, 11.2 with ViT's truncated-normal one "
        "(l2ltr-pos-normal), 30.8 in float32; 24 epochs instead of 32 gave 24.8. With the CPU attention "
        "written out in float32 (heads.transformer.attention, issue 15; 26 % faster model steps) best "
        f"{_VAL} 36.8.",
    ),
]

for _recipe in _BUILTIN:
    register_recipe(_recipe)

# TransGeo: registered in its full variant only. It exists for the ``transgeo`` converter source (whose
# checkpoints it rebuilds) and for full-size training; a small variant would join the leaderboard and the
# GPU check, which train every small recipe, without a CPU-sized configuration chosen on val.
_TRANSGEO = Recipe(
    name="transgeo",
    variant="full",
    backbone="deit_small_distilled_patch16_224",
    backbone_kwargs={"num_classes": 1000},
    head="avg",
    head_kwargs={},
    loss="soft_margin_triplet",
    loss_kwargs={"alpha": 10.0},
    ground_size=(112, 616),
    aerial_size=(256, 256),
    polar=False,
    optimizer=OptimizerConfig("adamw", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.03, eps=1e-8),
    schedule=ScheduleConfig("cosine"),
    epochs=100,
    batch_size=32,
    normalisation=Normalisation.imagenet(),
    source="Zhu, Shah, Chen, CVPR 2022, 'TransGeo: Transformer Is All You Need for Cross-view Image "
    "Geo-localization' (Jeff-Zilence/TransGeo2022)",
    note="Two separate distilled DeiT-S/16 (cls + dist tokens, position embeddings of the input sizes), "
    "descriptor = (head(cls) + head_dist(dist)) / 2, 1000-d, L2-normalised; no polar transform; cosine "
    "soft triplet alpha' 20 (= alpha 10). Stage 1 only. Deviations: AdamW instead of ASAM (rho 2.5); "
    "unique batches instead of the hard-negative mining sampler; no stage-2 attention-guided crop "
    "(aerial at 320 px, 64 % of the patches kept); ImageNet DeiT init only with weights= / pretrained=True. "
    "No small variant (see recipes.py).",
)

register_recipe(_TRANSGEO)

# GeoDTR: full variant only, like transgeo (the ``geodtr`` converter source rebuilds its checkpoints).
_GEODTR = Recipe(
    name="geodtr",
    variant="full",
    backbone="resnet34_nomaxpool",
    head="geodtr",
    head_kwargs={"num_descriptors": 8, "tr_heads": 8, "tr_layers": 2, "d_hid": 2048, "dropout": 0.3},
    loss="soft_margin_triplet",
    loss_kwargs={"alpha": 10.0},
    ground_size=(122, 671),
    aerial_size=(122, 671),
    polar=True,
    polar_preset="safa",
    polar_center="safa",
    optimizer=OptimizerConfig("adamw", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.03, eps=1e-8),
    schedule=ScheduleConfig("cosine"),
    epochs=200,
    batch_size=32,
    normalisation=Normalisation.minus_one_one(),
    source="Zhang, Li, Sultani, Zhou, Wshah, AAAI 2023, 'Cross-view Geo-localization via Learning Disentangled "
    "Geometric Layout Correspondence' (zxh009123/GeoDTR)",
    note="Two separate ResNet-34 without the stem max-pool, cut at layer4 (512 channels, stride 16), and "
    "GeoDTR's layout extractor (K descriptors, index-aware position embedding, post-LN transformer), "
    "512*K-d. Polar aerial 122x671 (pt=True) or raw 256x256. Deviations: no layout simulation / semantic "
    "augmentation and no counterfactual loss; the soft-margin triplet gamma 10 is ours. No small variant "
    "(see the transgeo note in recipes.py).",
)

register_recipe(_GEODTR)
