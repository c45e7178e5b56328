"""geo-transforms: differentiable, batched, device-agnostic polar, panorama and perspective
mappings for cross-view geo-localisation, built on kornia.

Every public op takes (B, C, H, W) floating tensors on any device, caches its sampling grid per
size/device/dtype and has a thin ``nn.Module`` wrapper.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .polar import PolarTransform, polar_grid, polar_pixel_map, polar_transform

__all__ = [
    "PolarTransform",
    "__version__",
    "polar_grid",
    "polar_pixel_map",
    "polar_transform",
]
