"""A tiny, seeded, learnable aerial / panorama / segmentation data set for SMDT tests and benchmarks.

Convention:
    sample ``i`` of ``SMDTToyPairs(n, seed=s)`` is a deterministic function of ``(s, i)``:

    - an aerial label map of smooth blobs over the synthetic world's classes road, grass,
      building, tree and car (:data:`~geo_synthesis.smdt.segmentation.WORLD_CLASSES` indices),
      rendered with an "aerial" palette plus smooth noise -> ``"aerial"`` (3, S, S) in [0, 1];
    - the panorama labels: the aerial labels warped by the mixed perspective-polar mapping
      (``params``, nearest class after warping one-hot maps), with the top ``sky_fraction`` of the
      rows set to sky -> ``"ground_seg"`` (H, W) int64;
    - ``"ground"`` (3, H, W): the panorama labels rendered with a *different* "ground" palette
      (the colour shift the GAN must learn) plus noise.

    The ground is thus a known, learnable function of the aerial: a front-view warp, a per-class
    colour change, and sky on top. It is not realistic imagery; it exists so tests can measure
    that training helps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from geo_transforms import MixedParams, mixed_perspective_polar

from ..smdt.segmentation import WORLD_CLASSES

__all__ = ["AERIAL_PALETTE", "GROUND_PALETTE", "SMDTToyPairs"]

_BLOB_CLASSES = (1, 3, 6, 7, 8)  # road, grass, building, tree, car
# RGB in [0, 1] per world class (sky, road, sidewalk, grass, water, parking, building, tree, car)
AERIAL_PALETTE = torch.tensor(
    [
        [0.6, 0.8, 1.0],
        [0.35, 0.35, 0.35],
        [0.6, 0.6, 0.55],
        [0.45, 0.7, 0.3],
        [0.2, 0.3, 0.7],
        [0.5, 0.5, 0.5],
        [0.8, 0.5, 0.4],
        [0.1, 0.4, 0.1],
        [0.9, 0.9, 0.1],
    ]
)
GROUND_PALETTE = torch.tensor(
    [
        [0.55, 0.75, 0.95],
        [0.2, 0.2, 0.25],
        [0.7, 0.7, 0.7],
        [0.3, 0.8, 0.2],
        [0.1, 0.2, 0.5],
        [0.4, 0.4, 0.45],
        [0.9, 0.8, 0.6],
        [0.05, 0.3, 0.05],
        [0.8, 0.1, 0.1],
    ]
)


class SMDTToyPairs(Dataset):
    """Seeded toy pairs (see the module docstring).

    Args:
        n: number of samples.
        aerial_size: S (square aerial side).
        ground_size: (H, W) of the panorama and its labels.
        params: mixed mapping parameters (default ``MixedParams(meters_per_pixel=0.4)``).
        sky_fraction: fraction of panorama rows that are sky.
        noise: amplitude of the smooth colour noise.
        seed: base seed.
        split: name recorded for the trainer (never ``"test"``).
    """

    def __init__(
        self,
        n: int,
        *,
        aerial_size: int = 64,
        ground_size: tuple[int, int] = (32, 128),
        params: MixedParams | None = None,
        sky_fraction: float = 0.3,
        noise: float = 0.05,
        seed: int = 0,
        split: str = "train",
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n, self.aerial_size, self.ground_size = n, int(aerial_size), tuple(ground_size)
        self.params = params or MixedParams(meters_per_pixel=0.4)
        self.sky_fraction, self.noise, self.seed, self.split = sky_fraction, noise, seed, split
        self.ids = [f"toy{seed}-{i:05d}" for i in range(n)]

    def __len__(self) -> int:
        return self.n

    def _smooth(self, gen: torch.Generator, channels: int, low: int, size: tuple[int, int]) -> Tensor:
        x = torch.randn(1, channels, low, low, generator=gen)
        return F.interpolate(x, size=size, mode="bicubic", align_corners=False)[0]

    def __getitem__(self, i: int) -> dict[str, Tensor | str]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        s, (h, w) = self.aerial_size, self.ground_size
        blobs = self._smooth(gen, len(_BLOB_CLASSES), 5, (s, s)).argmax(dim=0)
        aerial_labels = torch.tensor(_BLOB_CLASSES)[blobs]  # (S, S) world classes
        aerial = AERIAL_PALETTE[aerial_labels].permute(2, 0, 1)
        aerial = (aerial + self.noise * self._smooth(gen, 3, 8, (s, s))).clamp(0, 1)

        onehot = F.one_hot(aerial_labels, len(WORLD_CLASSES)).permute(2, 0, 1)[None].float()
        p = self.params
        warped = mixed_perspective_polar(
            onehot,
            (h, w),
            near_fraction=p.near_fraction,
            camera_height=p.camera_height,
            meters_per_pixel=p.meters_per_pixel,
            blend=p.blend,
            center=p.center,
        )[0]
        ground_seg = warped.argmax(dim=0)
        ground_seg[: round(self.sky_fraction * h)] = 0  # sky
        ground = GROUND_PALETTE[ground_seg].permute(2, 0, 1)
        ground = (ground + self.noise * self._smooth(gen, 3, 8, (h, w))).clamp(0, 1)
        return {"ground": ground, "aerial": aerial, "ground_seg": ground_seg.long(), "id": self.ids[i]}
