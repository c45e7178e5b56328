"""Retrieval metrics and evaluation protocols: exact chunked ranks, R@K / R@1%, tie statistics and the
collapsed-descriptor check, CVACT_test protocols, DSM's limited-FoV / unknown-orientation protocol and
VIGOR's hit rate and meter-level localisation, recall within a radius and top-1 metre errors, and the
fine-grained pose errors (position split along / across the heading, heading error).
Distances on the sphere live in :mod:`geo_retrieval.geodesy`.

Everything is re-exported here in one flat namespace; see each module for its Convention block.
"""

from __future__ import annotations

from geo_bench.metrics.cvact import CVACT_TEST_PROTOCOLS, cvact_test_recall, id_1to1_glob_ids
from geo_bench.metrics.degenerate import (
    DEGENERATE_TIE_SHARE,
    DEGENERATE_ZERO_SHARE,
    ZERO_NORM,
    DegenerateDescriptorsError,
    check_descriptors,
    zero_norm_share,
)
from geo_bench.metrics.faiss_backend import MissingDependencyError, faiss_knn
from geo_bench.metrics.geo import geo_tolerant_recall, utm_neighbours
from geo_bench.metrics.localisation import (
    DEFAULT_RADII_M,
    LocalisationResult,
    localisation_metrics,
    position_distances,
    radius_recall,
    topk_references,
)
from geo_bench.metrics.orientation import (
    FovQuerySet,
    OrientationResult,
    apply_fov,
    circular_error_deg,
    make_fov_queries,
    orientation_accuracy,
    orientation_bins,
)
from geo_bench.metrics.pose import PoseErrors, PoseResult, pose_errors, pose_metrics
from geo_bench.metrics.recall import (
    DEFAULT_MEMORY_BUDGET,
    RecallResult,
    Similarity,
    TieStats,
    bidirectional_recall,
    chunk_size_for,
    ranks,
    ranks_with_ties,
    recall_curve,
    recall_from_ranks,
    retrieval_recall,
    score_blocks,
    tie_statistics,
    top1pct_k,
)
from geo_bench.metrics.vigor import (
    VIGOR_METERS_PER_PIXEL,
    MeterLevelCurve,
    VigorResult,
    localisation_errors,
    meter_level_accuracy,
    plot_meter_level_accuracy,
    vigor_offset_to_latlon,
    vigor_recall,
    vigor_thresholds,
)

__all__ = [
    "CVACT_TEST_PROTOCOLS",
    "DEFAULT_MEMORY_BUDGET",
    "DEGENERATE_TIE_SHARE",
    "DEGENERATE_ZERO_SHARE",
    "DEFAULT_RADII_M",
    "LocalisationResult",
    "localisation_metrics",
    "position_distances",
    "radius_recall",
    "topk_references",
    "VIGOR_METERS_PER_PIXEL",
    "ZERO_NORM",
    "DegenerateDescriptorsError",
    "FovQuerySet",
    "MeterLevelCurve",
    "MissingDependencyError",
    "OrientationResult",
    "PoseErrors",
    "PoseResult",
    "RecallResult",
    "Similarity",
    "TieStats",
    "VigorResult",
    "apply_fov",
    "bidirectional_recall",
    "check_descriptors",
    "chunk_size_for",
    "circular_error_deg",
    "cvact_test_recall",
    "faiss_knn",
    "geo_tolerant_recall",
    "id_1to1_glob_ids",
    "localisation_errors",
    "make_fov_queries",
    "meter_level_accuracy",
    "orientation_accuracy",
    "orientation_bins",
    "plot_meter_level_accuracy",
    "pose_errors",
    "pose_metrics",
    "ranks",
    "ranks_with_ties",
    "recall_curve",
    "recall_from_ranks",
    "retrieval_recall",
    "score_blocks",
    "tie_statistics",
    "top1pct_k",
    "utm_neighbours",
    "vigor_offset_to_latlon",
    "vigor_recall",
    "vigor_thresholds",
    "zero_norm_share",
]
