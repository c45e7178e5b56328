"""The synthetic world: an offline cross-view dataset with real geometry.

A procedural city (:mod:`.city`) is composed into two capture epochs (:mod:`.appearance`),
rendered as north-up aerial tiles (:mod:`.render_aerial`) and equirectangular street-level
panoramas (:mod:`.render_ground`), served in memory by :class:`SyntheticWorld` (:mod:`.dataset`; off-centre tiles for fine-grained
pose by :class:`WorldPose`, :mod:`.pose`)
and written to disk in the real CVUSA / CVACT / VIGOR layouts (:mod:`.layouts`). Its lat/lon
come from :func:`geo_retrieval.geodesy.equirectangular_to_latlon`.
"""

from __future__ import annotations

from .appearance import AppearanceConfig, Capture, Epoch, jpeg_roundtrip, photometric
from .city import CITY_STYLES, CLASSES, PALETTE, City, CityConfig, city_style
from .dataset import District, RenderConfig, SyntheticWorld, polar_views
from .pose import WorldPose, camera_pixels, render_world_pose
from .render_aerial import bilinear_lookup, render_aerial
from .render_ground import march_distances, render_panorama

__all__ = [
    "CITY_STYLES",
    "CLASSES",
    "PALETTE",
    "AppearanceConfig",
    "Capture",
    "City",
    "CityConfig",
    "District",
    "Epoch",
    "RenderConfig",
    "SyntheticWorld",
    "WorldPose",
    "bilinear_lookup",
    "camera_pixels",
    "city_style",
    "jpeg_roundtrip",
    "march_distances",
    "photometric",
    "polar_views",
    "render_aerial",
    "render_panorama",
    "render_world_pose",
]
