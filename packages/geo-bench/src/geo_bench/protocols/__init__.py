"""Evaluation protocols the field reports beside the clean test split.

Modules: :mod:`.corruptions` (corruption robustness, CVUSA-C / CVACT_val-C style: 16 seeded corruptions at
5 severities, the :class:`CorruptedViews` dataset wrapper and the relative corruption error) and
:mod:`.fov` (limited field of view with unknown orientation from fixed, shipped query files). Radius
recall is a metric (:mod:`geo_bench.metrics.localisation`); the leaderboard runs these protocols with
``--protocols fov,corruption`` (:func:`geo_bench.leaderboard.evaluation.expected_protocols`).
"""

from __future__ import annotations

from .corruptions import (
    CORRUPTION_GROUPS,
    CORRUPTION_SET_VERSION,
    CORRUPTIONS,
    REFERENCE_HEIGHT,
    CorruptedViews,
    Corruption,
    corrupt,
    corruption_set_hash,
    get_corruption,
    relative_corruption_error,
    sample_generator,
    summarise_corruptions,
)
from .fov import (
    DEFAULT_FOVS,
    FOV_PROTOCOL_VERSION,
    FOV_QUERY_SEED,
    FovQueryFile,
    LimitedFovGround,
    fov_query_file,
)

__all__ = [
    "CORRUPTIONS",
    "DEFAULT_FOVS",
    "FOV_PROTOCOL_VERSION",
    "FOV_QUERY_SEED",
    "FovQueryFile",
    "LimitedFovGround",
    "fov_query_file",
    "CORRUPTION_GROUPS",
    "CORRUPTION_SET_VERSION",
    "REFERENCE_HEIGHT",
    "CorruptedViews",
    "Corruption",
    "corrupt",
    "corruption_set_hash",
    "get_corruption",
    "relative_corruption_error",
    "sample_generator",
    "summarise_corruptions",
]
