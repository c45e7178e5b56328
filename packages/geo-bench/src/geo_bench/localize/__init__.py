"""Localisation against georeferenced maps: tile an orthophoto on a metric grid, embed the tiles with a
trained model into an index (:mod:`.index`), and localise street-level images against it
(:mod:`.locate`, :class:`Localizer`). rasterio and pyproj come with ``pip install 'geo-bench[map]'``
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
from .locate import Candidate, Localizer, LocateResult, QueryResult, read_truth, refine_position
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

__all__ = [
    "Candidate",
    "IndexMismatchError",
    "LoadedModel",
    "LocateResult",
    "Localizer",
    "MapGrid",
    "MapInfo",
    "QueryResult",
    "TileFolder",
    "TileIndex",
    "TileReader",
    "build_index",
    "default_px",
    "load_checkpoint",
    "open_maps",
    "open_tile_folder",
    "plan_tiles",
    "read_tiles",
    "read_truth",
    "refine_position",
    "search",
    "to_latlon",
    "utm_crs_for",
]
