"""Localisation metrics of retrieval: recall within a radius and the metre error of the top-1 match.

Convention:
    - Retrieval gives each query its top-``k`` references by score (:func:`topk_references`, one
      chunked pass, never an N_q x N_ref matrix kept). Equal scores are broken as ``torch.topk``
      breaks them, which is not specified; collapsed models, whose scores all tie, are refused
      before this by :func:`~geo_bench.metrics.degenerate.check_descriptors`.
    - A reference's position is where it says the camera is: the tile centre for aerial tiles (the
      world's ``aerial_utm``, VIGOR's tile lat/lon), the camera position for CVACT's pairs. Positions
      are either planar metres (UTM easting, northing: Euclidean distance) or degrees (lat, lon:
      great-circle distance on the sphere of :data:`~geo_retrieval.geodesy.VIGOR_EARTH_RADIUS_M`).
    - ``R@k<r m`` (metric name ``"R@{k}<{r}m"``) = percent of queries for which at least one of the
      first ``k`` retrieved references lies *strictly* closer than ``r`` metres to the query's true
      position (the newer geo-localisation papers' "R@1 < 50 m"; with ``k = 1`` it is the accuracy
      of the localisation by the top-1 tile). Unlike CVACT_test's ``utm_5m`` recall it does not look
      at the rank of the true match at all: any reference close enough counts.
    - The localisation error of a query is the distance from its true position to the top-1
      reference's position; ``median_error_m`` and ``p90_error_m`` are its 50th and 90th percentiles
      (numpy's linear interpolation), ``mean_error_m`` its mean.
    - This is the one implementation used by the leaderboard's radius protocol and by localisation
      workflows; VIGOR's ``localisation_errors`` / ``meter_level_accuracy`` give the same top-1
      errors for its positives-only gallery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from geo_bench.metrics.recall import DEFAULT_MEMORY_BUDGET, Similarity, score_blocks
from geo_retrieval.geodesy import great_circle_distance

__all__ = [
    "DEFAULT_RADII_M",
    "LocalisationResult",
    "localisation_metrics",
    "position_distances",
    "radius_recall",
    "topk_references",
]

#: Radii (metres) reported by default: street-scale (25), the newer papers' 50 and a block (100).
DEFAULT_RADII_M: tuple[float, ...] = (25.0, 50.0, 100.0)


@dataclass(frozen=True)
class LocalisationResult:
    """Radius recall and top-1 errors of one retrieval.

    Attributes:
        recall: ``{"R@{k}<{r}m": percent}`` for every k and r asked.
        errors_m: (N_q,) float64 metre error of each query's top-1 reference.
        coordinates: ``"utm"`` (planar metres) or ``"latlon"`` (degrees, great circle).
    """

    recall: dict[str, float]
    errors_m: np.ndarray
    coordinates: str

    def as_dict(self) -> dict[str, float]:
        """The recalls plus ``median_error_m``, ``p90_error_m`` and ``mean_error_m`` (metres)."""
        out = dict(self.recall)
        if self.errors_m.size:
            out["median_error_m"] = float(np.percentile(self.errors_m, 50))
            out["p90_error_m"] = float(np.percentile(self.errors_m, 90))
            out["mean_error_m"] = float(self.errors_m.mean())
        return out


def topk_references(
    query: Tensor,
    reference: Tensor,
    k: int,
    *,
    similarity: Similarity | None = None,
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Tensor:
    """Indices of each query's ``k`` best-scoring references, best first.

    Args:
        query: (N_q, D) descriptors (or what ``similarity`` takes).
        reference: (N_ref, D) descriptors.
        k: references kept per query, 1 <= k; clipped to N_ref.
        similarity: optional ``(q_block, reference) -> (b, N_ref)`` score callable (default cosine,
            as every metric of :mod:`geo_bench.metrics.recall`).
        chunk_size, memory_budget: query rows per scored block (see ``score_blocks``).

    Returns:
        (N_q, min(k, N_ref)) int64 tensor on the CPU.

    Example:
        >>> d = torch.eye(3)
        >>> topk_references(d[[2, 0]], d, 1).flatten().tolist()
        [2, 0]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    n_ref = int(reference.shape[0])
    if n_ref == 0:
        raise ValueError("the reference gallery is empty")
    kk = min(k, n_ref)
    out = torch.empty(int(query.shape[0]), kk, dtype=torch.int64)
    for start, end, scores in score_blocks(
        query, reference, chunk_size=chunk_size, similarity=similarity, memory_budget=memory_budget
    ):
        out[start:end] = scores.topk(kk, dim=1).indices.cpu()
    return out


