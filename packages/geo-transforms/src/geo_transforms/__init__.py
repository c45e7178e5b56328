"""geo-transforms: differentiable, batched, device-agnostic polar, panorama and perspective
mappings for cross-view geo-localisation, built on kornia.

Every public op takes (B, C, H, W) floating tensors on any device (any B, 0 included), caches its
sampling grid per size/device/dtype and has a thin ``nn.Module`` wrapper. Output sizes are positive
ints of at most 2**26 pixels per image (8192 x 8192); larger ones raise a ``ValueError`` naming the
argument and the limit before anything is allocated.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import MissingDependencyError, import_optional
from .ground_plane import GroundPlaneView, ground_plane_homography, ground_plane_view
from .mixed import (
    MixedParams,
    MixedPerspectivePolar,
    mixed_perspective_polar,
    mixed_pixel_map,
    mixed_radius_profile,
)
from .panorama import (
    CropFoV,
    JointHFlip,
    JointRotate,
    RotatePanorama,
    crop_fov,
    fov_width,
    joint_hflip,
    joint_rotate,
    limit_fov,
    rotate_panorama,
)
from .perspective import PanoramaToPerspective, camera_rays, panorama_to_perspective
from .polar import (
    InversePolarTransform,
    PolarTransform,
    inverse_polar_transform,
    polar_grid,
    polar_pixel_map,
    polar_transform,
)
from .presets import (
    PolarPreset,
    PolarPresetTransform,
    apply_polar_preset,
    get_polar_preset,
    list_polar_presets,
    register_polar_preset,
)
from .registry import Registry

__all__ = [
    "GroundPlaneView",
    "MixedParams",
    "MixedPerspectivePolar",
    "PanoramaToPerspective",
    "camera_rays",
    "ground_plane_homography",
    "ground_plane_view",
    "mixed_perspective_polar",
    "mixed_pixel_map",
    "mixed_radius_profile",
    "panorama_to_perspective",
    "PolarTransform",
    "__version__",
    "polar_grid",
    "polar_pixel_map",
    "polar_transform",
    "CropFoV",
    "InversePolarTransform",
    "JointHFlip",
    "JointRotate",
    "RotatePanorama",
    "crop_fov",
    "fov_width",
    "inverse_polar_transform",
    "joint_hflip",
    "joint_rotate",
    "limit_fov",
    "rotate_panorama",
    "PolarPreset",
    "PolarPresetTransform",
    "apply_polar_preset",
    "get_polar_preset",
    "list_polar_presets",
    "register_polar_preset",
    "MissingDependencyError",
    "Registry",
    "import_optional",
]
