"""Localisation against georeferenced maps: tile an orthophoto on a metric grid, embed the tiles with a
trained model into an index (:mod:`.index`), and localise street-level images against it
(:mod:`.locate`, :class:`Localizer`), optionally refining the best tile with a fine-grained pose model
(:mod:`.refine`, :class:`PoseRefiner`). rasterio and pyproj come with ``pip install 'geo-bench[map]'``
and are imported only when a map is read or a coordinate converted.
"""

from __future__ import annotations

from .index import (
    IndexMismatchError,
    LoadedModel,
    TileIndex,
    build_index,
    default_px,
    load_checkpoint,
    search,
)
from .locate import Candidate, Localizer, LocateResult, QueryResult, load_query, read_truth, refine_position
from .maps import (
    MapGrid,
    MapInfo,
    TileFolder,
    TileReader,
    open_maps,
    open_tile_folder,
    plan_tiles,
    read_tiles,
    to_latlon,
    utm_crs_for,
)
from .refine import PoseEstimate, PoseRefiner, pixel_offset_m, pose_tile_m

__all__ = [
    "Candidate",
    "IndexMismatchError",
    "LoadedModel",
    "LocateResult",
    "Localizer",
    "MapGrid",
    "MapInfo",
    "PoseEstimate",
    "PoseRefiner",
    "QueryResult",
    "TileFolder",
    "TileIndex",
    "TileReader",
    "build_index",
    "default_px",
    "load_checkpoint",
    "load_query",
    "open_maps",
    "open_tile_folder",
    "pixel_offset_m",
    "plan_tiles",
    "pose_tile_m",
    "read_tiles",
    "read_truth",
    "refine_position",
    "search",
    "to_latlon",
    "utm_crs_for",
]
