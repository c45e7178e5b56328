"""VIGOR retrieval metrics (positive-only recall, hit rate) and meter-level localisation.

Convention (``docs/protocols.md#vigor``, VIGOR ``evaluate_from_npy.py``, Sample4Geo):
    - R@K and R@1% count only the positive tile (``positive`` (N_q,) is the gt index).
    - Hit rate: the top-1 tile is the positive or a semi-positive, implemented as "no reference other
      than the positive and the semi-positives scores strictly above the positive" (Sample4Geo). This
      is stricter than "argmax is in the set" when a semi-positive is first and an unrelated tile also
      beats the positive; the implemented rule is the one Sample4Geo uses.
    - Predicted location: centre (lat, lon) of the top-1 tile (the first maximum, as ``argmax``), plus
      the predicted offset when given. Offsets follow VIGOR's label columns: ``delta = (d0, d1)``
      pixels of a 640-pixel tile, with the panorama at image position (row, col) = (320 + d0, 320 - d1);
      a shift of ``half_tile_px`` = 320 px is ``320 * meters_per_pixel`` metres, converted to degrees
      with VIGOR's inverse great-circle formula (``Lat_Lng``): ``pred = centre - unit * delta / 320``.
    - Error: great-circle distance (spherical law of cosines, R = 6,371,004 m, clipped arccos).
    - Accuracy(t) = percentage of queries with error ``< t``, for ``t = 1.1 ** (i / 5)``, i = 1..499.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from geo_bench.metrics.recall import (
    DEFAULT_MEMORY_BUDGET,
    RecallResult,
    Similarity,
    _blocks,
    _check_gt,
    _check_ks,
    _check_ties,
    _Counter,
    _prepare,
    recall_from_ranks,
    tie_statistics,
)
from geo_retrieval.geodesy import VIGOR_EARTH_RADIUS_M, great_circle_distance

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "VIGOR_METERS_PER_PIXEL",
    "MeterLevelCurve",
    "VigorResult",
    "localisation_errors",
    "meter_level_accuracy",
    "plot_meter_level_accuracy",
    "vigor_offset_to_latlon",
    "vigor_recall",
    "vigor_thresholds",
]

#: Ground resolution VIGOR uses for its 640 x 640 zoom-20 tiles.
VIGOR_METERS_PER_PIXEL = 0.114


@dataclass(frozen=True)
class VigorResult:
    """VIGOR retrieval metrics.

    Attributes:
        recall: positive-only R@K / R@1% (a :class:`~geo_bench.metrics.RecallResult`).
        hit_rate: percentage of queries whose top-1 is the positive or a semi-positive.
        top1_index: (N_q,) int64 index of each query's top-1 tile (for meter-level localisation).
    """

    recall: RecallResult
    hit_rate: float
    top1_index: Tensor

    def as_dict(self) -> dict[str, float | int]:
        """The recall metrics plus ``"hit_rate"`` (percent)."""
        return {**self.recall.as_dict(), "hit_rate": self.hit_rate}


def vigor_recall(
    query: Tensor,
    reference: Tensor,
    positive: Tensor,
    semi_positives: Tensor | None = None,
    ks: Iterable[int] = (1, 5, 10),
    top_percent: float = 1.0,
    *,
    top1pct_rule: str = "floor",
    ties: str = "optimistic",
    chunk_size: int | None = None,
    similarity: Similarity | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    tie_stats: bool = False,
) -> VigorResult:
    """Positive-only R@K, hit rate and top-1 indices in one chunked pass.

    Args:
        query: (N_q, D) panorama descriptors.
        reference: (N_ref, D) tile descriptors.
        positive: (N_q,) index of each query's positive tile.
        semi_positives: (N_q, S) indices of the semi-positive tiles (S = 3 in VIGOR); ``-1`` pads.
        ks: the Ks of R@K.
        top_percent: x of R@x%.
        top1pct_rule: ``"floor"`` (default, Sample4Geo) or ``"int_plus_one"`` (official VIGOR code).
        ties: tie rule for the ranks of the positive (the hit rate always uses strict ``>``).
        chunk_size: query rows per block; default from ``memory_budget``.
        similarity: optional custom score callable.
        memory_budget: bytes for one block's working set when ``chunk_size`` is None.
        tie_stats: also compute the :class:`~geo_bench.metrics.TieStats` of the positive in the same
            pass (``result.recall.tie_stats``; ``as_dict`` adds ``tie_share`` and ``R@1_pessimistic``).

    Returns:
        A :class:`VigorResult`.

    Example:
        >>> ref = torch.eye(4)
        >>> q = torch.tensor([[0.0, 1.0, 0.1, 0.0]])  # closest to tile 1, positive is tile 2
        >>> r = vigor_recall(q, ref, torch.tensor([2]), torch.tensor([[1, -1, -1]]), ks=(1,))
        >>> r.recall.recall_at[1], r.hit_rate, r.top1_index.tolist()
        (0.0, 100.0, [1])
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    prep = _prepare(query, reference, similarity)
    n_q, n_ref = query.shape[0], prep.reference.shape[0]
    device = prep.reference.device
    pos = _check_gt(positive, n_q, n_ref, device)
    if semi_positives is None:
        semi = pos[:, None]
    else:
        semi = torch.as_tensor(semi_positives)
        if semi.dtype.is_floating_point or semi.dtype == torch.bool:
            raise TypeError(f"semi_positives must be an integer tensor, got {semi.dtype}")
        if semi.ndim != 2 or semi.shape[0] != n_q:
            raise ValueError(f"semi_positives must be (N_q, S) = ({n_q}, S), got {tuple(semi.shape)}")
        semi = semi.to(device=device, dtype=torch.long)
        if semi.numel() and (int(semi.min()) < -1 or int(semi.max()) >= n_ref):
            raise ValueError(f"semi_positives must lie in [0, {n_ref}) or be -1 (padding)")
        # padding points at the positive, which never scores above itself
        semi = torch.where(semi < 0, pos[:, None], semi)
    rank = torch.empty(n_q, dtype=torch.long, device=device)
    other = (
        torch.empty(n_q, dtype=torch.long, device=device) if tie_stats else None
    )  # the other tie rule's rank
    hit = torch.empty(n_q, dtype=torch.bool, device=device)
    top1 = torch.empty(n_q, dtype=torch.long, device=device)
    count = _Counter()
    for start, end, block in _blocks(query, prep, chunk_size, memory_budget):
        p = block.gather(1, pos[start:end, None])
        rank[start:end] = count(block, p, strict=ties == "optimistic") - (0 if ties == "optimistic" else 1)
        if other is not None:
            other[start:end] = count(block, p, strict=ties != "optimistic") - (
                1 if ties == "optimistic" else 0
            )
        greater = block > p
        greater.scatter_(1, semi[start:end], False)
        hit[start:end] = ~greater.any(1)
        top1[start:end] = block.argmax(1)
        del block, greater
    stats = None
    if other is not None:
        stats = tie_statistics(rank, other) if ties == "optimistic" else tie_statistics(other, rank)
    recall = recall_from_ranks(
        rank, n_ref, ks, top_percent, top1pct_rule=top1pct_rule, ties=ties, tie_stats=stats
    )
    return VigorResult(recall=recall, hit_rate=100.0 * int(hit.sum()) / n_q, top1_index=top1)


