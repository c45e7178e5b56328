"""Refine a located query with a fine-grained pose model: where inside its best tile the camera stood
and which way it faced (CCVPE, geo-retrieval's ``ccvpe`` recipes).

Convention:
    - The pose model is a run folder / ``best`` / ``last`` folder / weights file of a **pose recipe**
      (``recipe.task == "pose"``; :func:`~geo_bench.localize.index.load_checkpoint`). Every size
      comes from its recipe: panoramas at ``recipe.ground_size``, tiles at ``S =
      recipe.aerial_size[0]`` pixels.
    - Tile width ``tile_m``: the metres the model's training tiles spanned. Default: 64 m
      (:data:`~geo_bench.localize.index.DEFAULT_TILE_M`, the synthetic world's tiles) when the run's
      ``run.json`` says it trained on the synthetic world (``data.dataset == "synthetic"`` or a
      ``data.world``); otherwise it must be given. Ground sampling distance ``gsd = tile_m / S``.
    - The tile: the north-up square of ``tile_m`` centred on the candidate's centre, read from the
      index's maps (:class:`~geo_bench.localize.maps.TileReader`, GDAL bilinear, at ``S`` px). A
      tile that would cross its map's edge (``tile_m`` wider than the index's tiles) is moved inward
      until it fits (its centre is recorded). An index of pre-cut tiles (``--tiles``) gives the
      candidate's own tile, which must then be ``tile_m`` wide.
    - The query: decoded and resized to ``recipe.ground_size`` as ``geo-bench locate`` does
      (:func:`~geo_bench.localize.locate.load_query`: aspect check, or ``fov`` put into the
      panorama frame). Both views: ``BatchTransform.from_recipe(recipe)(batch, None, train=False)``.
    - Orientation: a heading per query (degrees clockwise from north of the panorama's centre
      column) is the model's prior with zero range (orientation known; north-centred queries have
      heading 0); without headings, no prior (orientation unknown).
    - Decoding (:func:`geo_retrieval.pose.inference.decode_model_pose`: the model's own settings): the heatmap's arg-max pixel (row, col),
      pixel centres at integers, tile centre ``c = (S - 1) / 2``, rows southwards. Offset from the
      tile centre (:func:`pixel_offset_m`): ``east = (col - c) gsd``, ``north = -(row - c) gsd``;
      position = tile centre + offset, in the map CRS (easting, northing metres). Heading: the
      orientation field's angle at the arg-max, degrees in [0, 360). Confidence: the softmax
      heatmap's peak probability (``1 / S^2`` when flat, 1 when all mass is on one pixel).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from geo_bench.localize.index import DEFAULT_TILE_M, LoadedModel, TileIndex, load_checkpoint
from geo_bench.localize.locate import load_query
from geo_bench.localize.maps import TileReader, open_maps, open_tile_folder
from geo_retrieval.pose.inference import decode_model_pose
from geo_retrieval.recipes import list_recipes
from geo_retrieval.training import BatchTransform

__all__ = ["PoseEstimate", "PoseRefiner", "pixel_offset_m", "pose_tile_m"]

log = logging.getLogger(__name__)

#: relative tolerance between ``tile_m`` and a pre-cut tile index's tile width
_TILE_M_RTOL = 1e-3


def pixel_offset_m(pixel: np.ndarray, size: int, gsd: float) -> np.ndarray:
    """(row, col) pixels of a north-up ``size``-px tile -> (east, north) metres from its centre.

    Args:
        pixel: (N, 2) row, col (pixel centres at integers, rows southwards).
        size: the tile side S in pixels (centre ``(S - 1) / 2``).
        gsd: metres per pixel.

    Returns:
        (N, 2) float64 east, north.

    Example:
        >>> pixel_offset_m(np.array([[0.0, 127.0], [63.5, 63.5]]), 128, 0.5)
        array([[31.75, 31.75],
               [ 0.  ,  0.  ]])
    """
    px = np.asarray(pixel, dtype=np.float64).reshape(-1, 2)
    c = (int(size) - 1) / 2.0
    return np.stack([(px[:, 1] - c) * gsd, (c - px[:, 0]) * gsd], axis=1)


def pose_tile_m(loaded: LoadedModel, tile_m: float | None = None) -> float:
    """The tile width in metres a pose run was trained on (module Convention).

    Raises:
        ValueError: ``tile_m`` not positive, or not given for a run not trained on the synthetic world.
    """
    if tile_m is not None:
        if not float(tile_m) > 0:
            raise ValueError(f"--refine-tile-m must be positive metres, got {tile_m}")
        return float(tile_m)
    data = loaded.run_info.get("data") or {}
    if isinstance(data, dict) and (data.get("dataset") == "synthetic" or data.get("world")):
        return DEFAULT_TILE_M
    raise ValueError(
        f"the tile width the pose model {loaded.weights} was trained on is unknown (no run.json saying "
        f"it trained on the synthetic world, whose tiles are {DEFAULT_TILE_M:g} m wide); pass "
        "--refine-tile-m M, the metres its training tiles spanned"
    )


@dataclass(frozen=True)
class PoseEstimate:
    """Refined poses of N queries (module Convention).

    Attributes:
        xy: (N, 2) float64 easting, northing in the map CRS.
        heading_deg: (N,) float64 degrees clockwise from north, in [0, 360).
        confidence: (N,) float64 peak probability of the position heatmap.
        pixel: (N, 2) float64 arg-max (row, col) in the model's ``S``-px tile.
        tile_xy: (N, 2) float64 centres of the tiles the model saw.
    """

    xy: np.ndarray
    heading_deg: np.ndarray
    confidence: np.ndarray
    pixel: np.ndarray
    tile_xy: np.ndarray


class PoseRefiner:
    """A pose model that refines (query panorama, candidate tile centre) pairs (module Convention).

    Args:
        loaded: a loaded pose run (:func:`~geo_bench.localize.index.load_checkpoint`).
        tile_m: the tile width the model was trained on (default: :func:`pose_tile_m`).
        batch_size: pairs per forward pass.

    Raises:
        ValueError: the run's recipe is not a pose recipe, or the tile width is unknown.

    Example (not run: needs a trained pose run and an index)::

        refiner = PoseRefiner.load("runs/ccvpe-small-abc-s0")
        res = Localizer("idx/").locate(["pano.jpg"], refine=refiner)
        res.queries[0].pose_latlon, res.queries[0].pose_heading
    """

    def __init__(self, loaded: LoadedModel, *, tile_m: float | None = None, batch_size: int = 16) -> None:
        recipe = loaded.recipe
        task = str(getattr(recipe, "task", "retrieval"))
        if task != "pose":
            raise ValueError(
                f"--refine needs a pose run, but {loaded.weights} is recipe {recipe.name!r} "
                f"({loaded.variant}), a {task} recipe; pass a run of a pose recipe such as ccvpe "
                f"(pose recipes: {', '.join(list_recipes(task='pose')) or 'none registered'})"
            )
        h, w = (int(v) for v in recipe.aerial_size)
        if h != w:
            raise ValueError(f"the pose recipe {recipe.name!r} takes square tiles, got aerial_size {(h, w)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.loaded = loaded
        self.size = h
        self.tile_m = pose_tile_m(loaded, tile_m)
        self.gsd = self.tile_m / self.size
        self.batch_size = batch_size
        self._transform = BatchTransform.from_recipe(recipe)

    @classmethod
    def load(
        cls,
        checkpoint: str | Path,
        *,
        tile_m: float | None = None,
        device: str = "cpu",
        batch_size: int = 16,
    ) -> PoseRefiner:
        """Load a pose run (run folder, ``best`` / ``last`` folder or weights file) and wrap it."""
        return cls(load_checkpoint(checkpoint, device=device), tile_m=tile_m, batch_size=batch_size)

    def identity(self) -> dict[str, Any]:
        """What the outputs record about the pose model and its tiles."""
        return {
            **self.loaded.identity(),
            "tile_m": self.tile_m,
            "px": self.size,
            "metres_per_px": self.gsd,
        }

    # ------------------------------------------------------------------------------------- model
    @torch.no_grad()
    def predict(
        self, ground: Tensor, tiles: Tensor, headings: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the model on pairs.

        Args:
            ground: (B, 3, H, W) panoramas, float in [0, 1] or uint8 (resized to the recipe's size).
            tiles: (B, 3, S, S) north-up tiles, float in [0, 1] or uint8.
            headings: (B,) known headings in degrees (prior of zero range), or None (unknown).

        Returns:
            ``(pixel (B, 2) row, col, heading (B,) degrees, confidence (B,))``, float64 on the CPU.
        """
        if ground.ndim != 4 or tiles.ndim != 4 or ground.shape[0] != tiles.shape[0]:
            raise ValueError(
                f"ground (B, 3, H, W) and tiles (B, 3, S, S) expected, got {tuple(ground.shape)} and "
                f"{tuple(tiles.shape)}"
            )
        if tuple(tiles.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"tiles must be {self.size}x{self.size}, got {tuple(tiles.shape[-2:])}")
        if headings is not None and tuple(headings.shape) != (ground.shape[0],):
            raise ValueError(f"headings must be ({ground.shape[0]},), got {tuple(headings.shape)}")
        device = self.loaded.device
        parts: list[tuple[Tensor, Tensor, Tensor]] = []
        for s in range(0, ground.shape[0], self.batch_size):
            e = s + self.batch_size
            batch = self._transform({"ground": ground[s:e], "aerial": tiles[s:e]}, None, train=False)
            g, a = batch["ground"].to(device), batch["aerial"].to(device)
            if headings is None:
                out = self.loaded.model(g, a)
            else:
                out = self.loaded.model(g, a, headings[s:e].to(device, torch.float32), 0.0)
            pixel, heading, prob = decode_model_pose(self.loaded.model, out)
            peak = prob.flatten(1).amax(dim=1)
            parts.append((pixel.double().cpu(), heading.double().cpu(), peak.double().cpu()))
        return (
            torch.cat([p[0] for p in parts]),
            torch.cat([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]),
        )

    def refine(
        self,
        ground: Tensor,
        tiles: Tensor,
        tile_xy: np.ndarray,
        headings: Tensor | None = None,
    ) -> PoseEstimate:
        """Poses of pairs whose tiles are centred on ``tile_xy`` (module Convention).

        Args:
            ground, tiles, headings: as :meth:`predict`.
            tile_xy: (B, 2) tile centres (easting, northing) in the map CRS.
        """
        centres = np.asarray(tile_xy, dtype=np.float64).reshape(-1, 2)
        if centres.shape[0] != ground.shape[0]:
            raise ValueError(f"tile_xy must be ({ground.shape[0]}, 2), got {centres.shape}")
        pixel, heading, peak = self.predict(ground, tiles, headings)
        px = pixel.numpy()
        return PoseEstimate(
            centres + pixel_offset_m(px, self.size, self.gsd),
            heading.numpy(),
            peak.numpy(),
            px,
            centres,
        )

    # ------------------------------------------------------------------------------- from an index
    def read_tiles(self, index: TileIndex, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tiles of ``tile_m`` at ``S`` px centred on index tiles ``tiles`` (module Convention).

        Returns:
            ``(tiles (N, 3, S, S) uint8, centres (N, 2) of the tiles read)``.
        """
        ids = np.asarray(tiles, dtype=np.int64).reshape(-1)
        xy = np.array(index.xy[ids], dtype=np.float64)
        if not index.manifest.get("maps"):  # pre-cut tiles: the candidate's own file
            if abs(index.tile_m - self.tile_m) > _TILE_M_RTOL * self.tile_m:
                raise ValueError(
                    f"index {index.path} holds pre-cut {index.tile_m:g} m tiles, the pose model takes "
                    f"{self.tile_m:g} m tiles; index the maps instead (--map), or pass --refine-tile-m "
                    f"{index.tile_m:g} if the model was trained on such tiles"
                )
            folder = open_tile_folder(index.manifest["tiles"]["csv"])
            return np.concatenate([folder.read(int(t), int(t) + 1, self.size) for t in ids]), xy
        grid = open_maps([m["path"] for m in index.manifest["maps"]], hash_files=False)
        k = np.asarray(index.map_index[ids], dtype=np.int64)
        bounds = np.array([grid.maps[int(j)].bounds for j in k], dtype=np.float64).reshape(-1, 4)
        half = self.tile_m / 2
        if ((bounds[:, 2] - bounds[:, 0]) < self.tile_m).any() or (
            (bounds[:, 3] - bounds[:, 1]) < self.tile_m
        ).any():
            raise ValueError(
                f"a map of index {index.path} is narrower than the pose model's {self.tile_m:g} m tiles"
            )
        # keep the tile inside its map (a window across the edge would be read stretched)
        xy[:, 0] = np.clip(xy[:, 0], bounds[:, 0] + half, bounds[:, 2] - half)
        xy[:, 1] = np.clip(xy[:, 1], bounds[:, 1] + half, bounds[:, 3] - half)
        with TileReader(grid) as reader:
            return reader.read(xy, k, self.tile_m, self.size), xy

    def refine_candidates(
        self,
        index: TileIndex,
        tiles: np.ndarray,
        images: Sequence[str | Path],
        *,
        fov: float | None = None,
        headings: np.ndarray | Sequence[float] | None = None,
    ) -> PoseEstimate:
        """Refine each query image against one index tile (its top-1 candidate).

        Args:
            index: the index the candidates come from (its maps are read).
            tiles: (N,) index tile of each query.
            images: N query image files.
            fov: limited field of view in degrees (``geo-bench locate``'s convention), or None.
            headings: (N,) known headings in degrees, or None (orientation unknown).
        """
        ids = np.asarray(tiles, dtype=np.int64).reshape(-1)
        if len(ids) != len(images):
            raise ValueError(f"one tile per image expected, got {len(ids)} tiles for {len(images)} images")
        head = None if headings is None else torch.as_tensor(np.asarray(headings, dtype=np.float64))
        if head is not None and tuple(head.shape) != (len(ids),):
            raise ValueError(f"headings must be ({len(ids)},), got {tuple(head.shape)}")
        recipe = self.loaded.recipe
        parts: list[PoseEstimate] = []
        for s in range(0, len(ids), self.batch_size):
            e = min(len(ids), s + self.batch_size)
            ground = torch.stack([load_query(Path(p), recipe, fov) for p in images[s:e]])
            arr, centres = self.read_tiles(index, ids[s:e])
            parts.append(
                self.refine(ground, torch.from_numpy(arr), centres, None if head is None else head[s:e])
            )
        return PoseEstimate(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in PoseEstimate.__dataclass_fields__)
        )
