"""geo-synthesis: satellite-to-street GAN synthesis for cross-view geo-localisation.

Shared GAN building blocks (spectral-norm convolutions, SAGAN self-attention, residual blocks),
adversarial losses with explicit float targets, conditional patch discriminators, synthesis
metrics (SSIM, PSNR, sharpness difference), the Toker et al. (CVPR'21) multitask model and its
``toker21`` recipe (registered in geo-retrieval's recipe registry through the
``geo_retrieval.recipes`` entry point), PNG grids, a training callback and the ``geo-synthesis``
command line; and SMDT (Tian et al., ICME'22) as the paper describes it (our design of the
never-released segmentation, mixed mapping and G1 -> G2 cascade, :mod:`geo_synthesis.smdt`,
``smdt`` recipe).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .callbacks import SynthesisGridCallback
from .datasets import IMAGE_EXTENSIONS, PairedImageFolder
from .discriminators import MultiScaleDiscriminator, PatchDiscriminator, patch_output_size
from .gan_losses import GAN_LOSS_KINDS, GANLoss, gan_loss
from .grids import image_grid, load_image, save_image_grid, to_uint8
from .layers import (
    ConvLayer,
    ResidualBlock,
    ResidualBlockDown,
    ResidualBlockUp,
    SelfAttention,
    init_normal_,
    remove_spectral_norm_,
    sn_conv2d,
)
from .metrics import (
    SynthesisMetricAccumulator,
    SynthesisScores,
    psnr,
    sharpness_difference,
    ssim,
    synthesis_metrics,
)
from .smdt import (
    SMDT_GROUPS,
    CascadeConfig,
    ClassGrouping,
    SegmentationUNet,
    SemanticAugment,
    SMDTCascade,
    SMDTConfig,
    SMDTModel,
    SMDTRecipe,
    SMDTSingleGenerator,
    UNetGenerator,
    build_smdt,
    colour_to_labels,
    keep_classes,
    remove_classes,
    semantic_augment,
    smdt_recipes,
    world_grouping,
)
from .toker import TOKER_SCHEDULE, Toker21Model, TokerDiscriminator, TokerGenerator, count_parameters

__all__ = [
    "SMDT_GROUPS",
    "CascadeConfig",
    "ClassGrouping",
    "SMDTCascade",
    "SMDTConfig",
    "SMDTModel",
    "SMDTRecipe",
    "SMDTSingleGenerator",
    "SegmentationUNet",
    "SemanticAugment",
    "UNetGenerator",
    "build_smdt",
    "colour_to_labels",
    "keep_classes",
    "remove_classes",
    "semantic_augment",
    "smdt_recipes",
    "world_grouping",
    "GAN_LOSS_KINDS",
    "IMAGE_EXTENSIONS",
    "PairedImageFolder",
    "TOKER_SCHEDULE",
    "ConvLayer",
    "GANLoss",
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "ResidualBlock",
    "ResidualBlockDown",
    "ResidualBlockUp",
    "SelfAttention",
    "SynthesisGridCallback",
    "SynthesisMetricAccumulator",
    "SynthesisScores",
    "Toker21Model",
    "TokerDiscriminator",
    "TokerGenerator",
    "__version__",
    "count_parameters",
    "gan_loss",
    "image_grid",
    "init_normal_",
    "load_image",
    "patch_output_size",
    "psnr",
    "remove_spectral_norm_",
    "save_image_grid",
    "sharpness_difference",
    "sn_conv2d",
    "ssim",
    "synthesis_metrics",
    "to_uint8",
]
