"""VIGOR (Zhu et al., CVPR'21): panoramas in four US cities against a dense gallery of aerial tiles.

Convention:

- Official layout: ``<City>/panorama/``, ``<City>/satellite/``, ``splits/<City>/``.
- Query set != gallery. ``ds[i]`` is a *query* (a panorama) with its positive tile as ``"aerial"``;
  ``ds.gallery`` is a separate :class:`VIGORGallery` dataset of all reference tiles of the split
  (``ds.gallery[j]`` -> ``{"aerial", "id", "latlon", "city"}``). ``"positives"`` (1,) and
  ``"semi_positives"`` (3,) are long indices into ``ds.gallery``.
- Same-area (``area="same"``): queries and gallery from all four cities, queries from
  ``same_area_balanced_{train,test}.txt``; the gallery is every tile of the four cities for both
  splits. Cross-area (``area="cross"``): train = NewYork + Seattle, test = Chicago + SanFrancisco,
  queries from ``pano_label_balanced.txt`` and the gallery from those cities' tiles.
- Label columns (whitespace separated): 0 panorama, 1 positive tile, 2-3 its offset, 4/7/10 the
  semi-positive tiles each followed by 2 offset columns. ``"offset"`` (2,) and ``"semi_offsets"``
  (3, 2) are float64, in the file's column order and sign, in pixels of the original 640x640 tile
  (they are *not* rescaled with ``aerial_size``); ``ds.offsets`` holds all of them, (N, 4, 2).
- Offset sign (upstream): ``delta = (d0, d1)`` is (tile centre - panorama) as (north, east) pixels
  of the tile file, so the panorama lies at image ``(row, col) = (c + d0, c - d1)``, ``c`` the
  tile's centre, rows growing south and columns east. Sources: VIGOR's ``data/DATASET.md`` ("the
  GPS offset of each reference relative to the panorama") and ``evaluate_from_npy.py``
  (``prediction = centre - Lat_Lng(centre) * delta / 320``; plotted at ``(320 - delta[1],
  320 + delta[0])``); CCVPE ``datasets.py`` (Gaussian peak at row ``h/2 + row_offset``, column
  ``w/2 - col_offset``); HC-Net ``dataset.py`` (``x = S/2 - d1``, ``y = S/2 + d0``); SliceMatch
  ``utils/VIGOR_dataset.py`` (``(A/2 + d0, A/2 - d1)``).
- Offset scale: the released labels converted metres to pixels with one resolution for every
  city, 0.114 m/px (``Lat_Lng(distance=320 * 0.114)`` in ``evaluate_from_npy.py``). The tiles are
  zoom-20 Web-Mercator images whose resolution follows the latitude (CCVPE's per-city constants,
  0.100817 m/px in Seattle to 0.118141 m/px in San Francisco), so the original offsets place the
  camera off its pixel by up to 13 % of the offset (Seattle). SliceMatch's corrected labels
  ("based on an incorrect ground resolution") are true pixels of the tile (adjacent tiles, 36.5 m
  apart, are 322 px apart in NewYork and 361-363 px in Seattle).
  :class:`~geo_bench.datasets.vigor_pose.VIGORPose` turns the offsets into metres.
- Heading: the panoramas are north-aligned, column W/2 looks north (CCVPE ``datasets.py``: "0
  means heading North"; SliceMatch: the orientation is the clockwise angle from north to the
  image's centre line, 0 for the released panoramas).
- GPS from file names: panoramas ``<prefix>,<lat>,<lon>,.jpg``, tiles ``satellite_<lat>_<lon>.png``;
  ``"latlon"`` is float64 (lat, lon).
- Labels: ``labels="orig"`` (the released split files) or ``labels="corrected"`` (recorded as
  ``"slicematch_corrected"``): the query split files are read from ``labels_dir``, which mirrors
  ``splits/``: ``<labels_dir>/<City>/<file name>`` (``<stem>__corrected.txt`` is also accepted),
  in the same 13-column format. ``satellite_list.txt`` always comes from ``splits/``.
- Missing panoramas follow ``on_missing``; a missing gallery tile is always an error (the gallery
  indices of every label depend on it).
- Split files: a malformed row (too few columns, a non-numeric offset, an unknown tile, a file
  name without GPS) raises :class:`~geo_bench.datasets.errors.DatasetFormatError` naming the file
  and line. Exact repeats (a label row, a tile name) are dropped with one warning per file, so
  every query and gallery tile appears once; one panorama with two different label rows is refused.

VIGOR is released for academic use through a questionnaire; there is no ``download``.

.. versionadded:: 0.1
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .base import CrossViewDataset
from .errors import CacheError, DatasetFormatError, DatasetNotFoundError
from .image_io import to_float
from .splits import warn_repeats

__all__ = ["VIGOR", "VIGORGallery", "parse_pano_latlon", "parse_tile_latlon"]

CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
_CROSS = {"train": ("NewYork", "Seattle"), "test": ("Chicago", "SanFrancisco")}


def parse_pano_latlon(name: str) -> tuple[float, float]:
    """(lat, lon) from a panorama file name ``<prefix>,<lat>,<lon>,.jpg``."""
    parts = Path(name).name.split(",")
    try:
        return float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise ValueError(f"panorama name {name!r} is not '<prefix>,<lat>,<lon>,.jpg'") from None


def parse_tile_latlon(name: str) -> tuple[float, float]:
    """(lat, lon) from a tile file name ``satellite_<lat>_<lon>.png``."""
    stem = Path(name).name.rsplit(".", 1)[0]
    parts = stem.split("_")
    try:
        if parts[0] != "satellite":
            raise ValueError
        return float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise ValueError(f"tile name {name!r} is not 'satellite_<lat>_<lon>.png'") from None


def _parsed(
    parse: Callable[[str], tuple[float, float]], name: str, path: Path, lineno: int
) -> tuple[float, float]:
    """``parse(name)``, its ValueError re-raised as a DatasetFormatError naming ``path:lineno``."""
    try:
        return parse(name)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}:{lineno}: {exc}", path=path, line=lineno) from None


def _offset(cols: list[str], c: int, path: Path, lineno: int) -> float:
    """Column ``c`` (0-based) of a label row as a finite float offset in pixels."""
    try:
        value = float(cols[c])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DatasetFormatError(
            f"{path}:{lineno}: column {c + 1} (an offset in pixels) must be a number, got {cols[c]!r}",
            path=path,
            line=lineno,
        )
    return value


class VIGORGallery(Dataset):
    """The reference tiles of a :class:`VIGOR` split (built by it; use ``ds.gallery``).

    ``gallery[j]`` -> ``{"aerial": (3, h, w) float, "id": tile name without extension,
    "latlon": float64 (2,), "city": str}``; ``transforms`` (settable) gets that dict.

    .. versionadded:: 0.1
    """

    def __init__(self, parent: VIGOR) -> None:
        self._parent = parent
        self.transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @property
    def ids(self) -> list[str]:
        return self._parent.gallery_ids

    def __len__(self) -> int:
        return len(self._parent.gallery_ids)

    def __getitem__(self, j: int) -> dict[str, Any]:
        p = self._parent
        n = len(self)
        if not -n <= j < n:
            raise IndexError(f"gallery index {j} out of range ({n} tiles)")
        j = j % n
        sample = {
            "aerial": to_float(p.load_view("aerial", j)),
            "id": p.gallery_ids[j],
            "latlon": torch.from_numpy(p.gallery_latlon[j].copy()),
            "city": p.gallery_city[j],
        }
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


class VIGOR(CrossViewDataset):
    """VIGOR queries (panoramas) with a separate aerial gallery.

    Args:
        root: dataset root (``Chicago/``, ``NewYork/``, ``SanFrancisco/``, ``Seattle/``, ``splits/``).
        split: ``"train"`` or ``"test"``.
        transforms: callable on the whole query sample dict (``ds.gallery.transforms`` for tiles).
        area: ``"same"`` or ``"cross"`` (see the module docstring).
        labels: ``"orig"`` or ``"corrected"`` (needs ``labels_dir``).
        labels_dir: directory of corrected split files mirroring ``splits/``.
        ground_size: panorama output (H, W); default (320, 640) (TransGeo); None keeps 1024x2048.
        aerial_size: tile output (h, w); default (320, 320); None keeps 640x640.
        polar, polar_center: as for :class:`~geo_bench.datasets.CVUSA`, from the 640x640 tile.
        cache, cache_verify: as for CVUSA; the cache's ``aerial`` array is the gallery.
        on_missing: ``"raise"`` or ``"skip"`` queries whose panorama is missing.

    Sample keys: ``ground``, ``aerial`` (the positive tile), ``id`` (panorama name without
    ``.jpg``), ``latlon`` float64 (2,), ``positives`` long (1,), ``semi_positives`` long (3,),
    ``offset`` float64 (2,), ``semi_offsets`` float64 (3, 2), ``city`` str.

    .. versionadded:: 0.1
    """

    name: ClassVar[str] = "VIGOR"
    splits: ClassVar[tuple[str, ...]] = ("train", "test")
    native_ground: ClassVar[tuple[int, int] | None] = (1024, 2048)
    native_aerial: ClassVar[tuple[int, int] | None] = (640, 640)
    layout: ClassVar[str] = """\
  <root>/<City>/panorama/<prefix>,<lat>,<lon>,.jpg     City in Chicago, NewYork, SanFrancisco, Seattle
  <root>/<City>/satellite/satellite_<lat>_<lon>.png
  <root>/splits/<City>/satellite_list.txt
  <root>/splits/<City>/same_area_balanced_train.txt, same_area_balanced_test.txt
  <root>/splits/<City>/pano_label_balanced.txt"""

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
        polar: bool | str | Sequence[int] | None = False,
        polar_center: str = "safa",
        cache: str | os.PathLike[str] | None = None,
        cache_verify: str = "lazy",
        on_missing: str = "raise",
    ) -> None:
        self._init_common(root, split, transforms, ground_size, aerial_size, polar, polar_center, on_missing)
        if area not in ("same", "cross"):
            raise ValueError(f"area must be 'same' or 'cross', got {area!r}")
        if labels not in ("orig", "corrected"):
            raise ValueError(f"labels must be 'orig' or 'corrected', got {labels!r}")
        if labels == "corrected":
            if labels_dir is None:
                raise ValueError(
                    "labels='corrected' needs labels_dir= (the directory of corrected split files)"
                )
            self.labels_dir: Path | None = Path(labels_dir)
            if not self.labels_dir.is_dir():
                raise FileNotFoundError(f"VIGOR labels_dir not found: {str(self.labels_dir)!r}")
        elif labels_dir is not None:
            raise ValueError("labels_dir is only used with labels='corrected'")
        else:
            self.labels_dir = None
        self.area = area
        self.labels = "orig" if labels == "orig" else "slicematch_corrected"
        self.cities = CITIES if area == "same" else _CROSS[split]
        self.label_file = f"same_area_balanced_{split}.txt" if area == "same" else "pano_label_balanced.txt"

        # gallery: the tiles of the cities, in city order then satellite_list.txt order
        self.gallery_ids: list[str] = []
        self.gallery_city: list[str] = []
        self._gallery_paths: list[Path] = []
        index: dict[tuple[str, str], int] = {}
        latlon: list[tuple[float, float]] = []
        for city in self.cities:
            if cache is None:  # with a cache the images are not needed
                self._require(self.root / city, f"city folder {city}")
            lst = self._require(self.root / "splits" / city / "satellite_list.txt", "tile list")
            first_line: dict[str, int] = {}
            repeats: list[tuple[int, int, str]] = []
            for lineno, line in enumerate(lst.read_text().splitlines(), 1):
                for name in line.split():
                    if name in first_line:  # a repeat would be a second, identical gallery item
                        repeats.append((lineno, first_line[name], name))
                        continue
                    first_line[name] = lineno
                    latlon.append(_parsed(parse_tile_latlon, name, lst, lineno))
                    index[(city, name)] = len(self._gallery_paths)
                    self._gallery_paths.append(self.root / city / "satellite" / name)
                    self.gallery_ids.append(name.rsplit(".", 1)[0])
                    self.gallery_city.append(city)
            warn_repeats(lst, repeats, "tile name")
        self.gallery_latlon = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)

        # queries
        names: list[str] = []
        cities: list[str] = []
        pos: list[list[int]] = []
        offs: list[list[float]] = []
        pano_latlon: list[tuple[float, float]] = []
        self.label_paths: list[str] = []
        for city in self.cities:
            path = self._label_path(city)
            self.label_paths.append(str(path))
            labelled: dict[str, tuple[int, tuple[Any, ...]]] = {}  # panorama -> (line, its label)
            repeats = []
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                cols = line.split()
                if not cols:
                    continue
                if len(cols) < 13:
                    raise DatasetFormatError(
                        f"{path}:{lineno}: expected 13 columns (pano, 4 x (tile, dx, dy)), got {len(cols)}",
                        path=path,
                        line=lineno,
                    )
                try:
                    tiles = [index[(city, cols[c])] for c in (1, 4, 7, 10)]
                except KeyError as exc:
                    raise DatasetFormatError(
                        f"{path}:{lineno}: tile {exc.args[0][1]!r} is not in splits/{city}/satellite_list.txt",
                        path=path,
                        line=lineno,
                    ) from None
                offsets = [_offset(cols, c, path, lineno) for c in (2, 3, 5, 6, 8, 9, 11, 12)]
                label = (tuple(tiles), tuple(offsets))
                if cols[0] in labelled:
                    first, other = labelled[cols[0]]
                    if other != label:
                        raise DatasetFormatError(
                            f"{path}:{lineno}: panorama {cols[0]!r} is already labelled on line {first} with "
                            "other tiles or offsets; each panorama must have one label row",
                            path=path,
                            line=lineno,
                        )
                    repeats.append((lineno, first, cols[0]))
                    continue
                labelled[cols[0]] = (lineno, label)
                pano_latlon.append(_parsed(parse_pano_latlon, cols[0], path, lineno))
                names.append(cols[0])
                cities.append(city)
                pos.append(tiles)
                offs.append(offsets)
            warn_repeats(path, repeats)
        all_ids = [n.rsplit(".", 1)[0] for n in names]

        keep = self._select(
            all_ids, lambda i: [self.root / cities[i] / "panorama" / names[i]], cache, cache_verify
        )
        if self._cache is None:
            absent = [p for p in self._gallery_paths if not p.is_file()]
            if absent:
                raise DatasetNotFoundError(
                    self.name,
                    self.root,
                    absent[0],
                    self.layout,
                    f"{len(absent)} gallery tile(s) listed in satellite_list.txt are missing",
                )
        elif self._cache.ids("aerial") != self.gallery_ids:
            raise CacheError(f"cache {self._cache.path}: the cached gallery differs from satellite_list.txt")
        self.ids = [all_ids[k] for k in keep]
        self.pano_names = [names[k] for k in keep]
        self.city = [cities[k] for k in keep]
        self._tiles = np.asarray([pos[k] for k in keep], dtype=np.int64).reshape(-1, 4)
        self._offsets = np.asarray([offs[k] for k in keep], dtype=np.float64).reshape(-1, 4, 2)
        self.latlon = np.asarray([pano_latlon[k] for k in keep], dtype=np.float64).reshape(-1, 2)
        self.gallery = VIGORGallery(self)

    def _label_path(self, city: str) -> Path:
        if self.labels_dir is None:
            return self._require(self.root / "splits" / city / self.label_file, "label file")
        cand = [
            self.labels_dir / city / self.label_file,
            self.labels_dir / city / self.label_file.replace(".txt", "__corrected.txt"),
        ]
        for c in cand:
            if c.is_file():
                return c
        raise FileNotFoundError(f"corrected VIGOR labels not found: looked for {[str(c) for c in cand]}")

    def _config(self) -> dict[str, Any]:
        return {"area": self.area, "labels": self.labels, "cities": list(self.cities)}

    def view_ids(self) -> dict[str, list[str]]:
        return {"ground": list(self.ids), "aerial": list(self.gallery_ids)}

    def _ground_path(self, i: int) -> Path:
        return self.root / self.city[i] / "panorama" / self.pano_names[i]

    def _item_id(self, view: str, i: int) -> str:
        return self.gallery_ids[i] if view == "aerial" else self.ids[i]

    def _aerial_path(self, j: int) -> Path:
        return self._gallery_paths[j]

    def aerial(self, j: int) -> Tensor:
        """Gallery tile ``j`` as (3, h, w) float in [0, 1] (same as ``ds.gallery[j]["aerial"]``)."""
        return to_float(self.load_view("aerial", j))

    def _query_aerial(self, i: int) -> Tensor:
        return self.load_view("aerial", int(self._tiles[i, 0]))

    def _extra(self, i: int) -> dict[str, Any]:
        return {
            "latlon": torch.from_numpy(self.latlon[i].copy()),
            "positives": torch.from_numpy(self._tiles[i, :1].copy()),
            "semi_positives": torch.from_numpy(self._tiles[i, 1:].copy()),
            "offset": torch.from_numpy(self._offsets[i, 0].copy()),
            "semi_offsets": torch.from_numpy(self._offsets[i, 1:].copy()),
            "city": self.city[i],
        }

    @property
    def positives(self) -> Tensor:
        """(N,) long: the positive gallery index of every query (the explicit gt index)."""
        return torch.from_numpy(self._tiles[:, 0].copy())

    @property
    def semi_positives(self) -> Tensor:
        """(N, 3) long: the semi-positive gallery indices of every query."""
        return torch.from_numpy(self._tiles[:, 1:].copy())

    @property
    def offsets(self) -> np.ndarray:
        """(N, 4, 2) float64: the label offsets (d0, d1) of the positive and the 3 semi-positives,
        in pixels of the tile files (see the module docstring for their sign and scale); a copy."""
        return self._offsets.copy()

    @property
    def protocol(self) -> dict[str, Any]:
        info = super().protocol
        info["vigor_labels"] = self.labels
        info["label_files"] = [Path(p).name for p in self.label_paths]
        return info

    info = protocol