def _positions(value: object, name: str) -> np.ndarray:
    arr = np.asarray(value.cpu() if isinstance(value, Tensor) else value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) positions, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds non-finite positions")
    return arr


def position_distances(
    query_pos: object, reference_pos: object, index: Tensor | np.ndarray, coordinates: str = "utm"
) -> np.ndarray:
    """Metres from each query's position to the positions of the references ``index`` names.

    Args:
        query_pos: (N_q, 2) positions (UTM easting/northing in metres, or lat/lon in degrees).
        reference_pos: (N_ref, 2) positions in the same system.
        index: (N_q, k) reference indices (e.g. :func:`topk_references`).
        coordinates: ``"utm"`` (Euclidean) or ``"latlon"`` (great circle).

    Returns:
        (N_q, k) float64 distances in metres.
    """
    if coordinates not in ("utm", "latlon"):
        raise ValueError(f"coordinates must be 'utm' or 'latlon', got {coordinates!r}")
    q = _positions(query_pos, "query_pos")
    r = _positions(reference_pos, "reference_pos")
    idx = np.asarray(index.cpu() if isinstance(index, Tensor) else index, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[0] != q.shape[0]:
        raise ValueError(f"index must be (N_q, k) = ({q.shape[0]}, k), got shape {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= r.shape[0]):
        raise ValueError(f"index must lie in [0, {r.shape[0]}) (the reference count)")
    picked = r[idx]  # (N_q, k, 2)
    if coordinates == "utm":
        return np.linalg.norm(picked - q[:, None, :], axis=-1)
    return great_circle_distance(
        np.broadcast_to(q[:, None, :], picked.shape).reshape(-1, 2), picked.reshape(-1, 2)
    ).reshape(idx.shape)


def radius_recall(
    distances: np.ndarray, ks: Sequence[int] = (1, 5, 10), radii_m: Sequence[float] = DEFAULT_RADII_M
) -> dict[str, float]:
    """``R@k<r m`` from the (N_q, K) distances of each query's ranked references (module Convention).

    Example:
        >>> radius_recall(np.array([[10.0, 80.0], [60.0, 20.0]]), ks=(1, 2), radii_m=(50.0,))
        {'R@1<50m': 50.0, 'R@2<50m': 100.0}
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError(f"distances must be (N_q, K), got shape {d.shape}")
    out: dict[str, float] = {}
    for r in radii_m:
        if not r > 0:
            raise ValueError(f"radii must be positive, got {r}")
        close = np.cumsum(d < r, axis=1) > 0  # (N_q, K): a close reference among the first j+1
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1:
                raise ValueError(f"ks must be positive ints, got {k!r}")
            kk = min(k, d.shape[1])
            out[f"R@{k}<{r:g}m"] = 100.0 * float(close[:, kk - 1].mean()) if d.shape[0] else 0.0
    return out


def localisation_metrics(
    query: Tensor,
    reference: Tensor,
    query_pos: object,
    reference_pos: object,
    *,
    ks: Sequence[int] = (1, 5, 10),
    radii_m: Sequence[float] = DEFAULT_RADII_M,
    coordinates: str = "utm",
    similarity: Similarity | None = None,
    chunk_size: int | None = None,
) -> LocalisationResult:
    """Radius recall and top-1 metre errors of ground-to-aerial retrieval, in one scoring pass.

    Args:
        query: (N_q, D) query descriptors.
        reference: (N_ref, D) reference descriptors.
        query_pos: (N_q, 2) true positions of the queries.
        reference_pos: (N_ref, 2) positions the references stand for (tile centres).
        ks: the k of ``R@k<r m``.
        radii_m: the radii in metres.
        coordinates: ``"utm"`` or ``"latlon"`` (both position arrays).
        similarity: optional score callable (DSM's aligned matching).
        chunk_size: query rows per scored block.

    Returns:
        A :class:`LocalisationResult`.

    Example:
        >>> d = torch.eye(3)
        >>> pos = np.array([[0.0, 0.0], [30.0, 0.0], [200.0, 0.0]])
        >>> res = localisation_metrics(d[[1, 0, 2]], d, pos, pos, ks=(1,), radii_m=(25.0, 50.0))
        >>> res.recall, res.errors_m.tolist()
        ({'R@1<25m': 33.33333333333333, 'R@1<50m': 100.0}, [30.0, 30.0, 0.0])
    """
    if not ks:
        raise ValueError("ks must name at least one k")
    top = topk_references(query, reference, max(ks), similarity=similarity, chunk_size=chunk_size)
    dist = position_distances(query_pos, reference_pos, top, coordinates)
    return LocalisationResult(radius_recall(dist, ks, radii_m), dist[:, 0].copy(), coordinates)
