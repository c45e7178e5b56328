"""Capture conditions and the domain gap between the aerial and the ground view.

Two kinds of difference separate a synthetic aerial tile from its panorama:

- **World-level capture conditions** (:class:`Capture`), one per view, baked into an
  :class:`Epoch` of the city: sun azimuth and elevation (so shadows fall differently in the
  two views), season (foliage and grass colour), crown size (leaf-off trees are smaller), which
  parked cars are present (each car is in the aerial capture, the ground capture, or both) and a
  sensor tint.
- **Per-sample photometric changes** (:func:`photometric`): colour calibration (per-channel gain
  and offset), gamma, saturation and Gaussian sensor noise, drawn from a per-sample generator.
  JPEG compression is applied by the on-disk writers (and optionally in memory).

``AppearanceConfig.gap`` scales all of it: 0 gives identical conditions in both views and no
photometric change (a geometry-only world, useful in tests), 1 is the default benchmark setting.

Convention: epoch rasters follow :class:`~geo_bench.world.city.City` (row 0 north, column 0
west, ``resolution`` m/px). Bearings are degrees clockwise from north.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .city import BUILDING, CAR, GRASS, TREE, City

__all__ = ["AppearanceConfig", "Capture", "Epoch", "jpeg_roundtrip", "photometric"]

# surface kinds stored in Epoch.kind
GROUND, KIND_BUILDING, KIND_TREE, KIND_CAR = range(4)


@dataclass(frozen=True)
class Capture:
    """Conditions under which one view of the whole world was captured.

    Attributes:
        sun_azimuth: sun bearing, degrees clockwise from north.
        sun_elevation: degrees above the horizon.
        foliage: RGB albedo of tree crowns.
        grass: RGB multiplier applied to grass.
        crown_scale: crown radius multiplier (leaf-off / pruned trees are smaller).
        tint: RGB multiplier of the sensor (white balance).
        cars: which car set is present: 0 = the aerial capture's, 1 = the ground capture's.
    """

    sun_azimuth: float = 150.0
    sun_elevation: float = 50.0
    foliage: tuple[float, float, float] = (0.20, 0.36, 0.14)
    grass: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crown_scale: float = 1.0
    tint: tuple[float, float, float] = (0.97, 1.0, 1.05)
    cars: int = 0


AERIAL_CAPTURE = Capture()
GROUND_CAPTURE = Capture(
    sun_azimuth=235.0,
    sun_elevation=32.0,
    foliage=(0.42, 0.36, 0.12),
    grass=(1.15, 1.0, 0.8),
    crown_scale=0.85,
    tint=(1.05, 1.0, 0.93),
    cars=1,
)


@dataclass(frozen=True)
class AppearanceConfig:
    """The domain-gap knobs.

    Attributes:
        gap: overall strength in [0, 1]; 0 = same capture for both views and no photometric
            change or noise, 1 = the defaults below at full strength.
        aerial, ground: the two captures (interpolated from ``aerial`` towards ``ground`` by ``gap``).
        colour: strength of the per-sample colour calibration change.
        noise_std: sensor noise standard deviation (images in [0, 1]).
        aerial_jitter_m: the aerial tile centre is moved up to this far from the camera.
        haze_m: distance at which 63 % of a ground pixel's colour is haze.
        jpeg_quality: JPEG quality used by the writers (and by ``jpeg=True`` in memory).
    """

    gap: float = 1.0
    aerial: Capture = field(default_factory=lambda: AERIAL_CAPTURE)
    ground: Capture = field(default_factory=lambda: GROUND_CAPTURE)
    colour: float = 0.15
    noise_std: float = 0.02
    aerial_jitter_m: float = 3.0
    haze_m: float = 350.0
    jpeg_quality: int = 90

    def __post_init__(self) -> None:
        if not 0.0 <= self.gap <= 1.0:
            raise ValueError(f"gap must be in [0, 1], got {self.gap}")

    def captures(self) -> tuple[Capture, Capture]:
        """The effective (aerial, ground) captures after applying ``gap``."""
        a, g, t = self.aerial, self.ground, self.gap

        def lerp(x, y):
            if isinstance(x, tuple):
                return tuple(float(u + t * (v - u)) for u, v in zip(x, y, strict=True))
            return float(x + t * (y - x))

        ground = replace(
            a,
            sun_azimuth=lerp(a.sun_azimuth, g.sun_azimuth),
            sun_elevation=lerp(a.sun_elevation, g.sun_elevation),
            foliage=lerp(a.foliage, g.foliage),
            grass=lerp(a.grass, g.grass),
            crown_scale=lerp(a.crown_scale, g.crown_scale),
            tint=lerp(a.tint, g.tint),
            cars=g.cars if t > 0 else a.cars,
        )
        return a, ground


def _bearing_vec(bearing: Tensor) -> tuple[Tensor, Tensor]:
    """Bearing (rad, clockwise from north) -> (east, north) unit components."""
    return torch.sin(bearing), torch.cos(bearing)


class Epoch:
    """The city as one view saw it: compact per-pixel rasters the renderers look up.

    Attributes (all (n, n) unless noted, same grid as the city):
        height: float16 top height above ground (m); 0 on the ground.
        cls: uint8 semantic class of the top surface.
        kind: uint8 surface kind (0 ground, 1 building, 2 tree, 3 car).
        top: (3, n, n) uint8 colour seen from above, with sun shading and cast shadows.
        facade: (3, n, n) uint8 albedo of vertical faces.
        normal: float16 bearing (rad) of the outward horizontal normal of vertical faces.
        base: float16 bottom of a tree crown (m), 0 elsewhere.
    """

    def __init__(self, city: City, capture: Capture):
        self.capture = capture
        self.res, self.n, self.size = city.res, city.n, city.size
        n, res = city.n, city.res
        coords = (torch.arange(n, dtype=torch.float32) + 0.5) * res
        x = coords[None, :].expand(n, n)
        y = (city.size - coords)[:, None].expand(n, n)
        cls = city.ground_cls.clone()
        kind = torch.zeros(n, n, dtype=torch.uint8)
        height = torch.zeros(n, n)
        normal = torch.zeros(n, n)
        base = torch.zeros(n, n)
        top = city.ground_rgb.clone()
        grass = cls == GRASS
        top[:, grass] *= torch.tensor(capture.grass)[:, None]
        facade = torch.zeros(3, n, n)
        sun_az, sun_el = math.radians(capture.sun_azimuth), math.radians(capture.sun_elevation)
        sun_e, sun_n = math.sin(sun_az), math.cos(sun_az)

        # buildings
        bmask = city.building_id >= 0
        if bmask.any():
            b = city.buildings
            bid = city.building_id[bmask].long()
            dx = x[bmask] - b["xy"][bid, 0]
            dy = y[bmask] - b["xy"][bid, 1]
            ca, sa = torch.cos(b["angle"][bid]), torch.sin(b["angle"][bid])
            lu, lv = dx * ca + dy * sa, -dx * sa + dy * ca
            hu, hv = b["half"][bid, 0], b["half"][bid, 1]
            gable = b["gable"][bid]
            ridge = b["ridge"][bid] * (1 - lv.abs() / hv).clamp(0, 1)
            height[bmask] = b["height"][bid] + torch.where(gable, ridge, torch.zeros_like(ridge))
            # outward normal of the nearest edge, as a bearing
            use_u = (hu - lu.abs()) < (hv - lv.abs())
            ne = torch.where(use_u, torch.sign(lu) * ca, -torch.sign(lv) * sa)
            nn_ = torch.where(use_u, torch.sign(lu) * sa, torch.sign(lv) * ca)
            normal[bmask] = torch.atan2(ne, nn_)
            # roof colour: gable halves lit differently, darker rim on flat roofs
            roof = b["roof"][bid].T.clone()
            side_e, side_n = -torch.sign(lv) * sa, torch.sign(lv) * ca  # normal of the roof half
            lit = 1.0 + 0.25 * (side_e * sun_e + side_n * sun_n)
            rim = ((hu - lu.abs()) < 0.8) | ((hv - lv.abs()) < 0.8)
            shade = torch.where(gable, lit, torch.where(rim, torch.full_like(lit, 0.8), torch.ones_like(lit)))
            top[:, bmask] = roof * shade
            facade[:, bmask] = b["facade"][bid].T
            cls[bmask] = BUILDING
            kind[bmask] = KIND_BUILDING

        # trees (crown scaled by the capture)
        tmask = city.tree_id >= 0
        if tmask.any():
            t = city.trees
            tid = city.tree_id[tmask].long()
            dx = x[tmask] - t["xy"][tid, 0]
            dy = y[tmask] - t["xy"][tid, 1]
            radius = t["radius"][tid] * capture.crown_scale
            rel = torch.hypot(dx, dy) / radius
            inside = rel < 1
            hmax, hbase = t["height"][tid], t["base"][tid]
            surf = hbase + (hmax - hbase) * torch.sqrt((1 - rel**2).clamp(min=0))
            foliage = (torch.tensor(capture.foliage)[None] + t["tint"][tid]).clamp(0, 1)
            # dome shading: lit towards the sun, darker rim
            nz = torch.sqrt((1 - rel**2).clamp(min=0))
            lit = 0.75 + 0.35 * nz + 0.25 * ((dx * sun_e + dy * sun_n) / (radius * 1.0 + 1e-6)).clamp(-1, 1)
            idx = tmask.nonzero(as_tuple=True)
            rr, cc = idx[0][inside], idx[1][inside]
            height[rr, cc] = surf[inside]
            base[rr, cc] = hbase[inside]
            normal[rr, cc] = torch.atan2(dx, dy)[inside]
            top[:, rr, cc] = (foliage * lit[:, None])[inside].T
            facade[:, rr, cc] = (foliage * 0.8)[inside].T
            cls[rr, cc] = TREE
            kind[rr, cc] = KIND_TREE

        # cars present in this capture
        cmask = city.car_id >= 0
        if cmask.any():
            c = city.cars
            cid = city.car_id[cmask].long()
            present = (c["epochs"][cid] >> capture.cars) & 1 == 1
            idx = cmask.nonzero(as_tuple=True)
            rr, cc = idx[0][present], idx[1][present]
            cid = cid[present]
            height[rr, cc] = c["height"][cid]
            col = c["colour"][cid].T
            top[:, rr, cc] = col * 0.9 + 0.05
            facade[:, rr, cc] = col * 0.8
            d = c["dir"][cid]
            normal[rr, cc] = torch.atan2(d[:, 0], d[:, 1])
            cls[rr, cc] = CAR
            kind[rr, cc] = KIND_CAR

        # cast shadows on everything below the sun line
        shadow = self._shadows(height, sun_az, sun_el)
        top = top * (1.0 - 0.5 * shadow.float())[None]
        top = top * (0.75 + 0.35 * math.sin(sun_el)) * torch.tensor(capture.tint)[:, None, None]
        facade = facade * torch.tensor(capture.tint)[:, None, None]
        self.shadow = shadow
        self.height = height.to(torch.float16)
        self.cls = cls
        self.kind = kind
        self.top = (top.clamp(0, 1) * 255).round().to(torch.uint8)
        self.facade = (facade.clamp(0, 1) * 255).round().to(torch.uint8)
        self.normal = normal.to(torch.float16)
        self.base = base.to(torch.float16)

    def _shadows(self, height: Tensor, sun_az: float, sun_el: float) -> Tensor:
        """(n, n) bool: pixels whose line towards the sun is blocked by a higher surface."""
        n, res = self.n, self.res
        tan_el = math.tan(sun_el)
        hmax = float(height.max())
        if hmax <= 0:
            return torch.zeros(n, n, dtype=torch.bool)
        reach = min(hmax / tan_el, 150.0)
        dr_unit, dc_unit = -math.cos(sun_az) / res, math.sin(sun_az) / res  # pixels per metre
        pad = math.ceil(reach / res) + 1
        padded = torch.nn.functional.pad(height[None, None], (pad, pad, pad, pad))[0, 0]
        blocker = torch.full_like(height, -1e9)
        seen: set[tuple[int, int]] = set()
        step = res * 0.75
        t = step
        while t <= reach:
            dr, dc = round(t * dr_unit), round(t * dc_unit)
            if (dr, dc) not in seen:
                seen.add((dr, dc))
                shifted = padded[pad + dr : pad + dr + n, pad + dc : pad + dc + n]
                torch.maximum(blocker, shifted - t * tan_el, out=blocker)
            t += step if t < 20 else step * 2
        return blocker > height + 0.05


@lru_cache(maxsize=8)
def _noise_bank(height: int, width: int) -> Tensor:
    """A fixed (3, H, W) standard-normal texture; samples take random rolls of it (cheap, deterministic)."""
    return torch.randn(3, height, width, generator=torch.Generator().manual_seed(0xA015E))


def photometric(img: Tensor, gen: torch.Generator, strength: float, noise_std: float) -> Tensor:
    """Per-sample colour calibration, tone curve, saturation and sensor noise.

    Each image draws its own gains, offsets, tone curve and saturation from ``gen`` and adds a
    randomly rolled copy of a fixed Gaussian noise texture, so the change is a pure function of
    the generator state.

    Args:
        img: (3, H, W) or (B, 3, H, W) float in [0, 1].
        gen: generator of the sample (one per sample: pass (3, H, W) images for per-sample draws).
        strength: scale of the colour change (0 = none).
        noise_std: Gaussian noise standard deviation (0 = none).

    Returns:
        Same shape, float in [0, 1].

    Example:
        >>> out = photometric(torch.full((3, 4, 4), 0.5), torch.Generator().manual_seed(0), 0.1, 0.01)
        >>> out.shape
        torch.Size([3, 4, 4])
    """
    if img.ndim not in (3, 4) or img.shape[-3] != 3:
        raise ValueError(f"img must be (3, H, W) or (B, 3, H, W), got {tuple(img.shape)}")
    u = torch.rand(11, generator=gen) * 2 - 1
    if strength > 0:
        gain = (1 + strength * u[:3])[:, None, None]
        offset = (0.25 * strength * u[3:6])[:, None, None]
        curve = 1.5 * strength * float(u[6])
        sat = 1 + 2.0 * strength * float(u[7])
        img = img + curve * img * (1 - img)  # monotone tone curve (gamma-like)
        img = img * gain + offset
        grey = img.mean(-3, keepdim=True)
        img = grey + sat * (img - grey)
    if noise_std > 0:
        h, w = img.shape[-2:]
        bank = _noise_bank(h, w)
        shift = (int((u[8] + 1) * h * 0.5), int((u[9] + 1) * w * 0.5))
        noise = torch.roll(bank, shifts=shift, dims=(-2, -1))
        if u[10] < 0:
            noise = noise.flip(-1)
        img = img + noise_std * noise
    return img.clamp(0, 1)


def jpeg_roundtrip(img: Tensor, quality: int) -> Tensor:
    """Encode (3, H, W) float [0, 1] as JPEG and decode it again (in-memory compression)."""
    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    out = torch.from_numpy(np.array(Image.open(buf).convert("RGB")))
    return out.permute(2, 0, 1).float() / 255
