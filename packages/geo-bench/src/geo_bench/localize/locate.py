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
    - Heading (orientation-aware recipes, DSM only): the alignment shift of the model's ``match``
      in degrees in [0, 360) (:func:`geo_retrieval.search.dsm_orientations`): the query column
      ``v`` aligns with the tile's polar column ``(shift + v) mod W``; with a north-centred query the
      shift is 0. Other recipes assume north-centred panoramas and report no heading (``None``).
    - Refined position: the score-weighted mean of the centres of the top-k tiles that lie within
      one tile width (``tile_m``, Euclidean in the map CRS) of the best tile's centre, with weights
      ``max(score - s_min, 0)`` where ``s_min`` is the lowest top-k score (so the weakest candidate
      counts zero and the best always counts); equal to the best centre when no other tile is close
      or all scores tie. Computed in the map CRS, converted to lat/lon.
    - Metrics with a truth (lat/lon degrees): ``position_distances`` (great circle) of the ranked
      candidates and ``radius_recall`` (``R@k<r m`` for k = 1, 5, 10 up to top-k, r = 25, 50, 100),
      median / P90 / mean metre error of the top-1 tile and of the refined position
      (:mod:`geo_bench.metrics.localisation`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from geo_retrieval.embedding import embed
from geo_retrieval.geodesy import great_circle_distance
from geo_retrieval.search import dsm_orientations
from geo_retrieval.training import BatchTransform
from geo_transforms.panorama import fov_width, limit_fov

__all__ = ["Candidate", "LocateResult", "Localizer", "QueryResult", "read_truth", "refine_position"]

log = logging.getLogger(__name__)

#: relative tolerance on the panorama aspect ratio W/H without ``fov``
ASPECT_TOLERANCE = 0.05


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
    ``refined_xy`` = (easting, northing) in the map CRS)."""

    id: str
    file: str
    candidates: tuple[Candidate, ...]
    refined_xy: tuple[float, float]
    refined_latlon: tuple[float, float]
    truth_latlon: tuple[float, float] | None = None
    error_m: float | None = None
    refined_error_m: float | None = None


@dataclass(frozen=True)
class LocateResult:
    """All queries of one :meth:`Localizer.locate` call plus metrics when a truth was given."""

    queries: tuple[QueryResult, ...]
    crs: str
    orientation: str
    fov_deg: float | None
    backend: str
    metrics: dict[str, float] = field(default_factory=dict)
    #: (N_q, ...) float32 query descriptors (for the HTML heat maps; not written to JSON)
    descriptors: np.ndarray | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "coordinates": "lat/lon WGS84 degrees (latitude first); x/y metres in crs",
            "orientation": self.orientation,
            "fov_deg": self.fov_deg,
            "backend": self.backend,
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
        """Header plus one row per (query, candidate); refined and truth repeated per row."""
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
            ]
        ]
        for q in self.queries:
            t = q.truth_latlon or (None, None)
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
        out: dict[str, tuple[float, float]] = {}
        for i, row in enumerate(reader, start=2):
            try:
                ll = (float(row["lat"]), float(row["lon"]))
            except (TypeError, ValueError):
                raise ValueError(f"--truth {path} line {i}: lat/lon are not numbers ({row})") from None
            for key in (row.get("id"), row.get("file")):
                if key:
                    out[key] = ll
                    out[Path(key).name] = ll
                    out[Path(key).stem] = ll
    return out


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
        if not path.is_file():
            raise FileNotFoundError(f"query image {path} does not exist")
        try:
            with Image.open(path) as im:
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise OSError(f"query image {path} cannot be decoded ({exc})") from None
        img = torch.from_numpy(arr).permute(2, 0, 1).float()[None] / 255.0  # (1, 3, h, w)
        recipe = self.model.recipe
        h, w = (int(v) for v in recipe.ground_size)
        aspect = arr.shape[1] / arr.shape[0]
        if fov is None:
            if abs(aspect / (w / h) - 1) > ASPECT_TOLERANCE:
                raise ValueError(
                    f"query image {path} is {arr.shape[1]}x{arr.shape[0]} (aspect {aspect:.2f}); the recipe takes "
                    f"360-degree panoramas of aspect {w / h:.2f} ({w}x{h}); pass --fov DEG for a limited field of view"
                )
            return F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        if not 0 < fov <= 360:
            raise ValueError(f"--fov must lie in (0, 360] degrees, got {fov}")
        wf = fov_width(fov, w)
        if wf < 1:
            raise ValueError(f"--fov {fov} keeps no column of a {w}-column panorama")
        canvas = torch.zeros(1, 3, h, w)
        canvas[..., :wf] = F.interpolate(
            img, size=(h, wf), mode="bilinear", align_corners=False, antialias=True
        )
        fill = torch.tensor(recipe.normalisation.mean, dtype=torch.float32)
        return limit_fov(canvas, float(fov), 0, fill=fill)[0]

    def embed_queries(
        self, images: Sequence[str | Path], *, fov: float | None = None, batch_size: int = 32
    ) -> Tensor:
        """Image files -> (N, ...) float32 ground descriptors on the CPU (module Convention)."""
        transform = BatchTransform.from_recipe(self.model.recipe)
        px = int(self.tiles.manifest["tiling"]["px"])

        def batches() -> Iterator[Tensor]:
            # decoded and prepared on the CPU one batch at a time; embed encodes each on the device
            for s in range(0, len(images), batch_size):
                ground = torch.stack([self._load_query(Path(p), fov) for p in images[s : s + batch_size]])
                dummy = torch.zeros(ground.shape[0], 3, px, px)
                yield transform({"ground": ground, "aerial": dummy}, None, train=False)["ground"]

        out, _ = embed(
            {None: self.model.encoder.encode_ground},
            batches(),
            device=self.model.device,
            out_device="cpu",
            desc="embed queries",
        )
        return out[None]

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
    ) -> LocateResult:
        """Localise image files.

        Args:
            images: query image paths.
            top_k: candidates per query.
            orientation: ``"known"`` (north-centred) or ``"unknown"``; recorded, and for
                orientation-aware recipes a heading is estimated either way.
            fov: limited field of view in degrees (module Convention), or None for panoramas.
            truth: truth CSV path or {key: (lat, lon)}; keys match the query id (file stem) or name.
            backend: ``"exact"`` (torch reference) or ``"faiss"``.
            ids: query ids (default: file stems).

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
        truth_map = read_truth(truth) if isinstance(truth, (str, Path)) else truth
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
        if orientation == "unknown" and not aware:
            log.warning(
                "recipe %s assumes north-centred panoramas; with the orientation unknown expect "
                "lower accuracy (an orientation-aware recipe such as dsm estimates the heading)",
                recipe.name,
            )
        q = self.embed_queries(paths, fov=fov)
        sim = self.model.encoder.similarity
        scores, idx = search(self.tiles, q, top_k, backend=backend, similarity=sim)
        headings = None
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
        metrics: dict[str, float] = {}
        errors = refined_errors = None
        if truth_ll is not None:
            dist = position_distances(truth_ll, ll, idx, "latlon")
            ks = tuple(k for k in (1, 5, 10) if k <= idx.shape[1])
            metrics = radius_recall(dist, ks, DEFAULT_RADII_M)
            errors = dist[:, 0]
            refined_errors = great_circle_distance(truth_ll, refined_ll)
            for name, e in (("", errors), ("refined_", refined_errors)):
                metrics[f"{name}median_error_m"] = float(np.percentile(e, 50))
                metrics[f"{name}p90_error_m"] = float(np.percentile(e, 90))
                metrics[f"{name}mean_error_m"] = float(np.mean(e))
            metrics["n_query"] = float(len(paths))
        queries = tuple(
            QueryResult(
                qid,
                f,
                cand,
                (float(refined_xy[i, 0]), float(refined_xy[i, 1])),
                (float(refined_ll[i, 0]), float(refined_ll[i, 1])),
                None if truth_ll is None else (float(truth_ll[i, 0]), float(truth_ll[i, 1])),
                None if errors is None else float(errors[i]),
                None if refined_errors is None else float(refined_errors[i]),
            )
            for i, (qid, f, cand) in enumerate(results)
        )
        return LocateResult(queries, self.tiles.crs, orientation, fov, backend, metrics, q.numpy())