def _latlon(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be (N, 2) (lat, lon) degrees, got shape {arr.shape}")
    return arr


def vigor_offset_to_latlon(
    center_latlon: object,
    offset_px: object,
    meters_per_pixel: float = VIGOR_METERS_PER_PIXEL,
    half_tile_px: float = 320.0,
) -> np.ndarray:
    """Tile centre + VIGOR pixel offset -> (lat, lon), exactly as ``evaluate_from_npy.py``.

    Convention: ``unit = (dlat, dlon)`` in degrees of a ``half_tile_px * meters_per_pixel`` metre move
    at the centre's latitude (inverse law of cosines, R = 6,371,004 m); ``pred = centre - unit *
    offset / half_tile_px`` (offset = (d0, d1) as in VIGOR's label columns).

    Args:
        center_latlon: (N, 2) tile centres, degrees.
        offset_px: (N, 2) offsets in pixels of the original 640 x 640 tile.
        meters_per_pixel: ground resolution (0.114 for VIGOR).
        half_tile_px: pixels of half a tile (320 for VIGOR).

    Returns:
        (N, 2) float64 predicted (lat, lon).
    """
    c = _latlon(center_latlon, "center_latlon")
    off = np.asarray(
        offset_px.detach().cpu() if isinstance(offset_px, Tensor) else offset_px, dtype=np.float64
    )
    if off.shape != c.shape:
        raise ValueError(f"offset_px must be {c.shape} like center_latlon, got {off.shape}")
    d = half_tile_px * meters_per_pixel
    lat = np.deg2rad(c[:, 0])
    dlat = np.full_like(lat, d / VIGOR_EARTH_RADIUS_M)
    cos_dlon = (np.cos(d / VIGOR_EARTH_RADIUS_M) - np.sin(lat) ** 2) / np.cos(lat) ** 2
    dlon = np.arccos(np.clip(cos_dlon, -1.0, 1.0))
    unit = np.rad2deg(np.stack([dlat, dlon], axis=1))
    return c - unit * off / half_tile_px


def localisation_errors(
    top1_index: Tensor | np.ndarray,
    reference_latlon: object,
    query_latlon: object,
    offset_px: object | None = None,
    meters_per_pixel: float = VIGOR_METERS_PER_PIXEL,
    half_tile_px: float = 320.0,
) -> np.ndarray:
    """Great-circle error in metres of each query's predicted location.

    Args:
        top1_index: (N_q,) index of each query's retrieved tile (``VigorResult.top1_index``).
        reference_latlon: (N_ref, 2) tile centres (lat, lon), degrees, from the tile names.
        query_latlon: (N_q, 2) true panorama (lat, lon), degrees.
        offset_px: optional (N_q, 2) predicted offsets in pixels (VIGOR convention); without it the
            tile centre is the prediction.
        meters_per_pixel: ground resolution.
        half_tile_px: pixels of half a tile.

    Returns:
        (N_q,) float64 errors in metres.
    """
    idx = np.asarray(top1_index.detach().cpu() if isinstance(top1_index, Tensor) else top1_index)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise ValueError(f"top1_index must be an (N_q,) integer array, got {idx.shape} {idx.dtype}")
    ref = _latlon(reference_latlon, "reference_latlon")
    qry = _latlon(query_latlon, "query_latlon")
    if qry.shape[0] != idx.shape[0]:
        raise ValueError(f"query_latlon must be ({idx.shape[0]}, 2), got {qry.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= ref.shape[0]):
        raise ValueError(f"top1_index must lie in [0, {ref.shape[0]})")
    pred = ref[idx]
    if offset_px is not None:
        pred = vigor_offset_to_latlon(pred, offset_px, meters_per_pixel, half_tile_px)
    return great_circle_distance(qry, pred)


def vigor_thresholds() -> np.ndarray:
    """VIGOR's thresholds ``1.1 ** (i / 5)`` for i = 1..499, in metres (1.019 ... 13,168)."""
    return 1.1 ** (np.arange(1, 500) / 5.0)


@dataclass(frozen=True)
class MeterLevelCurve:
    """Accuracy (percent of queries with error < t) at each threshold t (metres)."""

    thresholds: np.ndarray
    accuracy: np.ndarray
    n: int

    def at(self, meters: float) -> float:
        """Accuracy at the threshold closest to ``meters`` (as VIGOR reads its 10 m number)."""
        return float(self.accuracy[int(np.argmin(np.abs(self.thresholds - meters)))])


def meter_level_accuracy(errors: object, thresholds: object | None = None) -> MeterLevelCurve:
    """Meter-level accuracy curve: percentage of queries with error strictly below each threshold.

    Args:
        errors: (N,) errors in metres (:func:`localisation_errors`).
        thresholds: (T,) thresholds in metres; default :func:`vigor_thresholds`.

    Returns:
        A :class:`MeterLevelCurve`.

    Example:
        >>> c = meter_level_accuracy([0.5, 3.0, 20.0, 500.0], thresholds=[1.0, 10.0, 100.0])
        >>> c.accuracy.tolist()
        [25.0, 50.0, 75.0]
    """
    e = np.asarray(errors.detach().cpu() if isinstance(errors, Tensor) else errors, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"errors must be a non-empty (N,) array, got shape {e.shape}")
    t = vigor_thresholds() if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"thresholds must be (T,), got shape {t.shape}")
    s = np.sort(e)
    acc = 100.0 * np.searchsorted(s, t, side="left") / e.size
    return MeterLevelCurve(thresholds=t, accuracy=acc, n=int(e.size))


def plot_meter_level_accuracy(
    curves: MeterLevelCurve | Mapping[str, MeterLevelCurve],
    *,
    ax: Axes | None = None,
    xlim: tuple[float, float] = (1.0, 40.0),
    **plot_kwargs: Any,
) -> Figure:
    """Plot accuracy (%) against threshold (m), one line per curve, as in the VIGOR paper.

    Args:
        curves: one curve or ``{label: curve}``.
        ax: axes to draw on; a new figure when None.
        xlim: threshold range shown (1-40 m in the paper).
        **plot_kwargs: forwarded to ``Axes.plot``.

    Returns:
        The matplotlib ``Figure``.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is heavy and only needed to plot

    if isinstance(curves, MeterLevelCurve):
        curves = {"": curves}
    if ax is None:
        fig = Figure(figsize=(5, 4))
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure  # type: ignore[assignment]
    for label, c in curves.items():
        ax.plot(c.thresholds, c.accuracy, label=label or None, **plot_kwargs)
    ax.set_xlim(*xlim)
    ax.set_ylim(0, 100)
    ax.set_xlabel("Threshold (m)")
    ax.set_ylabel("Accuracy (%)")
    ax.grid(linestyle="dotted")
    if any(curves):
        ax.legend(loc="upper left")
    return fig
