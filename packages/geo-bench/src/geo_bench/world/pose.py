"""Fine-grained pose samples from the synthetic world: a panorama and an aerial tile that holds the
camera off its centre, with the camera's exact pixel and heading.

Convention:
    - Tiles are north-up, ``aerial_m`` metres wide at ``aerial_size`` pixels; the tile centre is
      offset from the camera uniformly in ``[-max_offset_m, max_offset_m]^2`` (east, north), drawn
      per sample (``SyntheticWorld(tile_offset_m=...)``; the default, a quarter tile, keeps the
      camera where VIGOR's positives keep it).
    - ``camera_px`` = (row, col) of the camera in the tile, pixel centres at integers, tile centre
      at ``((S - 1) / 2, (S - 1) / 2)``, rows southwards: ``row = (S - 1) / 2 - dn / gsd``,
      ``col = (S - 1) / 2 + de / gsd`` with ``(de, dn)`` = camera minus tile centre in metres.
    - ``heading``: the panorama's yaw (degrees clockwise from north of its centre column): 0 for
      the rendered north-centred panoramas; models roll them for the unknown-orientation protocol.
    - Samples (:class:`WorldPose`) carry ``ground`` (3, H, W) and ``aerial`` (3, S, S) float32 in
      [0, 1], ``id``, ``utm`` (camera easting / northing), ``aerial_utm`` (tile centre),
      ``camera_px``, ``aerial_px`` (= S), ``heading`` and ``metres_per_px`` (geo-retrieval's pose
      batch contract, :mod:`geo_retrieval.pose.inference`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .city import CityConfig
from .dataset import RenderConfig, SyntheticWorld

__all__ = ["WorldPose", "camera_pixels", "render_world_pose"]


def camera_pixels(camera_utm: np.ndarray, tile_utm: np.ndarray, size: int, gsd: float) -> np.ndarray:
    """(N, 2) (row, col) of cameras in north-up tiles of ``size`` px at ``gsd`` m/px (see module)."""
    d = np.asarray(camera_utm, np.float64) - np.asarray(tile_utm, np.float64)
    c = (size - 1) / 2.0
    return np.stack([c - d[:, 1] / gsd, c + d[:, 0] / gsd], axis=1)


def render_world_pose(
    split: str,
    num: int,
    seed: int = 0,
    *,
    city: CityConfig | Sequence[CityConfig] | None = None,
    ground_size: tuple[int, int] = (64, 256),
    aerial_size: int = 128,
    aerial_m: float = 64.0,
    max_offset_m: float | None = None,
    split_fractions: tuple[float, float, float] = (0.55, 0.2, 0.25),
    progress: bool = False,
    chunk: int = 64,
) -> dict[str, np.ndarray]:
    """Render ``num`` pose samples of a world split into uint8 / float64 arrays (see module).

    Returns:
        ``{"ground": (N, 3, H, W) uint8, "aerial": (N, 3, S, S) uint8, "ids", "utm", "aerial_utm",
        "camera_px": (N, 2) float64, "heading": (N,) float32}`` plus ``gsd`` as a 0-d array.
    """
    offset = aerial_m / 4 if max_offset_m is None else float(max_offset_m)
    if not 0 <= offset < aerial_m / 2:
        raise ValueError(
            f"max_offset_m must be in [0, aerial_m / 2) = [0, {aerial_m / 2}), got {max_offset_m}"
        )
    world = SyntheticWorld(
        split,
        num=num,
        seed=seed,
        ground_size=ground_size,
        aerial_size=aerial_size,
        city=city,
        render=RenderConfig(aerial_m=aerial_m),
        split_fractions=split_fractions,
        tile_offset_m=offset,
    )
    h, w = ground_size
    s = aerial_size
    ground = np.empty((num, 3, h, w), np.uint8)
    aerial = np.empty((num, 3, s, s), np.uint8)
    tile = np.empty((num, 2), np.float64)
    for start in tqdm(range(0, num, chunk), desc=f"render pose {split}", disable=not progress, leave=False):
        idx = list(range(start, min(num, start + chunk)))
        b = world.render_batch(idx)
        ground[idx] = (b["ground"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        aerial[idx] = (b["aerial"].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        tile[idx] = b["aerial_utm"].numpy()
    utm = world.utm.numpy()
    gsd = aerial_m / aerial_size
    return {
        "ground": ground,
        "aerial": aerial,
        "ids": np.array(world.ids),
        "utm": utm,
        "aerial_utm": tile,
        "camera_px": camera_pixels(utm, tile, s, gsd),
        "heading": np.zeros(num, np.float32),
        "gsd": np.array(gsd),
    }


class WorldPose(Dataset):
    """In-memory pose samples (arrays of :func:`render_world_pose`; see the module Convention).

    Args:
        arrays: the dict :func:`render_world_pose` returns (or the same arrays read from a cache).
        split: the split's name (the trainer refuses to select on ``"test"``).
    """

    def __init__(self, arrays: dict[str, np.ndarray], split: str) -> None:
        need = ("ground", "aerial", "ids", "utm", "aerial_utm", "camera_px", "heading", "gsd")
        missing = [k for k in need if k not in arrays]
        if missing:
            raise KeyError(f"pose arrays lack {missing}; make them with render_world_pose")
        n = len(arrays["ids"])
        for k in need[:-1]:
            if len(arrays[k]) != n:
                raise ValueError(f"pose array {k!r} has {len(arrays[k])} rows, expected {n} (one per id)")
        self.arrays = arrays
        self.split = split
        self.gsd = float(arrays["gsd"])
        self.aerial_px = int(arrays["aerial"].shape[-1])

    def __len__(self) -> int:
        return len(self.arrays["ids"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        a = self.arrays
        return {
            "ground": torch.from_numpy(a["ground"][i]).float().div_(255.0),
            "aerial": torch.from_numpy(a["aerial"][i]).float().div_(255.0),
            "id": str(a["ids"][i]),
            "utm": torch.from_numpy(a["utm"][i].copy()),
            "aerial_utm": torch.from_numpy(a["aerial_utm"][i].copy()),
            "camera_px": torch.from_numpy(a["camera_px"][i].copy()),
            "aerial_px": self.aerial_px,
            "heading": float(a["heading"][i]),
            "metres_per_px": self.gsd,
        }

    @property
    def protocol(self) -> dict[str, Any]:
        """The choices that change the numbers (recorded in result records)."""
        cam = self.arrays["camera_px"]
        centre = (self.aerial_px - 1) / 2
        return {
            "dataset": "synthetic-pose",
            "split": self.split,
            "n": len(self),
            "aerial_px": self.aerial_px,
            "metres_per_px": self.gsd,
            "max_offset_m": float(np.abs(cam - centre).max() * self.gsd) if len(self) else 0.0,
            "labels": "exact (rendered)",
        }
