"""A tiny learnable cross-view dataset for tests, benchmarks and smoke runs (no real data needed).

Convention:
    each location i has a smooth random aerial image (B-spline-like: random low-resolution colour
    fields upsampled bicubically at two scales, north-up, values in [0, 1]) and a ground panorama
    *derived* from it by a fixed geometric mapping: geo-transforms' polar transform
    (``center="pixel"``, north at the centre column), then a per-location colour shift (gain and
    bias per channel), a "sky" band over the top ``sky_fraction`` of rows unrelated to the aerial,
    and Gaussian pixel noise. Everything is generated once from ``seed`` (numpy/torch generators,
    not the global RNG). Locations lie on a jittered grid; ``latlon`` (degrees) and ``utm``
    (metres, a local tangent plane) are consistent with each other. This is *not* geo-bench's
    synthetic world; it only has to be learnable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from geo_transforms import polar_transform

__all__ = ["SyntheticPairs"]


class SyntheticPairs(Dataset):
    """``n`` paired samples ``{"ground", "aerial", "id", "utm", "latlon"}`` (float32 images in [0, 1]).

    Args:
        n: number of locations.
        aerial_size: side S of the square aerial image.
        ground_size: (H, W) of the panorama (W divisible by 4 keeps rot90 exact).
        seed: generator seed.
        noise: std of the Gaussian pixel noise on the ground view.
        colour_shift: max per-channel gain/bias change on the ground view.
        sky_fraction: share of ground rows replaced by a sky gradient.
        split: the split name this instance reports (``"train"`` by default).
        id_offset: first location number (so two instances can hold disjoint locations).

    Example:
        >>> ds = SyntheticPairs(4, aerial_size=32, ground_size=(16, 64))
        >>> s = ds[0]
        >>> tuple(s["ground"].shape), tuple(s["aerial"].shape), s["id"]
        ((3, 16, 64), (3, 32, 32), 'loc00000')
    """

    def __init__(
        self,
        n: int,
        *,
        aerial_size: int = 64,
        ground_size: tuple[int, int] = (32, 128),
        seed: int = 0,
        noise: float = 0.03,
        colour_shift: float = 0.15,
        sky_fraction: float = 0.25,
        split: str = "train",
        id_offset: int = 0,
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.split = split
        gen = torch.Generator().manual_seed(seed)
        s = int(aerial_size)
        coarse = F.interpolate(
            torch.rand(n, 3, 4, 4, generator=gen), size=(s, s), mode="bicubic", align_corners=False
        )
        fine = F.interpolate(
            torch.rand(n, 3, 12, 12, generator=gen), size=(s, s), mode="bicubic", align_corners=False
        )
        aerial = (0.6 * coarse + 0.4 * fine).clamp(0, 1)
        h, w = ground_size
        ground = polar_transform(aerial, (h, w), center="pixel")
        gain = 1 + colour_shift * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
        bias = colour_shift * (2 * torch.rand(n, 3, 1, 1, generator=gen) - 1)
        ground = ground * gain + bias
        sky_rows = round(sky_fraction * h)
        if sky_rows:
            top = torch.rand(n, 3, 1, 1, generator=gen) * 0.3 + 0.6
            ramp = torch.linspace(0, 1, sky_rows).view(1, 1, sky_rows, 1)
            ground[:, :, :sky_rows] = (top * (1 - 0.3 * ramp)).expand(n, 3, sky_rows, w)
        ground = (ground + noise * torch.randn(ground.shape, generator=gen)).clamp(0, 1)
        self.aerial = aerial.contiguous()
        self.ground = ground.contiguous()
        self.ids = [f"loc{id_offset + i:05d}" for i in range(n)]
        side = math.ceil(math.sqrt(n))
        grid = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(
            -1, 2
        )[:n]
        jitter = torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5
        metres = (grid.to(torch.float64) + 0.5 * jitter) * 50.0 + id_offset * 1.0e4  # 50 m grid
        self.utm = torch.stack([500_000.0 + metres[:, 1], 4_000_000.0 + metres[:, 0]], -1)
        lat0 = 36.0
        lat = lat0 + metres[:, 0] / 111_195.0
        lon = -100.0 + metres[:, 1] / (111_195.0 * math.cos(math.radians(lat0)))
        self.latlon = torch.stack([lat, lon], -1)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor | str]:
        return {
            "ground": self.ground[i],
            "aerial": self.aerial[i],
            "id": self.ids[i],
            "utm": self.utm[i],
            "latlon": self.latlon[i],
        }
