"""Fine-grained pose: where inside a known aerial tile the camera stood, and which way it faced.

Modules: :mod:`~geo_retrieval.pose.matching` (orientation-aware descriptor matching),
:mod:`~geo_retrieval.pose.ccvpe` (the CCVPE model), :mod:`~geo_retrieval.pose.losses` (its targets
and loss), :mod:`~geo_retrieval.pose.recipes` (the ``ccvpe`` recipes and their training step).
"""

from .ccvpe import CCVPE, CCVPEConfig, CCVPEOutput, WidthCircularConv2d, circular_width_padding, decode_pose
from .losses import ccvpe_loss, gaussian_position_target, orientation_bin_weights
from .matching import bin_headings, heading_prior_mask, rotation_scores

__all__ = [
    "CCVPE",
    "CCVPEConfig",
    "CCVPEOutput",
    "WidthCircularConv2d",
    "bin_headings",
    "ccvpe_loss",
    "circular_width_padding",
    "decode_pose",
    "gaussian_position_target",
    "heading_prior_mask",
    "orientation_bin_weights",
    "rotation_scores",
]
