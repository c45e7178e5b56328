"""Write the synthetic world to disk in the exact CVUSA, CVACT and VIGOR layouts.

What each writer produces is what the real loaders (:mod:`geo_bench.datasets`) read; see
``docs/protocols.md`` (sections #cvusa, #cvact, #vigor) for the real layouts.

- **CVUSA**: ``bingmap/19/<id>.jpg`` (aerial), ``streetview/panos/<id>.jpg`` (north-centred
  panorama, band ``elevation``), ``streetview/annotations/<id>.png`` (colour labels, see
  :data:`~geo_bench.world.city.PALETTE`), ``splits/train-19zl.csv`` and ``splits/val-19zl.csv``
  (headerless, 3 relative paths), ``split_locations/all.csv`` (sat_lat, sat_long, ground_lat,
  ground_long, yaw; row ``id - 1``). Ids are 7-digit, 1-based: train first, then test (val-19zl is
  CVUSA's test set). ``--num`` pairs are split 80 / 20.
- **CVACT**: ``ACT_data.mat`` with ``panoIds`` (22-character strings), ``utm`` (N, 2) float64,
  ``trainSet.trainInd``, ``valSet.valInd``, ``valSetAll.valInd`` (1-based column vectors; each
  struct's field #0 is the count, field #1 the index vector, so positional readers work too);
  ``ANU_data_small/{streetview,satview_polish}/`` for train + val and ``ANU_data_test/`` for test.
  Panoramas are full spheres (H = W / 2, elevation -90..90) so the usual middle-half crop gives
  the +-45 degree band. ``--num`` is split 60 / 15 / 25.
- **VIGOR**: one district per city (``Chicago``, ``NewYork``, ``SanFrancisco``, ``Seattle``),
  ``<City>/panorama/<prefix>,<lat>,<lon>,.jpg`` (full sphere), ``<City>/satellite/satellite_<lat>_<lon>.png``
  on a regular grid with spacing half a tile (so 4 tiles cover every point), and
  ``splits/<City>/{satellite_list.txt, pano_label_balanced.txt, same_area_balanced_train.txt,
  same_area_balanced_test.txt}``. Label rows: panorama, positive tile (the one whose centre
  quarter holds the panorama) and its offset, then the 3 semi-positives each with its offset.
  Offsets follow real VIGOR's label columns (``geo_bench.datasets.vigor``): ``(d0, d1)`` = (tile
  centre - panorama) as (north, east) pixels of the written tile, i.e. ``d0 = -dy / gsd`` and
  ``d1 = -dx / gsd`` with ``(dx, dy)`` the panorama's (east, north) metres from the tile centre, so
  the panorama lies at image ``(row, col) = (c + d0, c - d1)``, ``c`` the centre pixel (VIGOR's
  ``evaluate_from_npy.py``, CCVPE, HC-Net, SliceMatch). ``--num`` panoramas per city, split 50 / 50
  for the same-area files.

- **map** (localisation, ``geo-bench index`` / ``locate``): ``map.tif``, a georeferenced RGB
  orthophoto GeoTIFF (uint8, tiled 256 x 256, deflate) of a ``map_m`` x ``map_m`` square of district
  0 (east edge on the district's east edge, centred north-south, so it holds the test stripe),
  north up, in the WGS84 UTM zone of ``CityConfig.origin_latlon`` (EPSG:326zz / 327zz) at the
  ground sampling distance ``render.gsd`` (``aerial_m / aerial_size``); rendered block by block
  (256 px) from the aerial capture (no per-tile photometric draw, so there are no seams);
  ``queries/<id>.jpg`` panoramas (``render.ground_size``, north-centred unless ``yaw="random"``)
  of ``num`` cameras of ``split`` lying at least ``aerial_m / 2`` inside the map; ``truth.csv``
  (``id, file, lat, lon, utm_e, utm_n, heading``: lat/lon WGS84 degrees, UTM metres in the map's
  CRS, heading = the panorama's yaw in degrees) and ``map.json`` (CRS, bounds, gsd, seed). For this
  layout the world's metric frame is placed on the real UTM grid (``origin_utm`` = the UTM
  coordinates of ``origin_latlon``), and lat/lon are pyproj's, so map, truth and index agree.
  Needs ``pip install 'geo-bench[map]'``.

Images are rendered and written in chunks (``chunk`` samples at a time), so memory stays
bounded for any ``num``; districts are generated one at a time.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from geo_bench.localize.maps import from_latlon, import_rasterio, to_latlon, utm_crs_for
from geo_retrieval.geodesy import equirectangular_to_latlon

from .appearance import AppearanceConfig, photometric
from .city import PALETTE, CityConfig
from .dataset import RenderConfig, SyntheticWorld, _mix
from .render_aerial import render_aerial

__all__ = [
    "LAYOUTS",
    "VIGOR_CITIES",
    "write_cvact",
    "write_cvusa",
    "write_layout",
    "write_map",
    "write_vigor",
]

log = logging.getLogger(__name__)

LAYOUTS = ("cvusa", "cvact", "vigor", "map")
VIGOR_CITIES = ("Chicago", "NewYork", "SanFrancisco", "Seattle")
#: where each synthetic VIGOR city is placed (lat, lon of its district's south-west corner)
CITY_ORIGINS = {
    "Chicago": (41.8700, -87.6500),
    "NewYork": (40.7400, -74.0000),
    "SanFrancisco": (37.7700, -122.4300),
    "Seattle": (47.6000, -122.3400),
}


def _to_uint8(img: Tensor) -> np.ndarray:
    """(3, H, W) float [0, 1] -> (H, W, 3) uint8."""
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _save(img: Tensor, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(_to_uint8(img))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=quality)
    else:
        image.save(path)


def _save_labels(seg: Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(PALETTE[seg].numpy()).save(path)


def _chunks(n: int, size: int) -> Iterator[list[int]]:
    for start in range(0, n, size):
        yield list(range(start, min(n, start + size)))


def _render(
    ds: SyntheticWorld, chunk: int, desc: str, progress: bool
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (index, sample dict) in chunks, with a progress bar."""
    with tqdm(total=len(ds), desc=desc, unit="pair", disable=not progress) as bar:
        for idx in _chunks(len(ds), chunk):
            batch = ds.render_batch(idx)
            for j, i in enumerate(idx):
                yield i, {k: (v[j] if isinstance(v, (Tensor, list)) else v) for k, v in batch.items()}
            bar.update(len(idx))


