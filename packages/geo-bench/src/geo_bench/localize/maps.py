"""Georeferenced rasters (orthophotos) cut into square tiles on a metric grid, read window by window.

Convention:
    - A map is a georeferenced raster (GeoTIFF or anything GDAL reads) with at least 3 bands (the
      first three are read as RGB, uint8 or scaled from the band's data type range), a CRS and an
      affine geotransform. The whole mosaic is never read: each tile is one windowed read, resampled
      by GDAL (bilinear) to ``px x px``.
    - Tiling happens in a **metric CRS** (:attr:`MapGrid.crs`): the maps' own CRS when it is
      projected (metres), else (a geographic CRS such as EPSG:4326) the WGS84 UTM zone of the first
      map's centre, read through a GDAL warped view (``WarpedVRT``, bilinear). Every map of one index
      must share one CRS: maps in different CRSs are refused (reproject them first, e.g.
      ``gdalwarp -t_srs EPSG:32613 in.tif out.tif``) rather than silently mixed.
    - Tiles are squares of ``tile_m`` metres, north up (row 0 = north edge, column 0 = west edge,
      as the world's aerial tiles), whose centres lie on a grid of step ``stride_m`` starting
      ``tile_m / 2`` inside the map's west / north edges; only tiles entirely inside a map are kept.
      Order: map by map, then north to south, then west to east.
    - Positions: ``xy`` = (easting, northing) metres in :attr:`MapGrid.crs` (x first);
      ``latlon`` = (lat, lon) degrees WGS84 (EPSG:4326), **latitude first**. pyproj is always used
      with ``always_xy=True`` internally (lon, lat) and the result reordered.

rasterio and pyproj are optional: ``pip install 'geo-bench[map]'``.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from geo_transforms.errors import MissingDependencyError

__all__ = [
    "MapGrid",
    "MapInfo",
    "TileFolder",
    "TileReader",
    "file_sha256",
    "from_latlon",
    "import_pyproj",
    "import_rasterio",
    "open_maps",
    "open_tile_folder",
    "plan_tiles",
    "read_tiles",
    "to_latlon",
    "utm_crs_for",
]

_HINT = "pip install 'geo-bench[map]' (rasterio and pyproj)"


def import_rasterio() -> ModuleType:
    """Import rasterio lazily, with the install hint when it is missing."""
    try:
        import rasterio
        import rasterio.vrt
        import rasterio.windows
    except ImportError as err:
        raise MissingDependencyError(f"reading and writing map rasters needs rasterio: {_HINT}") from err
    return rasterio


def import_pyproj() -> ModuleType:
    """Import pyproj lazily, with the install hint when it is missing."""
    try:
        import pyproj
    except ImportError as err:
        raise MissingDependencyError(f"map coordinates need pyproj: {_HINT}") from err
    return pyproj


def file_sha256(path: str | Path, block: int = 1 << 22) -> str:
    """Hex sha256 of a file, streamed in 4 MiB blocks (memory bounded for any mosaic)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def utm_crs_for(lat: float, lon: float) -> str:
    """``"EPSG:326zz"`` (north) or ``"EPSG:327zz"`` (south): the WGS84 UTM zone holding (lat, lon) degrees."""
    zone = min(60, max(1, int((lon + 180.0) // 6) + 1))
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def to_latlon(xy: np.ndarray, crs: str) -> np.ndarray:
    """(N, 2) (x, y) in ``crs`` -> (N, 2) float64 (lat, lon) degrees WGS84 (latitude first)."""
    pyproj = import_pyproj()
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    t = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = t.transform(xy[:, 0], xy[:, 1])
    return np.stack([np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)], axis=1)


def from_latlon(latlon: np.ndarray, crs: str) -> np.ndarray:
    """(N, 2) (lat, lon) degrees WGS84 -> (N, 2) float64 (x, y) in ``crs``."""
    pyproj = import_pyproj()
    ll = np.asarray(latlon, dtype=np.float64).reshape(-1, 2)
    t = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x, y = t.transform(ll[:, 1], ll[:, 0])
    return np.stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)], axis=1)


