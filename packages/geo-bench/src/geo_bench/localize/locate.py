"""Localise street-level images against a tile index: candidates, refined position, outputs, metrics.

Convention:
    - Queries are panoramas in the model's frame: equirectangular, column W/2 looking north when the
      orientation is known (the synthetic world's and CVUSA's convention). Without ``fov`` an image
      must have the recipe's panorama aspect ratio W/H (within 5 %); it is resized (bilinear,
      antialiased) to the recipe's ``ground_size``. With ``fov`` (degrees) the image is a
      limited field of view: it is resized to ``(H, int(fov / 360 * W))`` and put in the first
      columns of the full panorama frame, the rest filled with the recipe's normalisation mean
      (:func:`geo_transforms.panorama.limit_fov`, ``shift = 0``; the convention of
      :mod:`geo_bench.protocols.fov`). Then the evaluation preprocessing
      (``BatchTransform.from_recipe(recipe)(..., train=False)``) and ``encode_ground``.
    - Candidates: the top-k tiles by score (cosine), best first, with the tile centre in the map CRS
      (``x``, ``y`` = easting, northing metres) and WGS84 (``lat``, ``lon`` degrees).
    - Heading: the bearing of the query's centre column, degrees clockwise from north in [0, 360)
      (the world's ``yaw``: column ``j`` of a W-column panorama looks at ``heading + 360 (j - W/2) / W``).
      Orientation-aware recipes (DSM) estimate it from the alignment shift of the model's ``match``
      (:func:`geo_retrieval.search.dsm_orientations`): the query column ``v`` aligns with the tile's
      polar column ``(shift + v) mod W`` and ``heading = 360 shift / W``; with a north-centred query
      the shift is 0. Other recipes assume north-centred panoramas: with ``orientation="known"`` they
      report no heading (``None``); with ``"unknown"`` the query is searched at ``headings`` evenly
      spaced headings ``h_r = 360 r / headings``: it is rolled by ``round(h_r W / 360)`` columns
      (``torch.roll``, which brings the column that looks north to W/2 when ``h_r`` is the true
      heading), each rolled query is searched, and each tile keeps its best score over the headings
      and that heading (exact: a tile of the merged top-k is in the top-k of its best heading).
    - Refined position: the score-weighted mean of the centres of the top-k tiles that lie within
      one tile width (``tile_m``, Euclidean in the map CRS) of the best tile's centre, with weights
      ``max(score - s_min, 0)`` where ``s_min`` is the lowest top-k score (so the weakest candidate
      counts zero and the best always counts); equal to the best centre when no other tile is close
      or all scores tie. Computed in the map CRS, converted to lat/lon.
    - Metrics with a truth (lat/lon degrees): ``position_distances`` (great circle) of the ranked
      candidates and ``radius_recall`` (``R@k<r m`` for k = 1, 5, 10 up to top-k, r = 25, 50, 100),
      median / P90 / mean metre error of the top-1 tile and of the refined position
      (:mod:`geo_bench.metrics.localisation`); when headings are estimated and the truth CSV has a
      ``heading`` column, the median / P90 circular error of the top-1 candidate's heading.
    - Pose refinement (``refine=``, a :class:`~geo_bench.localize.refine.PoseRefiner`): a
      fine-grained pose model looks at the tile centred on each query's top-1 candidate and gives a
      position inside it, a heading and a confidence (conventions in :mod:`.refine`); the
      orientation prior is heading 0 with zero range when ``orientation="known"`` (north-centred
      queries), none when unknown. With a truth: ``pose_`` median / P90 / mean metre errors of that
      position, and with truth headings the median / P90 error of its heading.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from geo_bench.localize.index import (
    DEFAULT_TILE_M,
    IndexMismatchError,
    LoadedModel,
    TileIndex,
    _as_tensor,
    build_index,
    load_checkpoint,
    search,
)
from geo_bench.localize.maps import to_latlon
from geo_bench.localize.report import write_report
from geo_bench.metrics.localisation import DEFAULT_RADII_M, position_distances, radius_recall
from geo_bench.metrics.orientation import circular_error_deg
from geo_retrieval.embedding import embed
from geo_retrieval.geodesy import great_circle_distance
from geo_retrieval.recipes import Recipe
from geo_retrieval.search import dsm_orientations
from geo_retrieval.training import BatchTransform
from geo_transforms.panorama import fov_width, limit_fov

if TYPE_CHECKING:  # refine.py imports this module (load_query)
    from geo_bench.localize.refine import PoseRefiner

__all__ = [
    "DEFAULT_HEADINGS",
    "Candidate",
    "LocateResult",
    "Localizer",
    "QueryResult",
    "load_query",
    "read_truth",
    "read_truth_headings",
    "refine_position",
]

log = logging.getLogger(__name__)

#: relative tolerance on the panorama aspect ratio W/H without ``fov``
ASPECT_TOLERANCE = 0.05
#: headings searched for orientation-unaware recipes when the orientation is unknown (22.5 degrees apart)
DEFAULT_HEADINGS = 16


@dataclass(frozen=True)
class Candidate:
    """One retrieved tile: ``rank`` 0 = best; ``x``, ``y`` map-CRS metres; ``lat``, ``lon`` degrees;
    ``heading_deg`` for orientation-aware recipes, else None."""

    rank: int
    tile: int
    score: float
    x: float
    y: float
    lat: float
    lon: float
    heading_deg: float | None = None


@dataclass(frozen=True)
class QueryResult:
    """Candidates and refined position of one query (``refined_latlon`` = (lat, lon) degrees,
    ``refined_xy`` = (easting, northing) in the map CRS); with a pose model
    (:class:`~geo_bench.localize.refine.PoseRefiner`) the top-1 candidate's pose: ``pose_xy``,
    ``pose_latlon``, ``pose_heading`` (degrees clockwise from north), ``pose_confidence`` (peak
    probability) and ``pose_tile_xy`` (centre of the tile the pose model saw); None without."""

    id: str
    file: str
    candidates: tuple[Candidate, ...]
    refined_xy: tuple[float, float]
    refined_latlon: tuple[float, float]
    truth_latlon: tuple[float, float] | None = None
    error_m: float | None = None
    refined_error_m: float | None = None
    pose_xy: tuple[float, float] | None = None
    pose_latlon: tuple[float, float] | None = None
    pose_heading: float | None = None
    pose_confidence: float | None = None
    pose_tile_xy: tuple[float, float] | None = None
    pose_error_m: float | None = None
    pose_heading_error_deg: float | None = None


@dataclass(frozen=True)
class LocateResult:
    """All queries of one :meth:`Localizer.locate` call plus metrics when a truth was given."""

    queries: tuple[QueryResult, ...]
    crs: str
    orientation: str
    fov_deg: float | None
    backend: str
    metrics: dict[str, float] = field(default_factory=dict)
    #: (N_q, ...) float32 query descriptors, at each query's best heading when headings were
    #: searched (for the HTML heat maps; not written to JSON)
    descriptors: np.ndarray | None = field(default=None, repr=False, compare=False)
    #: headings searched per query (orientation unknown, recipe not orientation-aware), else None
    headings_searched: int | None = None
    #: the pose model that refined the top-1 candidates (:meth:`PoseRefiner.identity` plus the
    #: orientation prior), else None
    refine: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "coordinates": "lat/lon WGS84 degrees (latitude first); x/y metres in crs",
            "orientation": self.orientation,
            "headings_searched": self.headings_searched,
            "fov_deg": self.fov_deg,
            "backend": self.backend,
            "refine": self.refine,
            "metrics": self.metrics,
            "queries": [
                {
                    "id": q.id,
                    "file": q.file,
                    "refined": {
                        "lat": q.refined_latlon[0],
                        "lon": q.refined_latlon[1],
                        "x": q.refined_xy[0],
                        "y": q.refined_xy[1],
                    },
                    "truth": None
                    if q.truth_latlon is None
                    else {"lat": q.truth_latlon[0], "lon": q.truth_latlon[1]},
                    "error_m": q.error_m,
                    "refined_error_m": q.refined_error_m,
                    "pose": _pose_dict(q),
                    "pose_error_m": q.pose_error_m,
                    "pose_heading_error_deg": q.pose_heading_error_deg,
                    "candidates": [c.__dict__ for c in q.candidates],
                }
                for q in self.queries
            ],
        }

    def to_geojson(self) -> dict[str, Any]:
        """FeatureCollection of points, coordinates [lon, lat] (EPSG:4326, RFC 7946 order)."""
        feats: list[dict[str, Any]] = []
        for q in self.queries:
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [q.refined_latlon[1], q.refined_latlon[0]]},
                    "properties": {"id": q.id, "kind": "refined", "score": q.candidates[0].score},
                }
            )
            if q.pose_latlon is not None:
                feats.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [q.pose_latlon[1], q.pose_latlon[0]]},
                        "properties": {
                            "id": q.id,
                            "kind": "pose",
                            "heading_deg": q.pose_heading,
                            "confidence": q.pose_confidence,
                            "error_m": q.pose_error_m,
                        },
                    }
                )
            for c in q.candidates:
                feats.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [c.lon, c.lat]},
                        "properties": {
                            "id": q.id,
                            "kind": "candidate",
                            "rank": c.rank,
                            "tile": c.tile,
                            "score": c.score,
                            "heading_deg": c.heading_deg,
                        },
                    }
                )
            if q.truth_latlon is not None:
                feats.append(
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [q.truth_latlon[1], q.truth_latlon[0]]},
                        "properties": {"id": q.id, "kind": "truth"},
                    }
                )
        return {"type": "FeatureCollection", "features": feats}

    def csv_rows(self) -> list[list[Any]]:
        """Header plus one row per (query, candidate); refined, truth and pose repeated per row
        (the pose columns are empty without a pose model)."""
        rows: list[list[Any]] = [
            [
                "id",
                "file",
                "rank",
                "tile",
                "score",
                "lat",
                "lon",
                "x",
                "y",
                "heading_deg",
                "refined_lat",
                "refined_lon",
                "truth_lat",
                "truth_lon",
                "error_m",
                "pose_lat",
                "pose_lon",
                "pose_x",
                "pose_y",
                "pose_heading_deg",
                "pose_confidence",
                "pose_error_m",
            ]
        ]
        for q in self.queries:
            t = q.truth_latlon or (None, None)
            pose = _pose_cells(q)
            for c in q.candidates:
                rows.append(
                    [
                        q.id,
                        q.file,
                        c.rank,
                        c.tile,
                        f"{c.score:.6f}",
                        f"{c.lat:.9f}",
                        f"{c.lon:.9f}",
                        f"{c.x:.3f}",
                        f"{c.y:.3f}",
                        "" if c.heading_deg is None else f"{c.heading_deg:.2f}",
                        f"{q.refined_latlon[0]:.9f}",
                        f"{q.refined_latlon[1]:.9f}",
                        "" if t[0] is None else f"{t[0]:.9f}",
                        "" if t[1] is None else f"{t[1]:.9f}",
                        "" if q.error_m is None else f"{q.error_m:.3f}",
                        *pose,
                    ]
                )
        return rows

    def save(self, out: str | Path, *, html: bool = False, index: TileIndex | None = None) -> dict[str, Path]:
        """Write ``locate.json``, ``locate.geojson``, ``locate.csv`` (and ``report.html``) into ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "locate.json", "geojson": out / "locate.geojson", "csv": out / "locate.csv"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        paths["geojson"].write_text(json.dumps(self.to_geojson()) + "\n")
        with open(paths["csv"], "w", newline="") as fh:
            csv.writer(fh).writerows(self.csv_rows())
        if html:
            if index is None:
                raise ValueError("the HTML report needs the index")
            paths["html"] = write_report(self, index, out / "report.html")
        return paths


