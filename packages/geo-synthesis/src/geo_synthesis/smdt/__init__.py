"""SMDT (Tian et al., ICME'22) as the paper describes it: our design of the never-released parts.

Segmentation of the ground panorama (:mod:`.segmentation`), keep / remove semantic augmentation
(:mod:`.augment`), the mixed perspective-polar + G1 -> G2 dual conditional GAN cascade
(:mod:`.cascade`, :mod:`.generators`), the transformer retrieval on the synthesised images
(:mod:`.model`) and the ``smdt`` recipe (:mod:`.recipes`). See the package README, section "SMDT",
for what is the paper's and what is ours.
"""

from __future__ import annotations

from .augment import MODES, SemanticAugment, keep_classes, remove_classes, semantic_augment
from .cascade import CascadeConfig, SMDTCascade, SynthesisOutput, one_hot_labels
from .generators import SMDTSingleGenerator, UNetGenerator
from .model import SMDTConfig, SMDTModel, scale_gradient
from .recipes import SMDTRecipe, build_smdt, register_smdt, smdt_recipes
from .segmentation import (
    IGNORE_INDEX,
    SMDT_GROUPS,
    WORLD_CLASSES,
    WORLD_TO_SMDT,
    ClassGrouping,
    SegmentationUNet,
    colour_to_labels,
    fit_segmentation,
    prepare_labels,
    segmentation_accuracy,
    world_grouping,
)

__all__ = [
    "IGNORE_INDEX",
    "MODES",
    "SMDT_GROUPS",
    "WORLD_CLASSES",
    "WORLD_TO_SMDT",
    "CascadeConfig",
    "ClassGrouping",
    "SMDTCascade",
    "SMDTConfig",
    "SMDTModel",
    "SMDTRecipe",
    "SMDTSingleGenerator",
    "SegmentationUNet",
    "SemanticAugment",
    "SynthesisOutput",
    "UNetGenerator",
    "build_smdt",
    "colour_to_labels",
    "fit_segmentation",
    "keep_classes",
    "one_hot_labels",
    "prepare_labels",
    "register_smdt",
    "remove_classes",
    "scale_gradient",
    "segmentation_accuracy",
    "semantic_augment",
    "smdt_recipes",
    "world_grouping",
]