@dataclass(frozen=True)
class MapInfo:
    """One map raster as the index records it.

    Attributes:
        path: the file (absolute).
        sha256: hex digest of the file.
        crs: the raster's own CRS (``"EPSG:n"`` when it has one, else WKT).
        bounds: (west, south, east, north) in :attr:`MapGrid.crs` metres.
        size: (height, width) pixels of the raster.
    """

    path: str
    sha256: str
    crs: str
    bounds: tuple[float, float, float, float]
    size: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "crs": self.crs,
            "bounds": list(self.bounds),
            "size": list(self.size),
        }


@dataclass(frozen=True)
class MapGrid:
    """Maps of one index and the metric CRS they are tiled in.

    Attributes:
        maps: the rasters.
        crs: the metric tiling CRS (``"EPSG:n"`` or WKT).
        warped: True when the maps are read through a warped view (geographic source CRS).
    """

    maps: tuple[MapInfo, ...]
    crs: str
    warped: bool


def _crs_name(crs: Any) -> str:
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def open_maps(paths: list[str | Path], *, hash_files: bool = True) -> MapGrid:
    """Check the map files and describe them (nothing but metadata is read; the hash streams the file).

    Raises:
        FileNotFoundError: a map does not exist (names it).
        ValueError: a map without a CRS or geotransform, with fewer than 3 bands, not metric and not
            geographic, or maps whose CRSs differ (names both files and CRSs).
        OSError: GDAL cannot open the file (names it).
    """
    rasterio = import_rasterio()
    if not paths:
        raise ValueError("give at least one map (--map ORTHO.tif)")
    infos: list[tuple[Path, Any, Any, tuple[int, int]]] = []
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise FileNotFoundError(f"map {path} does not exist")
        try:
            with rasterio.open(path) as src:
                crs, bounds, shape, count = src.crs, src.bounds, (src.height, src.width), src.count
                identity = src.transform.is_identity
        except rasterio.errors.RasterioIOError as err:
            raise OSError(f"map {path}: GDAL cannot read it ({err})") from None
        if crs is None:
            raise ValueError(
                f"map {path} has no CRS (not georeferenced); assign one, e.g. "
                "gdal_edit.py -a_srs EPSG:32613 FILE"
            )
        if identity:
            raise ValueError(
                f"map {path} has no geotransform (pixel coordinates only); georeference it first"
            )
        if count < 3:
            raise ValueError(f"map {path} has {count} band(s); an RGB orthophoto (3 bands) is needed")
        if not (crs.is_projected or crs.is_geographic):
            raise ValueError(f"map {path}: CRS {_crs_name(crs)} is neither projected nor geographic")
        if crs.is_projected and abs(crs.linear_units_factor[1] - 1.0) > 1e-9:
            raise ValueError(
                f"map {path}: CRS {_crs_name(crs)} is in {crs.linear_units}, not metres; "
                "reproject it to a metric CRS (e.g. its UTM zone)"
            )
        infos.append((path, crs, bounds, shape))
    first_path, first_crs = infos[0][0], infos[0][1]
    for path, crs, _, _ in infos[1:]:
        if crs != first_crs:
            raise ValueError(
                f"maps {first_path} ({_crs_name(first_crs)}) and {path} ({_crs_name(crs)}) are in "
                "different CRSs; one index takes maps of one CRS: reproject them first "
                f"(gdalwarp -t_srs {_crs_name(first_crs)} IN OUT)"
            )
    warped = bool(first_crs.is_geographic)
    if warped:
        b = infos[0][2]
        lon, lat = (b.left + b.right) / 2, (b.bottom + b.top) / 2
        if first_crs.to_epsg() != 4326:
            lat, lon = to_latlon(np.array([[lon, lat]]), _crs_name(first_crs))[0]
        grid_crs = utm_crs_for(float(lat), float(lon))
    else:
        grid_crs = _crs_name(first_crs)
    maps = []
    for path, crs, bounds, shape in infos:
        if warped:
            from rasterio.warp import transform_bounds  # optional dependency (the `map` extra)

            bounds = transform_bounds(crs, grid_crs, *bounds, densify_pts=21)
        west, south, east, north = (float(v) for v in bounds)
        maps.append(
            MapInfo(
                str(path.resolve()),
                file_sha256(path) if hash_files else "",
                _crs_name(crs),
                (west, south, east, north),
                (int(shape[0]), int(shape[1])),
            )
        )
    return MapGrid(tuple(maps), grid_crs, warped)


