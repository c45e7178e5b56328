"""VIGOR for fine-grained pose: each panorama, one aerial tile that covers it and the camera's pixel.

Convention:

- ``ds[i]`` -> ``{"ground": (3, H, W) float32 in [0, 1], north-aligned as released (column W/2
  looks north), "aerial": (3, S, S) float32 in [0, 1], north up, "id": str, "camera_px": (2,)
  float64, "aerial_px": int (S, the side camera_px refers to), "heading": float32 scalar, "metres_per_px": float64 scalar, "city": str, "tile": int}``
  (``tile``: the returned tile's index in ``ds.gallery``). ``transforms`` receives that dict; a
  transform that flips, rotates or crops must update ``camera_px`` and ``heading`` itself.
- ``camera_px`` = (row, col), continuous, pixel centres at integers, the tile centre at
  ``c = (S - 1) / 2``: ``row = c + d0 * S / N`` and ``col = c - d1 * S / N``, with ``(d0, d1)`` the
  tile's label offset (VIGOR's sign: (tile centre - panorama) as (north, east) pixels, see
  :mod:`geo_bench.datasets.vigor`) and ``N`` the side in pixels of the tile *file* (640 for VIGOR,
  read from the file; VIGOR's 640 when only a ``prepare`` cache is there). The camera's (east,
  north) metres from the tile centre are ``((col - c), -(row - c)) * metres_per_px``.
- ``heading`` = 0.0: the bearing (degrees clockwise from north, as :mod:`geo_bench.metrics.pose`)
  of the panorama's centre column; VIGOR's panoramas are north-aligned (CCVPE ``datasets.py``: "0
  means heading North").
- ``metres_per_px`` is at the returned size: the city's metres per *label* pixel times ``N / S``.
  That scale is measured from the labels themselves: a label row names 4 tiles whose centres are
  known from their names, so (metric separation of two centres) / (difference of their offsets)
  is the metres per label pixel; the median over all rows of a city is taken per axis, and both
  axes must be positive (else the label file runs against VIGOR's sign convention:
  :class:`~geo_bench.datasets.errors.DatasetFormatError`) and agree within 2 %. When the fit is
  within 2 % of a published constant, the constant is used: CCVPE's per-city resolution
  (:data:`VIGOR_CITY_METRES_PER_PX`, ``train_VIGOR.py``) for the corrected labels, VIGOR's 0.114
  (:data:`~geo_bench.metrics.VIGOR_METERS_PER_PIXEL`) for the original ones; otherwise the fit is
  used (a synthetic folder written by :func:`~geo_bench.world.layouts.write_vigor`: its exact
  ground sampling distance). ``ds.protocol`` records the value and its source per city.
- SliceMatch's corrected labels do change the scale: they are true pixels of the tiles, whose
  resolution is CCVPE's per-city one (Web Mercator, zoom 20, 0.1008-0.1181 m/px), while the
  original labels converted metres with 0.114 m/px in every city. With ``labels="orig"``,
  ``camera_px * metres_per_px`` (0.114) reproduces the labelled GPS offset, but ``camera_px`` is not
  where the camera appears in the image (off by up to 13 % of the offset, in Seattle): use the
  corrected labels for pose, as CCVPE and FG^2 do (HC-Net recomputes the pixel from GPS with the
  same Web-Mercator geometry).
- ``positives_only=True``: the positive tile. ``positives_only=False`` (the ``train`` split only;
  CCVPE's ``pos_only=False``): one of the 4 covering tiles whose square holds the camera
  (``|d0|, |d1| < N / 2``), uniformly, drawn by ``numpy.random.default_rng((seed, index))``: the
  same tile for a panorama in every epoch.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from geo_retrieval.geodesy import VIGOR_EARTH_RADIUS_M

from ..metrics.vigor import VIGOR_METERS_PER_PIXEL
from .errors import DatasetFormatError
from .image_io import read_rgb, to_float
from .vigor import VIGOR

__all__ = ["VIGOR_CITY_METRES_PER_PX", "VIGORPose"]

#: CCVPE's ground resolution of VIGOR's 640-px tiles per city (``train_VIGOR.py``), metres per pixel:
#: the zoom-20 Web-Mercator resolution at each city's latitude; the scale of the corrected labels.
VIGOR_CITY_METRES_PER_PX: dict[str, float] = {
    "Chicago": 0.111262,
    "NewYork": 0.113248,
    "SanFrancisco": 0.118141,
    "Seattle": 0.100817,
}

_AGREE = 0.02  # relative tolerance: row vs column fit, and fit vs a published constant
_MIN_SEPARATION = 1.0  # metres and pixels: pairs of tiles closer than this along an axis do not count


class VIGORPose(VIGOR):
    """VIGOR queries for fine-grained pose (see the module docstring).

    Args:
        root, split, transforms, area, labels, labels_dir, ground_size, cache, cache_verify,
            on_missing: as for :class:`~geo_bench.datasets.VIGOR`.
        aerial_size: side S of the returned square tile (an int, a square (S, S), or None for the
            file's size); polar tiles are not offered.
        positives_only: return the positive tile (True) or one of the covering tiles (False,
            ``split="train"`` only).
        seed: seed of the tile choice when ``positives_only=False``.

    Raises:
        TypeError: ``positives_only`` is not a bool or ``seed`` not an int.
        ValueError: a negative ``seed``, a non-square ``aerial_size``, or ``positives_only=False``
            outside ``train``.
        DatasetFormatError: a label file whose offsets do not follow VIGOR's sign convention or
            disagree between rows and columns (names the file).

    Example:
        >>> ds = VIGORPose("data/VIGOR", "test", labels="corrected", labels_dir="splits__corrected",
        ...                aerial_size=512)  # doctest: +SKIP
        >>> s = ds[0]  # doctest: +SKIP
        >>> s["camera_px"], s["metres_per_px"]  # doctest: +SKIP

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "data",
        split: str = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        *,
        area: str = "same",
        labels: str = "orig",
        labels_dir: str | os.PathLike[str] | None = None,
        ground_size: Sequence[int] | int | str | None = (320, 640),
        aerial_size: Sequence[int] | int | str | None = (320, 320),
        positives_only: bool = True,
        seed: int = 0,
        cache: str | os.PathLike[str] | None = None,
        cache_verify: str = "lazy",
        on_missing: str = "raise",
    ) -> None:
        if not isinstance(positives_only, bool):
            raise TypeError(f"positives_only must be a bool, got {positives_only!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        super().__init__(
            root,
            split,
            transforms,
            area=area,
            labels=labels,
            labels_dir=labels_dir,
            ground_size=ground_size,
            aerial_size=aerial_size,
            polar=False,
            cache=cache,
            cache_verify=cache_verify,
            on_missing=on_missing,
        )
        if self.aerial_size is not None and self.aerial_size[0] != self.aerial_size[1]:
            raise ValueError(
                f"aerial_size must be square for pose (camera_px is in a north-up S x S tile), "
                f"got {tuple(self.aerial_size)}"
            )
        if not positives_only and split != "train":
            raise ValueError(
                f"positives_only=False draws one of the covering tiles, as CCVPE's training does; it is "
                f"for split='train' only, got split={split!r}"
            )
        self.positives_only = positives_only
        self.seed = seed
        self._tile_side: dict[int, int] = {}
        self.metres_per_label_px: dict[str, float] = {}
        self.metres_per_px_source: dict[str, str] = {}
        self._measure_scale()

    # -- the scale of the label pixels -------------------------------------------------------------
    def _measure_scale(self) -> None:
        cities = np.asarray(self.city)
        paths = dict(zip(self.cities, self.label_paths, strict=True))
        for city in self.cities:
            rows = np.flatnonzero(cities == city)
            if rows.size == 0:
                continue
            fit = self._fit_scale(city, rows, paths[city])
            if self.labels == "slicematch_corrected":
                const, name = VIGOR_CITY_METRES_PER_PX.get(city), "ccvpe_city_resolution"
            else:
                const, name = VIGOR_METERS_PER_PIXEL, "vigor_0.114"
            if const is not None and abs(fit / const - 1.0) <= _AGREE:
                self.metres_per_label_px[city], self.metres_per_px_source[city] = const, name
            else:
                self.metres_per_label_px[city], self.metres_per_px_source[city] = fit, "label_fit"

    def _fit_scale(self, city: str, rows: np.ndarray, path: str) -> float:
        """Metres per label pixel of one city: tile-centre separations over offset differences."""
        tiles = self._tiles[rows]  # (n, 4)
        off = self._offsets[rows]  # (n, 4, 2)
        ll = np.deg2rad(self.gallery_latlon[tiles])  # (n, 4, 2)
        a, b = np.triu_indices(4, k=1)
        north = (ll[:, b, 0] - ll[:, a, 0]) * VIGOR_EARTH_RADIUS_M
        east = (ll[:, b, 1] - ll[:, a, 1]) * VIGOR_EARTH_RADIUS_M * np.cos((ll[:, a, 0] + ll[:, b, 0]) / 2)
        # centre_b - centre_a = (offset_b - offset_a) * scale along each axis (VIGOR's sign)
        fits = []
        for axis, metres, pixels in (
            ("row", north, off[:, b, 0] - off[:, a, 0]),
            ("column", east, off[:, b, 1] - off[:, a, 1]),
        ):
            use = (np.abs(metres) > _MIN_SEPARATION) & (np.abs(pixels) > _MIN_SEPARATION)
            if not use.any():
                raise DatasetFormatError(
                    f"{path}: no label row of {city} names two tiles apart along the {axis}s, so the "
                    "offsets' metres per pixel cannot be measured",
                    path=Path(path),
                )
            fits.append(float(np.median(metres[use] / pixels[use])))
        row, col = fits
        for axis, value, rule in (("row (d0)", row, "row = c + d0"), ("column (d1)", col, "col = c - d1")):
            if value <= 0:
                raise DatasetFormatError(
                    f"{path}: the {axis} offsets of {city} run against VIGOR's sign convention (delta = "
                    f"tile centre - panorama, {rule}); measured {value:.4g} m per pixel. A folder written "
                    "by an older geo_bench write_vigor has the opposite column sign: write it again",
                    path=Path(path),
                )
        if abs(row / col - 1.0) > _AGREE:
            raise DatasetFormatError(
                f"{path}: the offsets of {city} have {row:.4g} m per pixel along rows but {col:.4g} along "
                "columns; VIGOR's tiles are square",
                path=Path(path),
            )
        return (row + col) / 2

    # -- samples -----------------------------------------------------------------------------------
    def _tile_px(self, j: int) -> int:
        """Side in pixels of gallery tile ``j``'s file (the unit of its offsets)."""
        side = self._tile_side.get(j)
        if side is None:
            path = self._gallery_paths[j]
            if not path.is_file():  # only a prepare cache: VIGOR's tiles
                assert self.native_aerial is not None
                side = self.native_aerial[1]
            else:
                try:
                    with Image.open(path) as img:
                        w, h = img.size
                except OSError:  # the loader's own message (ImageDecodeError naming file and tile)
                    w, h = read_rgb(path, sample=self.gallery_ids[j]).size
                if w != h:
                    raise DatasetFormatError(
                        f"aerial tile {path} is {w}x{h} (W x H); VIGOR's tiles are square", path=path
                    )
                side = w
            self._tile_side[j] = side
        return side

    def _choose(self, i: int) -> int:
        """Which of the 4 label tiles query ``i`` gets (0 = the positive)."""
        if self.positives_only:
            return 0
        off = np.abs(self._offsets[i])
        inside = [k for k in range(4) if off[k].max() < self._tile_px(int(self._tiles[i, k])) / 2]
        if not inside:
            return 0
        rng = np.random.default_rng((self.seed, i))
        return inside[int(rng.integers(len(inside)))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} {self.split} with {n} samples")
        i = i % n
        k = self._choose(i)
        j = int(self._tiles[i, k])
        aerial = to_float(self.load_view("aerial", j))
        size = int(aerial.shape[-1])
        scale = size / self._tile_px(j)
        c = (size - 1) / 2
        d0, d1 = (float(v) for v in self._offsets[i, k])
        city = self.city[i]
        sample: dict[str, Any] = {
            "ground": to_float(self.load_view("ground", i)),
            "aerial": aerial,
            "id": self.ids[i],
            "camera_px": torch.tensor([c + d0 * scale, c - d1 * scale], dtype=torch.float64),
            "aerial_px": size,
            "heading": torch.tensor(0.0, dtype=torch.float32),
            "metres_per_px": torch.tensor(self.metres_per_label_px[city] / scale, dtype=torch.float64),
            "city": city,
            "tile": j,
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    @property
    def protocol(self) -> dict[str, Any]:
        info = super().protocol
        info.update(
            {
                "task": "pose",
                "positives_only": self.positives_only,
                "pose_seed": self.seed,
                "metres_per_label_px": dict(self.metres_per_label_px),
                "metres_per_px_source": dict(self.metres_per_px_source),
                "camera_px": "(row, col), pixel centres at integers, tile centre (S-1)/2",
                "heading": "degrees clockwise from north of the panorama's centre column (0: north-aligned)",
            }
        )
        return info

    info = protocol