def _pose_dict(q: QueryResult) -> dict[str, Any] | None:
    if q.pose_xy is None or q.pose_latlon is None:
        return None
    tile = q.pose_tile_xy or (None, None)
    return {
        "lat": q.pose_latlon[0],
        "lon": q.pose_latlon[1],
        "x": q.pose_xy[0],
        "y": q.pose_xy[1],
        "heading_deg": q.pose_heading,
        "confidence": q.pose_confidence,
        "tile_x": tile[0],
        "tile_y": tile[1],
    }


def _pose_cells(q: QueryResult) -> list[str]:
    if q.pose_xy is None or q.pose_latlon is None:
        return [""] * 7
    return [
        f"{q.pose_latlon[0]:.9f}",
        f"{q.pose_latlon[1]:.9f}",
        f"{q.pose_xy[0]:.3f}",
        f"{q.pose_xy[1]:.3f}",
        "" if q.pose_heading is None else f"{q.pose_heading:.2f}",
        "" if q.pose_confidence is None else f"{q.pose_confidence:.6f}",
        "" if q.pose_error_m is None else f"{q.pose_error_m:.3f}",
    ]


def load_query(path: Path, recipe: Recipe, fov: float | None = None) -> Tensor:
    """One image file -> (3, H, W) float in [0, 1] in ``recipe``'s full panorama frame (module
    Convention: aspect check without ``fov``, else the view put into the panorama frame)."""
    if not path.is_file():
        raise FileNotFoundError(f"query image {path} does not exist")
    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise OSError(f"query image {path} cannot be decoded ({exc})") from None
    img = torch.from_numpy(arr).permute(2, 0, 1).float()[None] / 255.0  # (1, 3, h, w)
    h, w = (int(v) for v in recipe.ground_size)
    aspect = arr.shape[1] / arr.shape[0]
    if fov is None:
        if abs(aspect / (w / h) - 1) > ASPECT_TOLERANCE:
            raise ValueError(
                f"query image {path} is {arr.shape[1]}x{arr.shape[0]} (aspect {aspect:.2f}); the recipe {recipe.name} takes "
                f"360-degree panoramas of aspect {w / h:.2f} ({w}x{h}); pass --fov DEG for a limited field of view"
            )
        return F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    if not 0 < fov <= 360:
        raise ValueError(f"--fov must lie in (0, 360] degrees, got {fov}")
    wf = fov_width(fov, w)
    if wf < 1:
        raise ValueError(f"--fov {fov} keeps no column of a {w}-column panorama")
    canvas = torch.zeros(1, 3, h, w)
    canvas[..., :wf] = F.interpolate(img, size=(h, wf), mode="bilinear", align_corners=False, antialias=True)
    fill = torch.tensor(recipe.normalisation.mean, dtype=torch.float32)
    return limit_fov(canvas, float(fov), 0, fill=fill)[0]


