"""Procedural city: one contiguous, deterministic kilometre-scale map stored as rasters.

Convention:
    A district is a square of side ``L = size_m`` metres. District coordinates are metres
    ``(x, y)`` = (east, north) from the district's south-west corner. Rasters are ``(n, n)`` with
    ``n = round(L / resolution)``; row 0 is the **north** edge and column 0 the **west** edge, so
    pixel ``(r, c)`` has its centre at ``x = (c + 0.5) * res``, ``y = L - (r + 0.5) * res``
    (north up, like the aerial tiles). Metric world coordinates are a UTM-like local frame:
    ``easting = origin_utm[0] + offset[0] + x``, ``northing = origin_utm[1] + offset[1] + y``; see
    :func:`geo_retrieval.geodesy.equirectangular_to_latlon` for the (documented, local
    equirectangular) conversion to lat/lon.

The map is generated once per (config, seed) with vectorised torch code: a jittered road grid
with dropped segments and diagonal avenues, blocks with zones (downtown, residential, park,
parking, industrial), buildings (rotated boxes with height, flat or gable roof, roof and facade
colours), trees (dome crowns with a trunk), ponds and parked cars. What is stored is
*identity* rasters (ground class and colour, building / tree / car ids) plus attribute tables;
:mod:`geo_bench.world.appearance` composes them into per-view "epochs" (season, sun, which cars
are present) and the renderers only do tensor lookups into those.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from geo_retrieval.geodesy import equirectangular_to_latlon

__all__ = [
    "BUILDING",
    "CAR",
    "CLASSES",
    "GRASS",
    "PALETTE",
    "PARKING",
    "ROAD",
    "SIDEWALK",
    "SKY",
    "TREE",
    "WATER",
    "CITY_STYLES",
    "City",
    "CityConfig",
    "city_style",
]

#: semantic classes shared by the aerial and ground label maps (index = label value)
CLASSES: tuple[str, ...] = ("sky", "road", "sidewalk", "grass", "water", "parking", "building", "tree", "car")
SKY, ROAD, SIDEWALK, GRASS, WATER, PARKING, BUILDING, TREE, CAR = range(len(CLASSES))
#: annotation colours (uint8 RGB) per class, used for the colour annotation PNGs
PALETTE: Tensor = torch.tensor(
    [
        [70, 130, 180],  # sky
        [128, 64, 128],  # road
        [244, 35, 232],  # sidewalk
        [152, 251, 152],  # grass
        [0, 80, 200],  # water
        [250, 170, 160],  # parking
        [70, 70, 70],  # building
        [107, 142, 35],  # tree
        [0, 0, 142],  # car
    ],
    dtype=torch.uint8,
)

# zones of a block
DOWNTOWN, RESIDENTIAL, PARK, LOT, INDUSTRIAL = range(5)


@dataclass(frozen=True)
class CityConfig:
    """Knobs of the procedural city (all lengths in metres).

    Attributes:
        size_m: side of one district.
        resolution: raster resolution in m/px.
        block_m: range of the spacing between neighbouring grid roads.
        grid_tilt_deg: maximum tilt of an individual grid road.
        diagonals: number of diagonal avenues.
        drop_segment: probability that a road segment between two crossings is removed.
        sidewalk_m: sidewalk width on each side of a road.
        building_density, tree_density, car_density: multipliers of the default densities.
        ponds: whether parks may contain a pond.
        origin_utm: (easting, northing) of the south-west corner of district 0.
        origin_latlon: (lat, lon) in degrees of ``origin_utm``.
        style: name of the city style (see :data:`CITY_STYLES`; informational, enters records).
        zone_near, zone_far: probabilities of the five block zones (downtown, residential, park,
            parking lot, industrial) at the district's core and at its outskirts; a block's zone
            is drawn from their blend by its distance to the core.
        core_radius: distance from the core (fraction of ``size_m``) where the blend is half-way.
        height_scale: multiplier of every building height.
        roof_palette, facade_palette: building colours (RGB in [0, 1]) drawn uniformly per
            building, each scaled by a random brightness in [0.85, 1.15].
        grass_rgb: albedo of grass.
    """

    size_m: float = 1000.0
    resolution: float = 0.5
    block_m: tuple[float, float] = (70.0, 120.0)
    grid_tilt_deg: float = 4.0
    diagonals: int = 1
    drop_segment: float = 0.12
    sidewalk_m: float = 2.5
    building_density: float = 1.0
    tree_density: float = 1.0
    car_density: float = 1.0
    ponds: bool = True
    origin_utm: tuple[float, float] = (500_000.0, 4_400_000.0)
    origin_latlon: tuple[float, float] = (39.7446, -104.9950)
    style: str = "mixed"
    zone_near: tuple[float, float, float, float, float] = (0.55, 0.12, 0.10, 0.15, 0.08)
    zone_far: tuple[float, float, float, float, float] = (0.06, 0.55, 0.16, 0.08, 0.15)
    core_radius: float = 0.22
    height_scale: float = 1.0
    roof_palette: tuple[tuple[float, float, float], ...] = (
        (0.55, 0.55, 0.55),
        (0.35, 0.35, 0.37),
        (0.62, 0.30, 0.22),
        (0.45, 0.30, 0.22),
        (0.70, 0.70, 0.68),
        (0.25, 0.27, 0.30),
    )
    facade_palette: tuple[tuple[float, float, float], ...] = (
        (0.78, 0.74, 0.66),
        (0.60, 0.35, 0.28),
        (0.85, 0.85, 0.82),
        (0.55, 0.58, 0.62),
        (0.72, 0.62, 0.48),
        (0.40, 0.50, 0.60),
    )
    grass_rgb: tuple[float, float, float] = (0.30, 0.44, 0.18)

    def __post_init__(self) -> None:
        if self.size_m < 100:
            raise ValueError(f"size_m must be >= 100 m, got {self.size_m}")
        if not 0.05 <= self.resolution <= 2.0:
            raise ValueError(f"resolution must be in [0.05, 2] m/px, got {self.resolution}")
        if not 20 <= self.block_m[0] <= self.block_m[1]:
            raise ValueError(f"block_m must be (lo, hi) with 20 <= lo <= hi, got {self.block_m}")
        for name in ("zone_near", "zone_far"):
            probs = getattr(self, name)
            if len(probs) != 5 or min(probs) < 0 or sum(probs) <= 0:
                raise ValueError(f"{name} must be 5 non-negative zone weights, not all 0, got {probs}")
        for name in ("roof_palette", "facade_palette"):
            if not getattr(self, name) or any(len(c) != 3 for c in getattr(self, name)):
                raise ValueError(
                    f"{name} must be a non-empty tuple of RGB triples, got {getattr(self, name)}"
                )
        if self.height_scale <= 0:
            raise ValueError(f"height_scale must be > 0, got {self.height_scale}")


#: Named city styles for the cross-area protocol (the VIGOR cross-area analogue): districts that differ
#: in street layout and widths, building footprints, heights and colours, vegetation and land use.
#: ``"mixed"`` is :class:`CityConfig`'s default (a downtown core with residential outskirts).
CITY_STYLES: dict[str, dict[str, object]] = {
    "mixed": {},
    # a dense downtown grid: short straight blocks, wide sidewalks, tall glass and concrete towers, few trees
    "downtown": {
        "block_m": (55.0, 85.0),
        "grid_tilt_deg": 1.5,
        "diagonals": 0,
        "drop_segment": 0.03,
        "sidewalk_m": 3.5,
        "building_density": 1.8,
        "tree_density": 0.45,
        "car_density": 1.5,
        "ponds": False,
        "zone_near": (0.85, 0.02, 0.05, 0.05, 0.03),
        "zone_far": (0.60, 0.10, 0.08, 0.12, 0.10),
        "core_radius": 0.35,
        "height_scale": 1.3,
        "roof_palette": ((0.50, 0.52, 0.55), (0.30, 0.31, 0.33), (0.62, 0.63, 0.62), (0.42, 0.47, 0.52)),
        "facade_palette": ((0.45, 0.55, 0.65), (0.62, 0.64, 0.66), (0.35, 0.42, 0.50), (0.75, 0.74, 0.70)),
    },
    # a suburban sprawl: long blocks, many dropped segments (cul-de-sacs), narrow sidewalks, low houses
    # with brown / red / dark roofs and pastel walls in green lots
    "suburb": {
        "block_m": (110.0, 170.0),
        "grid_tilt_deg": 6.0,
        "diagonals": 0,
        "drop_segment": 0.3,
        "sidewalk_m": 1.8,
        "building_density": 0.9,
        "tree_density": 1.8,
        "car_density": 0.7,
        "ponds": True,
        "zone_near": (0.05, 0.75, 0.12, 0.05, 0.03),
        "zone_far": (0.0, 0.80, 0.15, 0.03, 0.02),
        "core_radius": 0.15,
        "height_scale": 0.8,
        "roof_palette": ((0.40, 0.28, 0.20), (0.28, 0.29, 0.32), (0.58, 0.25, 0.20), (0.50, 0.42, 0.32)),
        "facade_palette": ((0.90, 0.88, 0.80), (0.70, 0.80, 0.88), (0.92, 0.86, 0.62), (0.80, 0.72, 0.66)),
        "grass_rgb": (0.26, 0.46, 0.16),
    },
    # an organic small town: short irregular blocks at odd angles, three diagonal streets, low stucco
    # houses with terracotta roofs, dry grass
    "town": {
        "block_m": (45.0, 95.0),
        "grid_tilt_deg": 18.0,
        "diagonals": 3,
        "drop_segment": 0.35,
        "sidewalk_m": 1.5,
        "building_density": 1.2,
        "tree_density": 1.2,
        "car_density": 0.6,
        "ponds": False,
        "zone_near": (0.30, 0.50, 0.10, 0.05, 0.05),
        "zone_far": (0.0, 0.70, 0.20, 0.03, 0.07),
        "core_radius": 0.18,
        "height_scale": 0.7,
        "roof_palette": ((0.70, 0.36, 0.24), (0.62, 0.30, 0.20), (0.76, 0.46, 0.30), (0.55, 0.33, 0.25)),
        "facade_palette": ((0.88, 0.80, 0.62), (0.93, 0.90, 0.84), (0.80, 0.64, 0.44), (0.85, 0.74, 0.56)),
        "grass_rgb": (0.42, 0.45, 0.22),
    },
}


def city_style(style: str, **changes: object) -> CityConfig:
    """The :class:`CityConfig` of a named style (:data:`CITY_STYLES`), with ``changes`` applied.

    Example:
        >>> city_style("town", size_m=500.0).diagonals
        3
    """
    if style not in CITY_STYLES:
        raise ValueError(f"unknown city style {style!r}; available: {sorted(CITY_STYLES)}")
    return CityConfig(**{**CITY_STYLES[style], "style": style, **changes})  # type: ignore[arg-type]


def value_noise(n: int, cells: int, gen: torch.Generator, octaves: int = 1) -> Tensor:
    """Smooth noise in [0, 1] of shape (n, n): bicubic upsampling of a random (cells+1)^2 grid."""
    out = torch.zeros(n, n)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        c = max(1, cells * 2**o)
        grid = torch.rand(1, 1, c + 1, c + 1, generator=gen)
        out += amp * F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=True)[0, 0]
        total += amp
        amp *= 0.5
    return (out / total).clamp(0, 1)


def _uniform(gen: torch.Generator, lo: float, hi: float, size: int | tuple[int, ...] = ()) -> Tensor:
    size = (size,) if isinstance(size, int) else size
    return lo + (hi - lo) * torch.rand(size, generator=gen)


@dataclass
class Roads:
    """Road lines: unit normal ``(nx, ny)``, offset ``c`` (points with nx*x + ny*y = c), half width."""

    normal: Tensor  # (R, 2)
    offset: Tensor  # (R,)
    half_width: Tensor  # (R,)
    main: Tensor  # (R,) bool

    @property
    def direction(self) -> Tensor:
        return torch.stack([-self.normal[:, 1], self.normal[:, 0]], dim=1)


class City:
    """One procedurally generated district (see the module docstring for the conventions).

    Args:
        config: the knobs.
        seed: district seed; the same (config, seed) always gives identical rasters.
        offset: (east, north) offset of this district from ``config.origin_utm``, metres.

    Attributes:
        n: raster side in pixels. ``res``: m/px. ``size``: side in metres.
        ground_cls: (n, n) uint8 ground class (road, sidewalk, grass, water, parking).
        ground_rgb: (3, n, n) float32 ground albedo in [0, 1] (texture, road and parking markings).
        building_id, tree_id, car_id: (n, n) int32 ids into the tables below, -1 where none.
        buildings, trees, cars: dicts of (N, ...) attribute tensors.
        roads: the road lines; ``road_keep``: (n, n) bool, pixels of a kept road segment.
        zone: (n, n) uint8 block zone.
    """

    def __init__(
        self, config: CityConfig | None = None, seed: int = 0, offset: tuple[float, float] = (0.0, 0.0)
    ):
        self.config = config or CityConfig()
        self.seed = int(seed)
        self.offset = (float(offset[0]), float(offset[1]))
        cfg = self.config
        self.res = cfg.resolution
        self.n = round(cfg.size_m / cfg.resolution)
        self.size = self.n * self.res
        gen = torch.Generator().manual_seed((0x5EED0000 + self.seed) % (1 << 62))
        n, res = self.n, self.res
        coords = (torch.arange(n, dtype=torch.float32) + 0.5) * res
        self._x = coords[None, :].expand(n, n)  # east
        self._y = (self.size - coords)[:, None].expand(n, n)  # north
        self._make_roads(gen)
        self._make_zones(gen)
        self._make_ground(gen)
        self._make_buildings(gen)
        self._make_trees(gen)
        self._make_cars(gen)
        del self._x, self._y, self._dmin, self._road_index, self._signed_own, self._along_own

    # ------------------------------------------------------------------ geometry helpers
    def to_pixel(self, xy: Tensor) -> Tensor:
        """District metres (..., 2) (east, north) -> continuous pixel coords (..., 2) (row, col)."""
        return torch.stack([(self.size - xy[..., 1]) / self.res - 0.5, xy[..., 0] / self.res - 0.5], dim=-1)

    def lookup(self, raster: Tensor, xy: Tensor, fill: float | int = 0) -> Tensor:
        """Nearest-neighbour lookup of a (..., n, n) raster at district metres xy (P, 2) -> (..., P)."""
        rc = self.to_pixel(xy).round().long()
        inside = (rc >= 0).all(-1) & (rc < self.n).all(-1)
        flat = rc[:, 0].clamp(0, self.n - 1) * self.n + rc[:, 1].clamp(0, self.n - 1)
        out = raster.reshape(*raster.shape[:-2], -1)[..., flat]
        return torch.where(inside, out, torch.as_tensor(fill, dtype=out.dtype))

    def utm(self, xy: Tensor) -> Tensor:
        """District metres (..., 2) -> float64 UTM-like (easting, northing)."""
        xy = xy.to(torch.float64)
        base = torch.tensor(
            [self.config.origin_utm[0] + self.offset[0], self.config.origin_utm[1] + self.offset[1]],
            dtype=torch.float64,
        )
        return xy + base

    def latlon(self, xy: Tensor) -> Tensor:
        """District metres (..., 2) -> float64 (lat, lon) degrees."""
        return equirectangular_to_latlon(self.utm(xy), self.config.origin_utm, self.config.origin_latlon)

    # ------------------------------------------------------------------ roads
    def _make_roads(self, gen: torch.Generator) -> None:
        cfg, size = self.config, self.size
        lo, hi = cfg.block_m
        normals, offsets, widths, mains = [], [], [], []
        tilt = math.radians(cfg.grid_tilt_deg)
        for axis in (0, 1):  # 0: north-south roads (x = const), 1: east-west roads (y = const)
            pos = -float(_uniform(gen, 0.2 * lo, lo))
            while True:
                pos += float(_uniform(gen, lo, hi))
                if pos > size - 0.2 * lo:
                    break
                ang = float(_uniform(gen, -tilt, tilt))
                normal = (math.cos(ang), math.sin(ang)) if axis == 0 else (-math.sin(ang), math.cos(ang))
                centre = (pos, size / 2) if axis == 0 else (size / 2, pos)
                main = bool(torch.rand((), generator=gen) < 0.3)
                normals.append(normal)
                offsets.append(normal[0] * centre[0] + normal[1] * centre[1])
                widths.append(float(_uniform(gen, 6.0, 8.0) if main else _uniform(gen, 3.5, 5.0)))
                mains.append(main)
        for _ in range(cfg.diagonals):
            ang = float(_uniform(gen, math.radians(25), math.radians(65))) * (
                1 if torch.rand((), generator=gen) < 0.5 else -1
            )
            point = _uniform(gen, 0.3 * size, 0.7 * size, 2)
            normal = (math.cos(ang), math.sin(ang))
            normals.append(normal)
            offsets.append(normal[0] * float(point[0]) + normal[1] * float(point[1]))
            widths.append(float(_uniform(gen, 6.0, 7.5)))
            mains.append(True)
        self.roads = Roads(
            torch.tensor(normals, dtype=torch.float32),
            torch.tensor(offsets, dtype=torch.float32),
            torch.tensor(widths, dtype=torch.float32),
            torch.tensor(mains),
        )
        # block indices from the grid lines (diagonals excluded)
        is_ns = self.roads.normal[:, 0].abs() > 0.9
        is_ew = self.roads.normal[:, 1].abs() > 0.9
        is_ns[len(normals) - cfg.diagonals :] = False
        is_ew[len(normals) - cfg.diagonals :] = False
        road_normal, road_offset = self.roads.normal, self.roads.offset

        def signed(r: int) -> Tensor:
            return road_normal[r, 0] * self._x + road_normal[r, 1] * self._y - road_offset[r]

        n_roads = len(road_offset)
        bx = torch.zeros(self.n, self.n, dtype=torch.long)
        by = torch.zeros(self.n, self.n, dtype=torch.long)
        for r in range(n_roads):  # one pass per road keeps memory at O(n^2)
            if is_ns[r]:
                bx += signed(r) > 0
            elif is_ew[r]:
                by += signed(r) > 0
        self._bx, self._by = bx, by
        # drop some segments: a NS road between EW roads by, by+1 (and vice versa); main roads stay
        ns_index = torch.cumsum(is_ns.long(), 0) - 1
        ew_index = torch.cumsum(is_ew.long(), 0) - 1
        n_ns, n_ew = int(is_ns.sum()), int(is_ew.sum())
        keep_ns = torch.rand(n_ns, n_ew + 1, generator=gen) >= cfg.drop_segment
        keep_ew = torch.rand(n_ew, n_ns + 1, generator=gen) >= cfg.drop_segment
        dmin = torch.full((self.n, self.n), 1e9)
        index = torch.zeros(self.n, self.n, dtype=torch.long)
        count = torch.zeros(self.n, self.n, dtype=torch.long)
        own = torch.zeros(self.n, self.n)
        along = torch.zeros(self.n, self.n)
        direction = self.roads.direction
        for r in range(n_roads):
            sd = signed(r)
            if self.roads.main[r]:
                keep = torch.ones_like(sd, dtype=torch.bool)
            elif is_ns[r]:
                keep = keep_ns[ns_index[r]][by]
            elif is_ew[r]:
                keep = keep_ew[ew_index[r]][bx]
            else:
                keep = torch.ones_like(sd, dtype=torch.bool)
            dist = torch.where(keep, sd.abs(), torch.full_like(sd, 1e9))
            count += dist < self.roads.half_width[r]
            better = dist < dmin
            dmin = torch.where(better, dist, dmin)
            index = torch.where(better, r, index)
            own = torch.where(better, sd, own)
            along = torch.where(better, direction[r, 0] * self._x + direction[r, 1] * self._y, along)
        self._dmin, self._road_index, self._road_count = dmin, index, count
        self._signed_own, self._along_own = own, along
        self.road_keep = dmin < self.roads.half_width[index]

    def _make_zones(self, gen: torch.Generator) -> None:
        nb = int(self._bx.max()) + 1, int(self._by.max()) + 1
        centre = _uniform(gen, 0.35 * self.size, 0.65 * self.size, 2)
        # block centre approximated by the mean position of its pixels
        bid = self._bx * nb[1] + self._by
        nblk = nb[0] * nb[1]
        cnt = torch.bincount(bid.flatten(), minlength=nblk).clamp(min=1).float()
        cx = torch.bincount(bid.flatten(), weights=self._x.flatten(), minlength=nblk) / cnt
        cy = torch.bincount(bid.flatten(), weights=self._y.flatten(), minlength=nblk) / cnt
        d = torch.hypot(cx - centre[0], cy - centre[1]) / self.size
        near = torch.tensor(self.config.zone_near)
        far = torch.tensor(self.config.zone_far)
        w = torch.sigmoid((d - self.config.core_radius) * 25)[:, None]
        probs = (1 - w) * near + w * far
        zone_of_block = torch.multinomial(probs, 1, generator=gen)[:, 0]
        self.zone = zone_of_block[bid].to(torch.uint8)
        self._block = bid

    def _make_ground(self, gen: torch.Generator) -> None:
        cfg, n = self.config, self.n
        dmin = self._dmin
        half = self.roads.half_width[self._road_index]
        road = dmin < half
        sidewalk = ~road & (dmin < half + cfg.sidewalk_m)
        zone = self.zone
        cls = torch.full((n, n), GRASS, dtype=torch.uint8)
        cls[(zone == DOWNTOWN)] = SIDEWALK
        cls[(zone == LOT) | (zone == INDUSTRIAL)] = PARKING
        # ponds: ellipses in some park blocks
        if cfg.ponds:
            park_blocks = torch.unique(self._block[zone == PARK])
            for b in park_blocks.tolist():
                if torch.rand((), generator=gen) < 0.5:
                    mask = self._block == b
                    ys, xs = self._y[mask], self._x[mask]
                    cx, cy = float(xs.mean()), float(ys.mean())
                    ax = float(_uniform(gen, 0.15, 0.3)) * float(xs.max() - xs.min())
                    ay = float(_uniform(gen, 0.15, 0.3)) * float(ys.max() - ys.min())
                    cls[mask & (((self._x - cx) / ax) ** 2 + ((self._y - cy) / ay) ** 2 < 1)] = WATER
        cls[sidewalk] = SIDEWALK
        cls[road] = ROAD
        self.ground_cls = cls
        # albedo
        base = torch.tensor(
            [
                [0.0, 0.0, 0.0],
                [0.30, 0.30, 0.32],  # road
                [0.60, 0.58, 0.55],  # sidewalk
                list(cfg.grass_rgb),  # grass
                [0.16, 0.28, 0.36],  # water
                [0.38, 0.38, 0.39],  # parking
            ]
        )
        rgb = base[cls.long()].permute(2, 0, 1).clone()  # (3, n, n)
        fine = value_noise(n, max(2, n // 6), gen)
        coarse = value_noise(n, max(2, int(self.size / 40)), gen, octaves=2)
        rgb *= (0.85 + 0.3 * fine * coarse)[None]
        grass = cls == GRASS
        patch = value_noise(n, max(2, int(self.size / 25)), gen)
        rgb[0][grass] += 0.10 * (patch[grass] - 0.5)
        rgb[1][grass] += 0.06 * (patch[grass] - 0.5)
        # markings: centre dashes on roads covered by a single road
        d_own, t_own = self._signed_own, self._along_own
        main_own = self.roads.main[self._road_index]
        single = self._road_count == 1
        dash = road & single & (d_own.abs() < 0.2) & (torch.remainder(t_own, 9.0) < 4.5)
        solid = road & single & main_own & ((d_own.abs() - 0.25).abs() < 0.12)
        yellow = torch.tensor([0.85, 0.72, 0.2])[:, None]
        white = torch.tensor([0.9, 0.9, 0.88])[:, None]
        rgb[:, dash & ~main_own] = white
        rgb[:, solid] = yellow
        edge = road & single & ((d_own.abs() - (self.roads.half_width[self._road_index] - 0.5)).abs() < 0.15)
        rgb[:, edge] = white * 0.9
        # crosswalk stripes near crossings (pixels covered by 2 roads' sidewalks)
        lot = cls == PARKING
        stall = lot & (torch.remainder(self._x, 2.7) < 0.18) & (torch.remainder(self._y, 12.0) > 6.5)
        rgb[:, stall] = white * 0.85
        self.ground_rgb = rgb.clamp(0, 1).contiguous()
        self._road_mask, self._sidewalk_mask = road, sidewalk

    # ------------------------------------------------------------------ buildings
    def _make_buildings(self, gen: torch.Generator) -> None:
        cfg, n, res = self.config, self.n, self.res
        # roads, street sidewalks and water are off limits (downtown plazas are not)
        occupied = self._road_mask | self._sidewalk_mask | (self.ground_cls == WATER) | self.road_keep
        area = self.size**2
        ncand = int(area / 90.0 * cfg.building_density)
        cxy = torch.rand(ncand, 2, generator=gen) * self.size
        zone = self.lookup(self.zone, cxy, fill=PARK).long()
        ok = (zone == DOWNTOWN) | (zone == RESIDENTIAL) | (zone == INDUSTRIAL)
        ok &= ~self.lookup(occupied, cxy, fill=True)
        cxy, zone = cxy[ok], zone[ok]
        m = len(cxy)
        u = torch.rand(m, 8, generator=gen)
        # per-zone sizes: half extents (long, short), height, gap, gable probability
        hu = torch.where(
            zone == DOWNTOWN,
            8 + 14 * u[:, 0],
            torch.where(zone == INDUSTRIAL, 10 + 18 * u[:, 0], 4.5 + 3 * u[:, 0]),
        )
        hv = torch.where(
            zone == DOWNTOWN,
            7 + 9 * u[:, 1],
            torch.where(zone == INDUSTRIAL, 8 + 10 * u[:, 1], 3.5 + 2 * u[:, 1]),
        )
        hv = torch.minimum(hu, hv)
        height = torch.where(
            zone == DOWNTOWN,
            torch.exp(math.log(14) + 1.0 * u[:, 2] * math.log(6)),  # 14 .. 84 m, log-uniform
            torch.where(zone == INDUSTRIAL, 6 + 8 * u[:, 2], 4 + 5 * u[:, 2]),
        )
        if cfg.height_scale != 1.0:
            height = height * cfg.height_scale
        gap = torch.where(zone == DOWNTOWN, 1.0, torch.where(zone == INDUSTRIAL, 4.0, 3.0))
        gable = (zone == RESIDENTIAL) & (u[:, 3] < 0.7)
        # orientation follows the local road grid: use the nearest NS road's tilt, +90 deg at random
        ridx = self.lookup(self._road_index_for_orientation(), cxy, fill=0).long()
        nrm = self.roads.normal[ridx]
        angle = torch.atan2(nrm[:, 1], nrm[:, 0]) + (u[:, 4] < 0.5).float() * (math.pi / 2)
        roof_pal = torch.tensor(cfg.roof_palette)
        facade_pal = torch.tensor(cfg.facade_palette)
        roof = roof_pal[torch.randint(len(roof_pal), (m,), generator=gen)] * (
            0.85 + 0.3 * torch.rand(m, 1, generator=gen)
        )
        facade = facade_pal[torch.randint(len(facade_pal), (m,), generator=gen)] * (
            0.85 + 0.3 * torch.rand(m, 1, generator=gen)
        )
        # place big ones first, reject overlaps (loop over candidates; each stamp is a small window)
        order = torch.argsort(hu * hv, descending=True)
        bid = torch.full((n, n), -1, dtype=torch.int32)
        occ = occupied.clone()
        kept: list[int] = []
        cos_a, sin_a = torch.cos(angle), torch.sin(angle)
        for i in order.tolist():
            rad = float(torch.hypot(hu[i], hv[i]) + gap[i])
            cr, cc = self.to_pixel(cxy[i]).tolist()
            r0, r1 = max(0, int(cr - rad / res) - 1), min(n, int(cr + rad / res) + 2)
            c0, c1 = max(0, int(cc - rad / res) - 1), min(n, int(cc + rad / res) + 2)
            if r1 - r0 < 3 or c1 - c0 < 3:
                continue
            dx = (torch.arange(c0, c1) + 0.5) * res - cxy[i, 0]
            dy = (self.size - (torch.arange(r0, r1) + 0.5) * res) - cxy[i, 1]
            lu = dx[None, :] * cos_a[i] + dy[:, None] * sin_a[i]
            lv = -dx[None, :] * sin_a[i] + dy[:, None] * cos_a[i]
            body = (lu.abs() <= hu[i]) & (lv.abs() <= hv[i])
            halo = (lu.abs() <= hu[i] + gap[i]) & (lv.abs() <= hv[i] + gap[i])
            win = occ[r0:r1, c0:c1]
            if (halo & win).any() or body.sum() < 0.9 * (4 * hu[i] * hv[i] / res**2):
                continue  # overlaps, or clipped by the district edge
            bid[r0:r1, c0:c1][body] = len(kept)
            win |= body
            kept.append(i)
        k = torch.tensor(kept, dtype=torch.long)
        self.building_id = bid
        self.buildings = {
            "xy": cxy[k],
            "angle": angle[k],
            "half": torch.stack([hu[k], hv[k]], 1),
            "height": height[k],
            "gable": gable[k],
            "ridge": (0.35 * hv[k]).clamp(max=3.0),
            "roof": roof[k].clamp(0, 1),
            "facade": facade[k].clamp(0, 1),
            "zone": zone[k],
        }

    def _road_index_for_orientation(self) -> Tensor:
        # nearest grid road (diagonals give odd orientations, fine)
        return self._road_index

    # ------------------------------------------------------------------ trees
    def _make_trees(self, gen: torch.Generator) -> None:
        cfg, n, res = self.config, self.n, self.res
        pts = []
        # street trees along every road, on the sidewalk edge
        direction, normal = self.roads.direction, self.roads.normal
        for r in range(len(self.roads.offset)):
            spacing = float(_uniform(gen, 7.0, 11.0)) / cfg.tree_density
            t = torch.arange(-self.size, 2 * self.size, spacing) + float(_uniform(gen, 0, spacing))
            base = normal[r] * self.roads.offset[r]
            for side in (-1.0, 1.0):
                off = side * (float(self.roads.half_width[r]) + cfg.sidewalk_m * 0.55)
                p = base[None] + t[:, None] * direction[r][None] + off * normal[r][None]
                pts.append(p)
        street = torch.cat(pts)
        inside = ((street > 1) & (street < self.size - 1)).all(1)
        street = street[inside]
        zone = self.lookup(self.zone, street, fill=PARK).long()
        keep_p = torch.tensor([0.3, 0.6, 0.8, 0.25, 0.35])[zone]
        street = street[torch.rand(len(street), generator=gen) < keep_p]
        street = street[self.lookup(self.ground_cls, street, fill=ROAD) == SIDEWALK]
        # park and yard trees: Poisson in grass
        area = self.size**2
        cand = torch.rand(int(area / 60 * cfg.tree_density), 2, generator=gen) * self.size
        zone = self.lookup(self.zone, cand, fill=LOT).long()
        grass = self.lookup(self.ground_cls, cand, fill=ROAD) == GRASS
        keep_p = torch.tensor([0.0, 0.12, 0.45, 0.0, 0.02])[zone]
        cand = cand[grass & (torch.rand(len(cand), generator=gen) < keep_p)]
        xy = torch.cat([street, cand])
        xy = xy[self.lookup(self.building_id, xy, fill=0) < 0]
        m = len(xy)
        radius = _uniform(gen, 1.8, 4.2, m)
        height = radius * _uniform(gen, 1.8, 3.2, m) + 1.5
        base_h = _uniform(gen, 1.8, 3.2, m)
        tint = torch.stack(
            [_uniform(gen, -0.05, 0.05, m), _uniform(gen, -0.07, 0.07, m), _uniform(gen, -0.04, 0.04, m)], 1
        )
        # vectorised stamping: each tree writes a fixed window; winner = highest crown surface
        k = math.ceil(4.2 / res) + 1
        window = torch.arange(-k, k + 1)
        rc = self.to_pixel(xy).round().long()
        rr = (rc[:, 0, None, None] + window[None, :, None]).expand(-1, -1, len(window))
        cc = (rc[:, 1, None, None] + window[None, None, :]).expand(-1, len(window), -1)
        px = (cc.float() + 0.5) * res - xy[:, 0, None, None]
        py = (self.size - (rr.float() + 0.5) * res) - xy[:, 1, None, None]
        rel = torch.hypot(px, py) / radius[:, None, None]
        valid = (rel < 1) & (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
        surf = base_h[:, None, None] + (height - base_h)[:, None, None] * torch.sqrt(
            (1 - rel**2).clamp(min=0)
        )
        flat = (rr.clamp(0, n - 1) * n + cc.clamp(0, n - 1))[valid]
        val = surf[valid]
        owner = torch.arange(m)[:, None, None].expand_as(rr)[valid]
        best = torch.full((n * n,), -1.0).scatter_reduce(0, flat, val, reduce="amax")
        win = val >= best[flat]
        tid = torch.full((n * n,), -1, dtype=torch.int64)
        tid = tid.scatter_reduce(0, flat[win], owner[win], reduce="amax").to(torch.int32).view(n, n)
        tid[self.building_id >= 0] = -1  # crowns overhanging roofs are clipped by the building
        self.tree_id = tid
        self.trees = {"xy": xy, "radius": radius, "height": height, "base": base_h, "tint": tint}

    # ------------------------------------------------------------------ cars
    def _make_cars(self, gen: torch.Generator) -> None:
        cfg, n, res = self.config, self.n, self.res
        pts, dirs = [], []
        direction, normal = self.roads.direction, self.roads.normal
        for r in range(len(self.roads.offset)):
            t = torch.cumsum(_uniform(gen, 6.0, 30.0 / cfg.car_density, 400), 0) - self.size
            t = t[t < 2 * self.size]
            base = normal[r] * self.roads.offset[r]
            side = torch.where(torch.rand(len(t), generator=gen) < 0.5, -1.0, 1.0)
            off = side * (self.roads.half_width[r] - 1.3)
            pts.append(base[None] + t[:, None] * direction[r][None] + off[:, None] * normal[r][None])
            dirs.append(direction[r][None].expand(len(t), 2))
        xy = torch.cat(pts)
        dxy = torch.cat(dirs)
        on_road = (self.lookup(self.ground_cls, xy, fill=GRASS) == ROAD) & (
            self.lookup(self._road_count, xy, fill=0) == 1
        )
        xy, dxy = xy[on_road], dxy[on_road]
        # parking-lot stalls
        gx = torch.arange(1.35, self.size, 2.7)
        gy = torch.arange(9.25, self.size, 12.0)
        lot = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1).reshape(-1, 2)
        lot = lot[
            (self.lookup(self.ground_cls, lot, fill=GRASS) == PARKING)
            & (self.lookup(self.building_id, lot, fill=0) < 0)
        ]
        lot = lot[torch.rand(len(lot), generator=gen) < 0.45 * cfg.car_density]
        xy = torch.cat([xy, lot])
        dxy = torch.cat([dxy, torch.tensor([[0.0, 1.0]]).expand(len(lot), 2)])
        m = len(xy)
        pal = torch.tensor(
            [
                [0.9, 0.9, 0.9],
                [0.1, 0.1, 0.12],
                [0.5, 0.5, 0.52],
                [0.6, 0.1, 0.1],
                [0.15, 0.2, 0.45],
                [0.75, 0.75, 0.78],
            ]
        )
        colour = pal[torch.randint(len(pal), (m,), generator=gen)]
        # presence per epoch: bit 0 = aerial capture, bit 1 = ground capture
        u = torch.rand(m, generator=gen)
        epochs = torch.where(u < 0.3, 3, torch.where(u < 0.65, 1, 2)).to(torch.uint8)
        k = math.ceil(2.5 / res) + 1
        off = torch.arange(-k, k + 1)
        rc = self.to_pixel(xy).round().long()
        rr = (rc[:, 0, None, None] + off[None, :, None]).expand(-1, -1, len(off))
        cc = (rc[:, 1, None, None] + off[None, None, :]).expand(-1, len(off), -1)
        px = (cc.float() + 0.5) * res - xy[:, 0, None, None]
        py = (self.size - (rr.float() + 0.5) * res) - xy[:, 1, None, None]
        lu = px * dxy[:, 0, None, None] + py * dxy[:, 1, None, None]
        lv = -px * dxy[:, 1, None, None] + py * dxy[:, 0, None, None]
        body = (lu.abs() < 2.2) & (lv.abs() < 0.9) & (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n)
        flat = (rr.clamp(0, n - 1) * n + cc.clamp(0, n - 1))[body]
        ids = torch.arange(m)[:, None, None].expand_as(rr)[body]
        cid = torch.full((n * n,), -1, dtype=torch.int64).scatter_reduce(0, flat, ids, reduce="amax")
        cid = cid.to(torch.int32).view(n, n)
        cid[(self.building_id >= 0)] = -1
        self.car_id = cid
        self.cars = {
            "xy": xy,
            "dir": dxy,
            "colour": colour,
            "epochs": epochs,
            "height": _uniform(gen, 1.4, 1.7, m),
        }

    # ------------------------------------------------------------------ cameras
    def camera_positions(
        self, spacing: tuple[float, float] = (10.0, 20.0), margin: float = 40.0, seed: int = 0
    ) -> Tensor:
        """Street-view camera positions along the kept roads, district metres (P, 2), float32.

        Cameras are spaced ``spacing`` metres apart along every road's centre line, with a
        lateral offset of up to a quarter of the carriageway, and keep ``margin`` metres from the
        district edge. Deterministic given the city and ``seed``.
        """
        gen = torch.Generator().manual_seed((0xCA3E0000 + 7919 * self.seed + seed) % (1 << 62))
        out = []
        direction, normal = self.roads.direction, self.roads.normal
        for r in range(len(self.roads.offset)):
            t = (
                torch.cumsum(_uniform(gen, spacing[0], spacing[1], int(3 * self.size / spacing[0]) + 2), 0)
                - self.size
            )
            lateral = _uniform(gen, -0.25, 0.25, len(t)) * self.roads.half_width[r]
            base = normal[r] * self.roads.offset[r]
            out.append(base[None] + t[:, None] * direction[r][None] + lateral[:, None] * normal[r][None])
        xy = torch.cat(out)
        inside = ((xy > margin) & (xy < self.size - margin)).all(1)
        xy = xy[inside]
        xy = xy[
            self.lookup(self.road_keep, xy, fill=False)
            & (self.lookup(self.ground_cls, xy, fill=GRASS) == ROAD)
        ]
        xy = xy[(self.lookup(self.building_id, xy, fill=0) < 0)]
        return xy.contiguous()