def plan_tiles(grid: MapGrid, tile_m: float, stride_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Tile centres of every map (see the module Convention).

    Returns:
        ``(xy, map_index)``: (N, 2) float64 (easting, northing) centres in ``grid.crs`` and (N,)
        int64 index of the map each tile is read from.
    """
    if not tile_m > 0 or not stride_m > 0:
        raise ValueError(f"tile_m and stride_m must be positive metres, got {tile_m} and {stride_m}")
    xs_all, idx_all = [], []
    for k, m in enumerate(grid.maps):
        west, south, east, north = m.bounds
        # a relative tolerance so a map exactly n tiles wide keeps its last tile despite rounding
        eps = 1e-6 * max(1.0, tile_m)
        nx = int(np.floor((east - west - tile_m + eps) / stride_m)) + 1
        ny = int(np.floor((north - south - tile_m + eps) / stride_m)) + 1
        if nx < 1 or ny < 1:
            continue
        cx = west + tile_m / 2 + stride_m * np.arange(nx)
        cy = north - tile_m / 2 - stride_m * np.arange(ny)
        xx, yy = np.meshgrid(cx, cy, indexing="xy")  # rows north -> south, columns west -> east
        xs_all.append(np.stack([xx.ravel(), yy.ravel()], axis=1))
        idx_all.append(np.full(nx * ny, k, dtype=np.int64))
    if not xs_all:
        sizes = ", ".join(
            f"{Path(m.path).name} {m.bounds[2] - m.bounds[0]:.0f} x {m.bounds[3] - m.bounds[1]:.0f} m"
            for m in grid.maps
        )
        raise ValueError(f"no {tile_m:g} m tile fits inside the maps ({sizes})")
    return np.concatenate(xs_all), np.concatenate(idx_all)


class TileReader:
    """Windowed tile reads from the maps of a :class:`MapGrid` (open files kept until :meth:`close`).

    ``read(xy, map_index, tile_m, px)`` returns (B, 3, px, px) uint8 tiles, north up. GDAL's block
    cache is capped at ``cache_mb`` MiB while the reader is open (GDAL's own default is 5 % of the
    machine's memory), so reading many large maps stays memory bounded.
    """

    def __init__(self, grid: MapGrid, *, cache_mb: int = 256) -> None:
        self._rasterio = import_rasterio()
        self.grid = grid
        self._open: dict[int, tuple[Any, Any]] = {}
        self._env = self._rasterio.Env(GDAL_CACHEMAX=int(cache_mb) * 2**20)
        self._env.__enter__()

    def _dataset(self, k: int) -> Any:
        if k not in self._open:
            src = self._rasterio.open(self.grid.maps[k].path)
            view = src
            if self.grid.warped:
                from rasterio.enums import Resampling  # optional dependency (the `map` extra)

                view = self._rasterio.vrt.WarpedVRT(src, crs=self.grid.crs, resampling=Resampling.bilinear)
            self._open[k] = (src, view)
        return self._open[k][1]

    def read(self, xy: np.ndarray, map_index: np.ndarray, tile_m: float, px: int) -> np.ndarray:
        # optional dependency (the `map` extra)
        from rasterio.enums import Resampling
        from rasterio.windows import from_bounds

        out = np.empty((len(xy), 3, px, px), dtype=np.uint8)
        half = tile_m / 2
        for j, ((x, y), k) in enumerate(zip(xy.tolist(), map_index.tolist())):
            ds = self._dataset(int(k))
            win = from_bounds(x - half, y - half, x + half, y + half, transform=ds.transform)
            arr = ds.read(
                indexes=[1, 2, 3], window=win, out_shape=(3, px, px), resampling=Resampling.bilinear
            )
            out[j] = _to_uint8(arr, ds.dtypes[0])
        return out

    def close(self) -> None:
        for src, view in self._open.values():
            if view is not src:
                view.close()
            src.close()
        self._open.clear()
        if self._env is not None:
            self._env.__exit__(None, None, None)
            self._env = None

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _to_uint8(arr: np.ndarray, dtype: str) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        top = float(np.iinfo(np.dtype(dtype)).max)
        return np.clip(np.round(arr.astype(np.float64) / top * 255), 0, 255).astype(np.uint8)
    # floating rasters: [0, 1] reflectance-like values
    return np.clip(np.round(arr.astype(np.float64) * 255), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class TileFolder:
    """Pre-cut tiles: image files listed in a CSV with their centres.

    The CSV has a header with ``file`` (relative to the CSV's folder, or absolute), ``lat`` and
    ``lon`` (WGS84 degrees, the tile centre); every image is a north-up square of the declared tile
    width. Centres are projected to the WGS84 UTM zone of the first tile (:attr:`crs`).

    Attributes:
        csv: the CSV (absolute). sha256: its digest. files: the image paths.
        latlon: (N, 2) lat, lon degrees. xy: (N, 2) easting, northing in ``crs``. crs: ``"EPSG:326zz"``.
    """

    csv: str
    sha256: str
    files: tuple[str, ...]
    latlon: np.ndarray
    xy: np.ndarray
    crs: str

    def read(self, start: int, end: int, px: int) -> np.ndarray:
        """Tiles ``start .. end`` as (B, 3, px, px) uint8 (Pillow bilinear, antialiased on downscale)."""
        out = np.empty((end - start, 3, px, px), dtype=np.uint8)
        for j, f in enumerate(self.files[start:end]):
            try:
                with Image.open(f) as im:
                    if im.width != im.height:
                        raise ValueError(
                            f"tile {f} is {im.width}x{im.height}; tiles must be square (north up)"
                        )
                    arr = np.asarray(
                        im.convert("RGB").resize((px, px), Image.Resampling.BILINEAR), dtype=np.uint8
                    )
            except FileNotFoundError:
                raise FileNotFoundError(f"tile {f} listed in {self.csv} does not exist") from None
            except (UnidentifiedImageError, OSError) as exc:
                raise OSError(f"tile {f} cannot be decoded ({exc})") from None
            out[j] = arr.transpose(2, 0, 1)
        return out


def open_tile_folder(csv_path: str | Path) -> TileFolder:
    """Read a tile CSV (see :class:`TileFolder`); checks the columns and that every file exists."""
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"--tiles {path} does not exist")
    files, ll = [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"file", "lat", "lon"} <= set(reader.fieldnames or []):
            raise ValueError(f"--tiles {path} needs a header with file, lat, lon; got {reader.fieldnames}")
        for i, row in enumerate(reader, start=2):
            try:
                ll.append((float(row["lat"]), float(row["lon"])))
            except (TypeError, ValueError):
                raise ValueError(f"--tiles {path} line {i}: lat/lon are not numbers ({row})") from None
            f = Path(row["file"])
            f = f if f.is_absolute() else path.parent / f
            if not f.is_file():
                raise FileNotFoundError(f"tile {f} listed in {path} (line {i}) does not exist")
            files.append(str(f.resolve()))
    if not files:
        raise ValueError(f"--tiles {path} lists no tiles")
    latlon = np.asarray(ll, dtype=np.float64)
    crs = utm_crs_for(float(latlon[0, 0]), float(latlon[0, 1]))
    return TileFolder(
        str(path.resolve()), file_sha256(path), tuple(files), latlon, from_latlon(latlon, crs), crs
    )


def read_tiles(grid: MapGrid, xy: np.ndarray, map_index: np.ndarray, tile_m: float, px: int) -> np.ndarray:
    """One-shot convenience around :class:`TileReader`: (B, 3, px, px) uint8 tiles centred on ``xy``."""
    with TileReader(grid) as reader:
        return reader.read(
            np.asarray(xy, dtype=np.float64).reshape(-1, 2), np.asarray(map_index).reshape(-1), tile_m, px
        )