def refine_position(xy: np.ndarray, scores: np.ndarray, tile_m: float) -> np.ndarray:
    """Refined position of one query (module Convention).

    Args:
        xy: (k, 2) candidate centres (easting, northing) metres, best first.
        scores: (k,) their scores, decreasing.
        tile_m: tile width in metres.

    Returns:
        (2,) float64 (easting, northing).

    Example:
        >>> refine_position(np.array([[0.0, 0.0], [10.0, 0.0], [500.0, 0.0]]), np.array([0.9, 0.7, 0.5]), 64.0)
        array([3.33333333, 0.        ])
    """
    xy = np.asarray(xy, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    near = np.linalg.norm(xy - xy[0], axis=1) <= tile_m
    w = np.clip(s - s.min(), 0.0, None) * near
    if w.sum() <= 0:
        return xy[0].copy()
    return (xy * w[:, None]).sum(0) / w.sum()


def read_truth(path: str | Path) -> dict[str, tuple[float, float]]:
    """Truth CSV (header with ``lat``, ``lon`` and ``id`` and/or ``file``) -> {key: (lat, lon)}; keys are
    the id, the file as written and its base name and stem, so a query matches by any of them."""
    return {k: (v[0], v[1]) for k, v in _read_truth_rows(path).items()}


def read_truth_headings(path: str | Path) -> dict[str, float]:
    """The optional ``heading`` column of a truth CSV (degrees clockwise from north of the image's
    centre column, the world's ``yaw``) -> {key: heading}, keyed as :func:`read_truth`; empty when
    the CSV has no heading column."""
    return {k: v[2] for k, v in _read_truth_rows(path).items() if v[2] is not None}


def _read_truth_rows(path: str | Path) -> dict[str, tuple[float, float, float | None]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--truth {path} does not exist")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"lat", "lon"} <= cols or not ({"id", "file"} & cols):
            raise ValueError(
                f"--truth {path} needs a header with lat, lon and id or file; got {sorted(cols)}"
            )
        out: dict[str, tuple[float, float, float | None]] = {}
        for i, row in enumerate(reader, start=2):
            try:
                lat, lon = float(row["lat"]), float(row["lon"])
                heading = float(row["heading"]) if row.get("heading") not in (None, "") else None
            except (TypeError, ValueError):
                raise ValueError(
                    f"--truth {path} line {i}: lat/lon/heading are not numbers ({row})"
                ) from None
            for key in (row.get("id"), row.get("file")):
                if key:
                    out[key] = (lat, lon, heading)
                    out[Path(key).name] = (lat, lon, heading)
                    out[Path(key).stem] = (lat, lon, heading)
    return out


def _truth_metrics(
    truth_ll: np.ndarray,
    truth_heading: np.ndarray,
    tiles_ll: np.ndarray,
    idx: Tensor,
    refined_ll: np.ndarray,
    headings: np.ndarray | None,
    pose_ll: np.ndarray | None,
    pose_heading: np.ndarray | None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics against the truth (module Convention) and the per-query errors they summarise.

    Args:
        truth_ll: (N, 2) true lat, lon. truth_heading: (N,) true headings (NaN: unknown).
        tiles_ll: (T, 2) tile centres. idx: (N, k) ranked tiles. refined_ll: (N, 2).
        headings: (N,) top-1 headings, or None. pose_ll: (N, 2) pose-refined lat, lon, or None.
        pose_heading: (N,) pose headings, or None.

    Returns:
        ``(metrics, errors)``; errors keyed ``top1``, ``refined``, ``pose`` (metres) and
        ``heading``, ``pose_heading`` (degrees, NaN where the truth has no heading).
    """
    dist = position_distances(truth_ll, tiles_ll, idx, "latlon")
    ks = tuple(k for k in (1, 5, 10) if k <= idx.shape[1])
    metrics = radius_recall(dist, ks, DEFAULT_RADII_M)
    errors = {"top1": dist[:, 0], "refined": great_circle_distance(truth_ll, refined_ll)}
    if pose_ll is not None:
        errors["pose"] = great_circle_distance(truth_ll, pose_ll)
    for key, name in (("top1", ""), ("refined", "refined_"), ("pose", "pose_")):
        if key in errors:
            e = errors[key]
            metrics[f"{name}median_error_m"] = float(np.percentile(e, 50))
            metrics[f"{name}p90_error_m"] = float(np.percentile(e, 90))
            metrics[f"{name}mean_error_m"] = float(np.mean(e))
    metrics["n_query"] = float(len(truth_ll))
    known = np.flatnonzero(np.isfinite(truth_heading))
    for key, name, est in (("heading", "", headings), ("pose_heading", "pose_", pose_heading)):
        if est is None or not len(known):
            continue
        e = np.full(len(truth_ll), np.nan)
        e[known] = circular_error_deg(np.asarray(est, dtype=np.float64)[known], truth_heading[known])
        errors[key] = e
        metrics[f"{name}median_heading_error_deg"] = float(np.median(e[known]))
        metrics[f"{name}p90_heading_error_deg"] = float(np.percentile(e[known], 90))
    return metrics, errors


class Localizer:
    """Map tiles -> index -> localised queries: the API behind ``geo-bench index`` and ``locate``.

    Args:
        index: an index folder (:class:`~geo_bench.localize.index.TileIndex`) or a loaded one.
        model: the model (default: the checkpoint recorded in the index, or ``checkpoint``).
        checkpoint: run folder / weights to load when ``model`` is not given.
        device: torch device.

    Raises:
        IndexMismatchError: the model's weights differ from the index's (digest, recipe, variant).

    Example (not run: needs a trained model and a map)::

        loc = Localizer.index("runs/safa", ["ortho.tif"], "idx/")
        res = loc.locate(["pano.jpg"], top_k=10)
        res.queries[0].refined_latlon
    """

    def __init__(
        self,
        index: str | Path | TileIndex,
        *,
        model: LoadedModel | None = None,
        checkpoint: str | Path | None = None,
        device: str = "cpu",
    ) -> None:
        self.tiles = index if isinstance(index, TileIndex) else TileIndex.load(index)
        rec = self.tiles.manifest["model"]
        if model is None:
            ckpt = checkpoint or rec.get("checkpoint")
            model = load_checkpoint(ckpt, recipe=rec.get("recipe"), variant=rec.get("variant"), device=device)
        mine = model.identity()
        for key in ("recipe", "variant", "weights_digest"):
            if mine[key] != rec.get(key):
                raise IndexMismatchError(
                    f"index {self.tiles.path} was built with another model ({key} {rec.get(key)!r}; "
                    f"{model.weights} has {mine[key]!r}); rebuild the index with this checkpoint"
                )
        self.model = model

    @classmethod
    def index(
        cls,
        checkpoint: str | Path | LoadedModel,
        maps: Sequence[str | Path],
        out: str | Path,
        *,
        tile_m: float = DEFAULT_TILE_M,
        stride_m: float | None = None,
        px: int | None = None,
        device: str = "cpu",
        **kwargs: Any,
    ) -> Localizer:
        """Build (or resume) an index of ``maps`` (:func:`~geo_bench.localize.index.build_index`) and
        return a Localizer on it."""
        loaded = (
            checkpoint if isinstance(checkpoint, LoadedModel) else load_checkpoint(checkpoint, device=device)
        )
        path = build_index(loaded, maps, out, tile_m=tile_m, stride_m=stride_m, px=px, **kwargs)
        return cls(path, model=loaded)

    # ---------------------------------------------------------------------------------- queries
    def _load_query(self, path: Path, fov: float | None) -> Tensor:
        """One image file -> (3, H, W) float in [0, 1] in the recipe's full panorama frame."""
        return load_query(path, self.model.recipe, fov)

    def embed_queries(
        self, images: Sequence[str | Path], *, fov: float | None = None, batch_size: int = 32
    ) -> Tensor:
        """Image files -> (N, ...) float32 ground descriptors on the CPU (module Convention)."""
        return self.embed_queries_rolled(images, (0,), fov=fov, batch_size=batch_size)[0]

    def embed_queries_rolled(
        self,
        images: Sequence[str | Path],
        shifts: Sequence[int],
        *,
        fov: float | None = None,
        batch_size: int = 32,
    ) -> Tensor:
        """Image files -> (R, N, ...) float32 ground descriptors on the CPU of each query rolled by
        ``shifts[r]`` columns of the recipe's panorama width (``torch.roll`` along W, after the
        resize; module Convention). Each image is decoded once; ``batch_size`` bounds the rolled
        panoramas encoded at a time."""
        transform = BatchTransform.from_recipe(self.model.recipe)
        px = int(self.tiles.manifest["tiling"]["px"])
        shifts = [int(v) for v in shifts]
        per = max(1, batch_size // len(shifts))
        sizes: list[int] = []

        def batches() -> Iterator[Tensor]:
            # decoded and prepared on the CPU a few images at a time; embed encodes each on the device
            for s in range(0, len(images), per):
                ground = torch.stack([self._load_query(Path(p), fov) for p in images[s : s + per]])
                sizes.append(ground.shape[0])
                dummy = torch.zeros(ground.shape[0], 3, px, px)
                prepared = transform({"ground": ground, "aerial": dummy}, None, train=False)["ground"]
                yield torch.cat([torch.roll(prepared, v, dims=-1) if v else prepared for v in shifts])

        out, _ = embed(
            {None: self.model.encoder.encode_ground},
            batches(),
            device=self.model.device,
            out_device="cpu",
            desc="embed queries",
        )
        # rows come batch by batch, rotation-major inside a batch: (b0 r0, b0 r1, ..., b1 r0, ...)
        parts = torch.split(out[None], [b * len(shifts) for b in sizes])
        per_batch = [x.reshape(len(shifts), b, *x.shape[1:]) for x, b in zip(parts, sizes)]
        return torch.cat(per_batch, dim=1)

    def locate(
        self,
        images: Sequence[str | Path],
        *,
        top_k: int = 10,
        orientation: str = "known",
        fov: float | None = None,
        truth: str | Path | dict[str, tuple[float, float]] | None = None,
        backend: str = "exact",
        ids: Sequence[str] | None = None,
        headings_n: int = DEFAULT_HEADINGS,
        refine: PoseRefiner | None = None,
    ) -> LocateResult:
        """Localise image files.

        Args:
            images: query image paths.
            top_k: candidates per query.
            orientation: ``"known"`` (north-centred) or ``"unknown"``; recorded. Orientation-aware
                recipes estimate a heading either way; other recipes search ``headings_n``
                headings when it is unknown (module Convention).
            fov: limited field of view in degrees (module Convention), or None for panoramas.
            truth: truth CSV path or {key: (lat, lon)}; keys match the query id (file stem) or name.
            backend: ``"exact"`` (torch reference) or ``"faiss"``.
            ids: query ids (default: file stems).
            headings_n: headings searched for orientation-unaware recipes when the orientation is
                unknown (the query is encoded that many times).
            refine: a pose model (:class:`~geo_bench.localize.refine.PoseRefiner`) that refines each
                query's top-1 candidate (orientation known: heading 0 as its prior; unknown: no prior).

        Returns:
            A :class:`LocateResult` (with metrics when ``truth`` is given).
        """
        if orientation not in ("known", "unknown"):
            raise ValueError(f"--orientation must be known or unknown, got {orientation!r}")
        if not images:
            raise ValueError("give at least one query image")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"--top-k must be a positive integer, got {top_k!r}")
        paths = [Path(p) for p in images]
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"query image {p} does not exist")
        qids = list(ids) if ids is not None else [p.stem for p in paths]
        truth_heading: dict[str, float] = {}
        if isinstance(truth, (str, Path)):  # the CSV is read once for positions and headings
            truth_rows = _read_truth_rows(truth)
            truth_map: dict[str, tuple[float, float]] | None = {
                k: (v[0], v[1]) for k, v in truth_rows.items()
            }
            truth_heading = {k: v[2] for k, v in truth_rows.items() if v[2] is not None}
        else:
            truth_map = truth
        truth_ll = None
        if truth_map is not None:
            missing = [
                str(p) for p, q in zip(paths, qids) if not any(k in truth_map for k in (q, p.name, str(p)))
            ]
            if missing:
                raise ValueError(
                    f"--truth has no row for {len(missing)} quer(y/ies): {', '.join(missing[:3])}"
                )
            truth_ll = np.array(
                [
                    next(truth_map[k] for k in (q, p.name, str(p)) if k in truth_map)
                    for p, q in zip(paths, qids)
                ],
                dtype=np.float64,
            )
        recipe = self.model.recipe
        aware = bool(getattr(recipe, "orientation_aware", False))
        if isinstance(headings_n, bool) or not isinstance(headings_n, int) or headings_n < 1:
            raise ValueError(f"--headings must be a positive integer, got {headings_n!r}")
        sim = self.model.encoder.similarity
        headings: np.ndarray | None = None
        if orientation == "unknown" and not aware:
            q, scores, idx, headings = self._heading_search(paths, fov, top_k, backend, headings_n)
        else:
            q = self.embed_queries(paths, fov=fov)
            scores, idx = search(self.tiles, q, top_k, backend=backend, similarity=sim)
            if aware and q.ndim == 4:
                ref = _as_tensor(self.tiles.descriptors)
                headings = dsm_orientations(q, ref, idx, degrees=True).numpy()
        xy, ll = self.tiles.xy, self.tiles.latlon
        results = []
        refined_xy = np.zeros((len(paths), 2))
        for i, (p, qid) in enumerate(zip(paths, qids)):
            cand = tuple(
                Candidate(
                    r,
                    int(t),
                    float(scores[i, r]),
                    float(xy[t, 0]),
                    float(xy[t, 1]),
                    float(ll[t, 0]),
                    float(ll[t, 1]),
                    None if headings is None else float(headings[i, r]),
                )
                for r, t in enumerate(idx[i].tolist())
            )
            refined_xy[i] = refine_position(xy[idx[i].numpy()], scores[i].numpy(), self.tiles.tile_m)
            results.append((qid, str(p), cand))
        refined_ll = to_latlon(refined_xy, self.tiles.crs)
        pose = pose_ll = None
        refine_info: dict[str, Any] | None = None
        if refine is not None:
            # known orientation: north-centred queries, heading 0 as a prior of zero range
            prior = np.zeros(len(paths)) if orientation == "known" else None
            pose = refine.refine_candidates(self.tiles, idx[:, 0].numpy(), paths, fov=fov, headings=prior)
            pose_ll = to_latlon(pose.xy, self.tiles.crs)
            refine_info = {
                **refine.identity(),
                "orientation": "known (prior: heading 0, range 0)"
                if prior is not None
                else "unknown (no prior)",
            }
        metrics: dict[str, float] = {}
        errors: dict[str, np.ndarray] = {}
        if truth_ll is not None:
            truth_h = np.array(
                [
                    next((truth_heading[k] for k in (q, p.name, str(p)) if k in truth_heading), np.nan)
                    for p, q in zip(paths, qids)
                ],
                dtype=np.float64,
            )
            metrics, errors = _truth_metrics(
                truth_ll,
                truth_h,
                ll,
                idx,
                refined_ll,
                None if headings is None else headings[:, 0],
                pose_ll,
                None if pose is None else pose.heading_deg,
            )

        def err(name: str, i: int) -> float | None:
            e = errors.get(name)
            return None if e is None or not np.isfinite(e[i]) else float(e[i])

        queries = tuple(
            QueryResult(
                qid,
                f,
                cand,
                (float(refined_xy[i, 0]), float(refined_xy[i, 1])),
                (float(refined_ll[i, 0]), float(refined_ll[i, 1])),
                None if truth_ll is None else (float(truth_ll[i, 0]), float(truth_ll[i, 1])),
                err("top1", i),
                err("refined", i),
                None if pose is None else (float(pose.xy[i, 0]), float(pose.xy[i, 1])),
                None if pose_ll is None else (float(pose_ll[i, 0]), float(pose_ll[i, 1])),
                None if pose is None else float(pose.heading_deg[i]),
                None if pose is None else float(pose.confidence[i]),
                None if pose is None else (float(pose.tile_xy[i, 0]), float(pose.tile_xy[i, 1])),
                err("pose", i),
                err("pose_heading", i),
            )
            for i, (qid, f, cand) in enumerate(results)
        )
        searched = headings_n if orientation == "unknown" and not aware else None
        return LocateResult(
            queries, self.tiles.crs, orientation, fov, backend, metrics, q.numpy(), searched, refine_info
        )

    def _heading_search(
        self, paths: Sequence[Path], fov: float | None, top_k: int, backend: str, n: int
    ) -> tuple[Tensor, Tensor, Tensor, np.ndarray]:
        """Search ``n`` evenly spaced headings (module Convention).

        Returns:
            ``(descriptors (N, ...) at each query's best heading, scores (N, k), tiles (N, k),
            headings (N, k) degrees)``, best first.
        """
        w = int(self.model.recipe.ground_size[1])
        shifts = [round(r * w / n) % w for r in range(n)]  # h_r = 360 r / n degrees, in columns
        q = self.embed_queries_rolled(paths, shifts, fov=fov)  # (R, N, ...)
        sim = self.model.encoder.similarity
        found = [search(self.tiles, q[r], top_k, backend=backend, similarity=sim) for r in range(n)]
        scores = torch.cat([s for s, _ in found], dim=1).numpy()  # (N, R k), rotation-major
        tiles = torch.cat([i for _, i in found], dim=1).numpy()
        kk = found[0][0].shape[1]
        rot = np.repeat(np.arange(n), kk)[None].repeat(len(paths), 0)
        # keep each tile once, at its best heading: sort by (tile, -score), drop repeats of a tile
        order = np.lexsort((-scores, tiles), axis=1)
        tiles, scores, rot = (np.take_along_axis(a, order, 1) for a in (tiles, scores, rot))
        repeat = np.zeros_like(tiles, dtype=bool)
        repeat[:, 1:] = tiles[:, 1:] == tiles[:, :-1]
        scores = np.where(repeat, -np.inf, scores)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
        tiles, scores, rot = (np.take_along_axis(a, best, 1) for a in (tiles, scores, rot))
        exact_shift = np.asarray(shifts)[rot] * 360.0 / w  # the heading the rolled columns realise
        desc = q[torch.from_numpy(rot[:, 0]), torch.arange(len(paths))]
        return desc, torch.from_numpy(scores.astype(np.float32)), torch.from_numpy(tiles), exact_shift
