"""Geo-tolerant recall (CVACT_test ``utm_5m``).

Convention:
    - Geo-tolerant hit: a query is a hit at K when at least one of its top-K references lies within
      ``radius_m`` metres (Euclidean UTM distance ``<= radius_m``, float64) of the query's UTM. This is
      computed exactly, without a top-K cut-off, as a rank: ``rank_i = #{r : s(q_i, r) > s*_i}`` with
      ``s*_i`` the best score among the references near query i, so ties resolve as in
      :func:`geo_bench.metrics.ranks` (``"optimistic"``) or against the query (``"pessimistic"``:
      ``#{r not near : s(q_i, r) >= s*_i}``). A query with no reference inside the radius is never a hit.
      With ``tie_stats=True`` both ranks come from the same pass and the result carries a
      :class:`~geo_bench.metrics.TieStats`: the best near match is tied when a reference *outside* the
      radius scores exactly as high (ties among near references are not ties against the query).
    - UTM coordinates are (easting, northing) in metres and must be float64: a float32 northing near
      6.1e6 m only resolves about 0.5 m.
    - Distances on the sphere (great-circle distance, the Earth radius) live in
      :mod:`geo_retrieval.geodesy`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from geo_bench.metrics.recall import (
    DEFAULT_MEMORY_BUDGET,
    RecallResult,
    Similarity,
    _blocks,
    _check_ks,
    _check_ties,
    _Counter,
    _prepare,
    recall_from_ranks,
    tie_statistics,
)

__all__ = ["geo_tolerant_recall", "utm_neighbours"]


def _float64_coords(x: object, name: str, n: int | None = None) -> np.ndarray:
    if isinstance(x, Tensor):
        if x.dtype != torch.float64:
            raise TypeError(f"{name} must be float64 (UTM metres need it), got {x.dtype}")
        arr = x.detach().cpu().numpy()
    else:
        arr = np.asarray(x)
        if arr.dtype != np.float64:
            raise TypeError(f"{name} must be float64 (UTM metres need it), got {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2 or (n is not None and arr.shape[0] != n):
        expected = f"({n}, 2)" if n is not None else "(N, 2)"
        raise ValueError(f"{name} must be {expected} (easting, northing), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return arr


def utm_neighbours(
    query_utm: object, reference_utm: object, radius_m: float
) -> tuple[np.ndarray, np.ndarray]:
    """All (query, reference) pairs within ``radius_m`` metres, sorted by query then reference.

    Uses a k-d tree (``scipy.spatial.cKDTree.sparse_distance_matrix``), never an N x N matrix.

    Args:
        query_utm: (N_q, 2) float64 (easting, northing).
        reference_utm: (N_ref, 2) float64.
        radius_m: the radius, distances ``<= radius_m`` count.

    Returns:
        ``(query_idx, reference_idx)``, two int64 arrays of equal length.
    """
    if not radius_m >= 0:
        raise ValueError(f"radius_m must be >= 0, got {radius_m}")
    q = _float64_coords(query_utm, "query_utm")
    r = _float64_coords(reference_utm, "reference_utm")
    pairs = cKDTree(q).sparse_distance_matrix(cKDTree(r), radius_m, output_type="ndarray")
    qi = pairs["i"].astype(np.int64)
    ri = pairs["j"].astype(np.int64)
    # the "ndarray" output keeps zero distances (coincident points); sort for a CSR layout
    order = np.lexsort((ri, qi))
    return qi[order], ri[order]


def geo_tolerant_recall(
    query: Tensor,
    reference: Tensor,
    query_utm: object,
    reference_utm: object,
    ks: Iterable[int] = (1, 5, 10),
    radius_m: float = 5.0,
    top_percent: float = 1.0,
    *,
    top1pct_rule: str = "floor",
    ties: str = "optimistic",
    chunk_size: int | None = None,
    similarity: Similarity | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    direction: str = "g2a",
    tie_stats: bool = False,
) -> RecallResult:
    """R@K where any reference within ``radius_m`` of the query's UTM counts (CVACT_test ``utm_5m``).

    Convention: see the module docstring. The result's ``protocol`` is ``f"utm_{radius_m:g}m"``
    (``"utm_5m"`` by default) and ``radius_m`` is stored.

    Args:
        query: (N_q, D) query descriptors.
        reference: (N_ref, D) gallery descriptors.
        query_utm: (N_q, 2) float64 UTM (easting, northing) of the queries (tensor or array).
        reference_utm: (N_ref, 2) float64 UTM of the references.
        ks: the Ks of R@K.
        radius_m: tolerance radius in metres (5 m in OriCNN's ``RecallGeo.m``; 25 m is a training
            threshold, not an evaluation one).
        top_percent: x of R@x%.
        top1pct_rule: ``"floor"`` or ``"int_plus_one"``.
        ties: ``"optimistic"`` or ``"pessimistic"``.
        chunk_size: query rows per block; default from ``memory_budget``.
        similarity: optional custom score callable, as in :func:`geo_bench.metrics.ranks`.
        memory_budget: bytes for one block's working set when ``chunk_size`` is None.
        direction: label stored in the result.
        tie_stats: also compute the tie statistics (same pass; see the module Convention).

    Returns:
        A :class:`~geo_bench.metrics.RecallResult` with ``protocol="utm_5m"`` (for 5 m).

    Example:
        >>> import numpy as np
        >>> d = torch.eye(3)
        >>> utm = np.array([[0.0, 0.0], [3.0, 0.0], [100.0, 0.0]])
        >>> res = geo_tolerant_recall(d[[1, 0, 2]], d, utm, utm, ks=(1,))
        >>> res.recall_at[1], res.protocol
        (100.0, 'utm_5m')
    """
    ks = _check_ks(ks)
    _check_ties(ties)
    prep = _prepare(query, reference, similarity)
    n_q, n_ref = query.shape[0], prep.reference.shape[0]
    q_utm = _float64_coords(query_utm, "query_utm", n_q)
    r_utm = _float64_coords(reference_utm, "reference_utm", n_ref)
    qi, ri = utm_neighbours(q_utm, r_utm, radius_m)
    device = prep.reference.device
    # CSR row pointers over queries
    indptr = np.zeros(n_q + 1, dtype=np.int64)
    np.cumsum(np.bincount(qi, minlength=n_q), out=indptr[1:])
    qi_t = torch.from_numpy(qi).to(device)
    ri_t = torch.from_numpy(ri).to(device)
    opt = torch.empty(n_q, dtype=torch.long, device=device) if tie_stats or ties == "optimistic" else None
    pess = torch.empty(n_q, dtype=torch.long, device=device) if tie_stats or ties == "pessimistic" else None
    count = _Counter()
    for start, end, block in _blocks(query, prep, chunk_size, memory_budget):
        lo, hi = int(indptr[start]), int(indptr[end])
        rows = qi_t[lo:hi] - start
        vals = block[rows, ri_t[lo:hi]]
        best = torch.full((end - start,), float("-inf"), device=device, dtype=block.dtype)
        best.scatter_reduce_(0, rows, vals, reduce="amax", include_self=True)
        has_near = torch.isfinite(best)
        none = torch.full((end - start,), n_ref, dtype=torch.long, device=device)
        if opt is not None:
            opt[start:end] = torch.where(has_near, count(block, best[:, None], strict=True), none)
        if pess is not None:
            n_tied_near = torch.zeros(end - start, dtype=torch.long, device=device)
            n_tied_near.scatter_add_(0, rows, (vals == best[rows]).long())
            pess[start:end] = torch.where(
                has_near, count(block, best[:, None], strict=False) - n_tied_near, none
            )
        del block
    out = opt if ties == "optimistic" else pess
    assert out is not None
    stats = tie_statistics(opt, pess) if opt is not None and pess is not None and tie_stats else None
    return recall_from_ranks(
        out,
        n_ref,
        ks,
        top_percent,
        top1pct_rule=top1pct_rule,
        ties=ties,
        direction=direction,
        protocol=f"utm_{radius_m:g}m",
        radius_m=float(radius_m),
        tie_stats=stats,
    )
