"""The three CVACT_test protocols, which give numbers that are not comparable with each other.

Convention (``docs/protocols.md#cvact_test-three-protocols``):
    - ``"utm_5m"``: queries and gallery are ``valSetAll`` (92,802); a retrieved aerial counts when its
      UTM lies within ``radius_m`` (5 m) of the query's UTM (OriCNN / DSM-era papers). Any radius can be
      asked for; the protocol name then becomes ``f"utm_{radius_m:g}m"``.
    - ``"id_1to1"``: ``valSetAll`` indices, exact id only (query i matches aerial ``gt_index[i]``,
      the diagonal by default; GeoDTR).
    - ``"id_1to1_glob"``: exact id only, on the sorted intersection of the ids found on disk under
      ``ANU_data_test/satview_polish`` and ``ANU_data_test/streetview`` (Sample4Geo and forks). The
      metric is the same as ``id_1to1``; what differs is the query/gallery set, which
      :func:`id_1to1_glob_ids` builds from the two listings. Pass descriptors in that order.
    The protocol name is stored in every result (``RecallResult.protocol``).
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from geo_bench.metrics.geo import geo_tolerant_recall
from geo_bench.metrics.recall import RecallResult, retrieval_recall

__all__ = ["CVACT_TEST_PROTOCOLS", "cvact_test_recall", "id_1to1_glob_ids"]

CVACT_TEST_PROTOCOLS = ("utm_5m", "id_1to1", "id_1to1_glob")


def id_1to1_glob_ids(streetview_ids: Iterable[str], satview_ids: Iterable[str]) -> list[str]:
    """The ``id_1to1_glob`` id list: ids present in both folders, sorted (as Sample4Geo globs them).

    Args:
        streetview_ids: pano ids found under ``ANU_data_test/streetview`` (``<id>_grdView.jpg``).
        satview_ids: pano ids found under ``ANU_data_test/satview_polish`` (``<id>_satView_polish.jpg``).

    Returns:
        The sorted intersection; query i and aerial i are then the same id.

    Example:
        >>> id_1to1_glob_ids(["b", "a", "c"], ["c", "a", "d"])
        ['a', 'c']
    """
    return sorted(set(streetview_ids) & set(satview_ids))


def cvact_test_recall(
    query: Tensor,
    reference: Tensor,
    protocol: str,
    ks: Iterable[int] = (1, 5, 10),
    top_percent: float = 1.0,
    *,
    query_utm: object = None,
    reference_utm: object = None,
    radius_m: float = 5.0,
    gt_index: Tensor | None = None,
    **kwargs: object,
) -> RecallResult:
    """Recall on CVACT_test under one named protocol; the name is stored in the result.

    Args:
        query: (N_q, D) ground descriptors.
        reference: (N_ref, D) aerial descriptors.
        protocol: ``"utm_5m"`` (needs both UTM arrays; ``radius_m`` may change the radius),
            ``"id_1to1"`` or ``"id_1to1_glob"``.
        ks: the Ks of R@K.
        top_percent: x of R@x%.
        query_utm: (N_q, 2) float64 UTM, for ``utm_5m``.
        reference_utm: (N_ref, 2) float64 UTM, for ``utm_5m``.
        radius_m: radius for ``utm_5m``.
        gt_index: (N_q,) match indices for the id protocols (diagonal by default).
        **kwargs: ``ties``, ``top1pct_rule``, ``chunk_size``, ``memory_budget``, ``similarity``.

    Returns:
        A :class:`~geo_bench.metrics.RecallResult` whose ``protocol`` names the protocol.
    """
    if protocol not in CVACT_TEST_PROTOCOLS:
        raise ValueError(f"protocol must be one of {CVACT_TEST_PROTOCOLS}, got {protocol!r}")
    if protocol == "utm_5m":
        if query_utm is None or reference_utm is None:
            raise ValueError("protocol 'utm_5m' needs query_utm and reference_utm (float64 UTM metres)")
        if gt_index is not None:
            raise ValueError("protocol 'utm_5m' matches by location; gt_index is not used")
        return geo_tolerant_recall(
            query,
            reference,
            query_utm,
            reference_utm,
            ks,
            radius_m,
            top_percent,
            **kwargs,  # type: ignore[arg-type]
        )
    if query_utm is not None or reference_utm is not None:
        raise ValueError(f"protocol {protocol!r} matches by id; UTM coordinates are not used")
    return retrieval_recall(
        query,
        reference,
        ks,
        top_percent,
        gt_index=gt_index,
        protocol=protocol,
        **kwargs,  # type: ignore[arg-type]
    )
