"""Cross-view geo-localisation datasets: CVUSA, CVACT, VIGOR, and their ``prepare`` cache.

All datasets share one sample contract (``ground``, ``aerial``, ``id`` plus dataset keys), one
resampling (Pillow antialiased bilinear to uint8), an on-the-fly polar option and a
memory-mappable cache; see :mod:`geo_bench.datasets.base` and :mod:`geo_bench.datasets.cache`.

.. versionadded:: 0.1
"""

from __future__ import annotations

from collections.abc import Callable

from .base import CrossViewDataset
from .cache import CacheEntry, open_cache, prepare_cache
from .cvact import CVACT, read_act_data
from .cvusa import CVUSA, read_cvusa_split
from .duplicates import DuplicatePair, find_exact_duplicates, image_md5
from .errors import (
    CacheError,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageDecodeError,
    MissingDependencyError,
)
from .image_io import INTERPOLATION
from .options import POLAR_SIZES
from .vigor import VIGOR, VIGORGallery, parse_pano_latlon, parse_tile_latlon
from .vigor_pose import VIGOR_CITY_METRES_PER_PX, VIGORPose

#: name -> loader class, called ``(root, split, **options)`` (the base class declares no constructor)
DATASETS: dict[str, Callable[..., CrossViewDataset]] = {"cvusa": CVUSA, "cvact": CVACT, "vigor": VIGOR}
"""Name (lower case, as on the command line) -> dataset class."""

__all__ = [
    "CVACT",
    "CVUSA",
    "DATASETS",
    "INTERPOLATION",
    "POLAR_SIZES",
    "VIGOR",
    "VIGORPose",
    "VIGOR_CITY_METRES_PER_PX",
    "CacheEntry",
    "CacheError",
    "CrossViewDataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DuplicatePair",
    "ImageDecodeError",
    "MissingDependencyError",
    "VIGORGallery",
    "find_exact_duplicates",
    "image_md5",
    "open_cache",
    "parse_pano_latlon",
    "parse_tile_latlon",
    "prepare_cache",
    "read_act_data",
    "read_cvusa_split",
]