def _world(
    split: str,
    num: int,
    seed: int,
    *,
    render: RenderConfig,
    city: CityConfig | None,
    appearance: AppearanceConfig | None,
    split_fractions: tuple[float, float, float] | None = None,
) -> SyntheticWorld:
    extra: dict[str, Any] = {} if split_fractions is None else {"split_fractions": split_fractions}
    return SyntheticWorld(split, num, seed, render=render, city=city, appearance=appearance, **extra)


def write_cvusa(
    out: str | Path,
    num: int,
    seed: int = 0,
    *,
    render: RenderConfig | None = None,
    city: CityConfig | None = None,
    appearance: AppearanceConfig | None = None,
    split_fractions: tuple[float, float, float] | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``num`` pairs in the CVUSA layout (80 % train-19zl, 20 % val-19zl). Returns split sizes."""
    out = Path(out)
    render = render or RenderConfig()
    quality = (appearance or AppearanceConfig()).jpeg_quality
    n_train = max(1, round(0.8 * num))
    n_test = max(1, num - n_train)
    (out / "splits").mkdir(parents=True, exist_ok=True)
    (out / "split_locations").mkdir(parents=True, exist_ok=True)
    gps_rows: list[list[str]] = []
    next_id = 1
    for split, n, csv_name in (("train", n_train, "train-19zl.csv"), ("test", n_test, "val-19zl.csv")):
        ds = _world(
            split, n, seed, render=render, city=city, appearance=appearance, split_fractions=split_fractions
        )
        cfg = ds.city_config
        rows = []
        for i, s in _render(ds, chunk, f"cvusa {split}", progress):
            sid = f"{next_id + i:07d}"
            a, p, q = (
                f"bingmap/19/{sid}.jpg",
                f"streetview/panos/{sid}.jpg",
                f"streetview/annotations/{sid}.png",
            )
            _save(s["aerial"], out / a, quality)
            _save(s["ground"], out / p, quality)
            _save_labels(s["ground_seg"], out / q)
            rows.append(f"{a},{p},{q}")
            sat = equirectangular_to_latlon(s["aerial_utm"], cfg.origin_utm, cfg.origin_latlon)
            gps_rows.append(
                [
                    f"{sat[0]:.8f}",
                    f"{sat[1]:.8f}",
                    f"{s['latlon'][0]:.8f}",
                    f"{s['latlon'][1]:.8f}",
                    f"{float(s['yaw']):.1f}",
                ]
            )
        (out / "splits" / csv_name).write_text("\n".join(rows) + "\n")
        next_id += n
    with open(out / "split_locations" / "all.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(gps_rows)
    return {"train": n_train, "test": n_test}


def _pano_id(seed: int, split: str, i: int) -> str:
    """A deterministic 22-character id in the alphabet of real CVACT panoIds."""
    digest = hashlib.blake2b(f"{seed}/{split}/{i}".encode(), digest_size=16).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


def write_cvact(
    out: str | Path,
    num: int,
    seed: int = 0,
    *,
    render: RenderConfig | None = None,
    city: CityConfig | None = None,
    appearance: AppearanceConfig | None = None,
    split_fractions: tuple[float, float, float] | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``num`` pairs in the CVACT layout (60 / 15 / 25 % train / val / test). Returns split sizes."""
    out = Path(out)
    render = render or replace(RenderConfig(), ground_size=(256, 512), elevation=(-90.0, 90.0))
    quality = (appearance or AppearanceConfig()).jpeg_quality
    n_train = max(1, round(0.6 * num))
    n_val = max(1, round(0.15 * num))
    n_test = max(1, num - n_train - n_val)
    ids: list[str] = []
    utm: list[Tensor] = []
    index: dict[str, list[int]] = {}
    for split, n, folder in (
        ("train", n_train, "ANU_data_small"),
        ("val", n_val, "ANU_data_small"),
        ("test", n_test, "ANU_data_test"),
    ):
        ds = _world(
            split, n, seed, render=render, city=city, appearance=appearance, split_fractions=split_fractions
        )
        index[split] = list(range(len(ids) + 1, len(ids) + n + 1))  # 1-based
        for i, s in _render(ds, chunk, f"cvact {split}", progress):
            pid = _pano_id(seed, split, i)
            _save(s["ground"], out / folder / "streetview" / f"{pid}_grdView.jpg", quality)
            _save(s["aerial"], out / folder / "satview_polish" / f"{pid}_satView_polish.jpg", quality)
            ids.append(pid)
            utm.append(s["utm"])

    def col(v: list[int]) -> np.ndarray:
        return np.asarray(v, dtype=np.float64).reshape(-1, 1)

    scipy.io.savemat(
        out / "ACT_data.mat",
        {
            "panoIds": np.asarray(ids, dtype="<U22"),
            "utm": torch.stack(utm).numpy().astype(np.float64),
            "trainSet": {"trainNum": float(n_train), "trainInd": col(index["train"])},
            "valSet": {"valNum": float(n_val), "valInd": col(index["val"])},
            "valSetAll": {"valNum": float(n_test), "valInd": col(index["test"])},
        },
    )
    return {"train": n_train, "val": n_val, "test": n_test}


def write_vigor(
    out: str | Path,
    num: int,
    seed: int = 0,
    *,
    cities: Sequence[str] = VIGOR_CITIES,
    render: RenderConfig | None = None,
    city: CityConfig | None = None,
    appearance: AppearanceConfig | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> dict[str, int]:
    """Write ``num`` panoramas per city in the VIGOR layout. Returns panorama / tile counts."""
    out = Path(out)
    render = render or replace(RenderConfig(), ground_size=(256, 512), elevation=(-90.0, 90.0))
    render = replace(render, margin_m=max(render.margin_m, render.aerial_m / 2))
    app = appearance or AppearanceConfig()
    # VIGOR panoramas are not at tile centres: the grid does the off-centring, no extra jitter
    app_nojitter = replace(app, aerial_jitter_m=0.0)
    quality = app.jpeg_quality
    counts = {"panoramas": 0, "tiles": 0}
    tile_m, s = render.aerial_m, render.aerial_size
    gsd = render.gsd
    step = tile_m / 2
    for c, name in enumerate(cities):
        city_seed = _mix(seed, 1000 + c) % 100_000
        city_cfg = city or CityConfig()
        if name in CITY_ORIGINS:
            city_cfg = replace(city_cfg, origin_latlon=CITY_ORIGINS[name])
        ds = _world("all", num, city_seed, render=render, city=city_cfg, appearance=app_nojitter)
        if ds.num_districts != 1:
            raise ValueError(f"{num} panoramas do not fit one district; lower num or raise CityConfig.size_m")
        dist = ds._district(0)
        cfg = ds.city_config
        cams = ds.cameras.double()
        # regular tile grid (centres every half tile) over the cameras' extent
        lo = torch.floor((cams.min(0).values - tile_m) / step) * step
        hi = torch.ceil((cams.max(0).values + tile_m) / step) * step
        lo = lo.clamp(min=tile_m / 2)
        hi = hi.clamp(max=dist.city.size - tile_m / 2)
        gx = torch.arange(float(lo[0]), float(hi[0]) + 1e-6, step)
        gy = torch.arange(float(lo[1]), float(hi[1]) + 1e-6, step)
        centres = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
        tile_utm = dist.city.utm(centres)
        tile_ll = equirectangular_to_latlon(tile_utm, cfg.origin_utm, cfg.origin_latlon)
        tile_names = [f"satellite_{lat:.7f}_{lon:.7f}.png" for lat, lon in tile_ll.tolist()]
        # labels: the 4 tiles whose squares hold the panorama; positive = nearest centre
        labels = []
        for i in range(len(cams)):
            d = cams[i] - centres
            cover = ((d.abs() < tile_m / 2).all(1)).nonzero(as_tuple=True)[0]
            if len(cover) < 4:
                raise RuntimeError(f"camera {i} of {name} is covered by {len(cover)} tiles, expected 4")
            order = torch.argsort(d[cover].abs().max(1).values)[:4]
            cover = cover[order]
            parts = []
            for t in cover.tolist():
                dx, dy = float(d[t, 0]), float(d[t, 1])
                # VIGOR's delta = centre - panorama in (north, east) pixels: row = c + d0, col = c - d1
                parts += [tile_names[t], f"{-dy / gsd:.4f}", f"{-dx / gsd:.4f}"]
            labels.append(parts)
        # tiles (only those within reach of a panorama are written)
        used = sorted({p for row in labels for p in row[0::3]})
        keep = [k for k, t in enumerate(tile_names) if t in set(used)]
        ea, _ = dist.epochs
        sat_dir = out / name / "satellite"
        with tqdm(total=len(keep), desc=f"vigor {name} tiles", unit="tile", disable=not progress) as bar:
            for idx in _chunks(len(keep), chunk):
                sel = torch.tensor([keep[j] for j in idx])
                rgb, _ = render_aerial(ea, centres[sel].float(), s, gsd)
                for j, t in enumerate(sel.tolist()):
                    gen = torch.Generator().manual_seed(_mix(seed, c, t, 3))
                    img = photometric(rgb[j], gen, app.colour * app.gap, app.noise_std * app.gap)
                    _save(img, sat_dir / tile_names[t], quality)
                bar.update(len(idx))
        pano_names = []
        for i, smp in _render(ds, chunk, f"vigor {name} panoramas", progress):
            lat, lon = smp["latlon"].tolist()
            pname = f"{_pano_id(city_seed, 'vigor', i)},{lat:.7f},{lon:.7f},.jpg"
            _save(smp["ground"], out / name / "panorama" / pname, quality)
            pano_names.append(pname)
        split_dir = out / "splits" / name
        split_dir.mkdir(parents=True, exist_ok=True)
        (split_dir / "satellite_list.txt").write_text("\n".join(tile_names[k] for k in keep) + "\n")
        lines = [" ".join([pano_names[i], *labels[i]]) for i in range(len(cams))]
        (split_dir / "pano_label_balanced.txt").write_text("\n".join(lines) + "\n")
        half = len(lines) // 2
        (split_dir / "same_area_balanced_train.txt").write_text("\n".join(lines[:half]) + "\n")
        (split_dir / "same_area_balanced_test.txt").write_text("\n".join(lines[half:]) + "\n")
        counts["panoramas"] += len(lines)
        counts["tiles"] += len(keep)
    return counts


def write_map(
    out: str | Path,
    num: int,
    seed: int = 0,
    *,
    render: RenderConfig | None = None,
    city: CityConfig | None = None,
    appearance: AppearanceConfig | None = None,
    map_m: float | None = None,
    split: str = "test",
    yaw: float | str = 0.0,
    chunk: int = 32,
    block_px: int = 256,
    progress: bool = True,
    split_fractions: tuple[float, float, float] = (0.6, 0.15, 0.25),
) -> dict[str, int]:
    """Write the ``map`` layout (module docstring): an orthophoto GeoTIFF, query panoramas and truth.

    Args:
        out: output folder (created).
        num: query panoramas (cameras of ``split`` inside the map).
        seed: world seed.
        render: sizes; ``render.gsd`` is the map's m/px, ``render.ground_size`` the panoramas'.
        city: the city config (its ``origin_utm`` is replaced by the true UTM of ``origin_latlon``).
        appearance: domain-gap config (the map is the aerial capture, the panoramas the ground one).
        map_m: side of the square map in metres (default: the district side, at most 1000 m).
        split: the cameras the queries come from (default ``"test"``, the region training never sees).
        split_fractions: the district's train / val / test stripes (as ``SyntheticWorld``; pass the
            training world's, e.g. ``WorldConfig.split_fractions``, so ``split`` names the same cameras).
        yaw: panorama heading in degrees, or ``"random"``.
        chunk: panoramas rendered at once.
        block_px: map pixels rendered at once per side (memory bound).
        progress: progress bars.

    Returns:
        ``{"queries": num, "map_px": side in pixels}``.
    """
    rasterio = import_rasterio()
    from rasterio.transform import from_origin  # optional dependency (the `map` extra)

    out = Path(out)
    render = render or RenderConfig()
    app = appearance or AppearanceConfig()
    base = city or CityConfig()
    crs = utm_crs_for(*base.origin_latlon)
    e0, n0 = from_latlon(np.array([base.origin_latlon]), crs)[0]
    cfg = replace(base, origin_utm=(round(float(e0), 2), round(float(n0), 2)))
    gsd = render.gsd
    side = float(map_m) if map_m is not None else min(cfg.size_m, 1000.0)
    npx = round(side / gsd)
    if npx < 2 or npx * gsd > cfg.size_m + 1e-6:
        raise ValueError(
            f"map_m must lie in [{2 * gsd:g}, {cfg.size_m:g}] m (the district side), got {side:g}"
        )
    side = npx * gsd
    probe = SyntheticWorld(
        split, 1, seed, render=render, city=cfg, appearance=app, yaw=yaw, split_fractions=split_fractions
    )
    dist = probe._district(0)
    size = dist.city.size
    west, south = size - side, (size - side) / 2  # district metres
    north = south + side
    margin = render.aerial_m / 2
    cams = dist.cameras[split]
    inside = (
        (cams[:, 0] > west + margin)
        & (cams[:, 0] < size - margin)
        & (cams[:, 1] > south + margin)
        & (cams[:, 1] < north - margin)
    ).nonzero(as_tuple=True)[0]
    if len(inside) < num:
        raise ValueError(
            f"only {len(inside)} {split!r} cameras lie inside a {side:g} m map of this "
            f"{cfg.size_m:g} m district; lower num or raise map_m"
        )
    chosen = inside[:num].tolist()
    out.mkdir(parents=True, exist_ok=True)
    ea, _ = dist.epochs
    base_utm = dist.city.utm(torch.tensor([[west, north]], dtype=torch.float64))[0].tolist()
    transform = from_origin(base_utm[0], base_utm[1], gsd, gsd)
    tmp = out / "map.tif.part"
    profile = {
        "driver": "GTiff",
        "height": npx,
        "width": npx,
        "count": 3,
        "dtype": "uint8",
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
    }
    if npx < 256:
        profile.update(tiled=False)
        del profile["blockxsize"], profile["blockysize"]
    blocks = [(r, c) for r in range(0, npx, block_px) for c in range(0, npx, block_px)]
    with (
        rasterio.open(tmp, "w", **profile) as dst,
        tqdm(total=len(blocks), desc="map blocks", unit="block", disable=not progress) as bar,
    ):
        for r0, c0 in blocks:
            # a square block of block_px rendered at its centre, cropped to the map
            cx = west + (c0 + block_px / 2) * gsd
            cy = north - (r0 + block_px / 2) * gsd
            rgb, _ = render_aerial(ea, torch.tensor([[cx, cy]], dtype=torch.float32), block_px, gsd)
            h, w = min(block_px, npx - r0), min(block_px, npx - c0)
            arr = (rgb[0, :, :h, :w].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            dst.write(arr, window=rasterio.windows.Window(c0, r0, w, h))
            bar.update(1)
    tmp.replace(out / "map.tif")
    world = SyntheticWorld(
        split,
        len(cams),
        seed,
        render=render,
        city=cfg,
        appearance=app,
        yaw=yaw,
        split_fractions=split_fractions,
    )
    rows = []
    qdir = out / "queries"
    with tqdm(total=num, desc="map queries", unit="pano", disable=not progress) as bar:
        for start in range(0, num, chunk):
            idx = chosen[start : start + chunk]
            batch = world.render_batch(idx)
            utm = batch["utm"].numpy()
            ll = to_latlon(utm, crs)
            for j in range(len(idx)):
                qid = f"q{start + j:05d}"
                name = f"queries/{qid}.jpg"
                _save(batch["ground"][j], qdir / f"{qid}.jpg", app.jpeg_quality)
                rows.append(
                    [
                        qid,
                        name,
                        f"{ll[j, 0]:.9f}",
                        f"{ll[j, 1]:.9f}",
                        f"{utm[j, 0]:.3f}",
                        f"{utm[j, 1]:.3f}",
                        f"{float(batch['yaw'][j]):.3f}",
                    ]
                )
            bar.update(len(idx))
    with open(out / "truth.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "file", "lat", "lon", "utm_e", "utm_n", "heading"])
        writer.writerows(rows)
    info = {
        "crs": crs,
        "gsd_m": gsd,
        "size_px": npx,
        "side_m": side,
        "seed": seed,
        "split": split,
        "bounds_utm": [base_utm[0], base_utm[1] - side, base_utm[0] + side, base_utm[1]],
        "origin_utm": list(cfg.origin_utm),
        "origin_latlon": list(cfg.origin_latlon),
        "queries": num,
    }
    (out / "map.json").write_text(json.dumps(info, indent=1) + "\n")
    return {"queries": num, "map_px": npx}


def write_layout(layout: str, out: str | Path, num: int, seed: int = 0, **kwargs: Any) -> dict[str, int]:
    """Dispatch to :func:`write_cvusa`, :func:`write_cvact`, :func:`write_vigor` or :func:`write_map`."""
    writers: dict[str, Callable[..., dict[str, int]]] = {
        "cvusa": write_cvusa,
        "cvact": write_cvact,
        "vigor": write_vigor,
        "map": write_map,
    }
    if layout not in writers:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    return writers[layout](out, num, seed, **kwargs)
