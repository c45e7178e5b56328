"""geo-bench: datasets, metrics, evaluation protocols and the leaderboard for cross-view
geo-localisation."""

from __future__ import annotations

from .datasets import CVACT, CVUSA, VIGOR, DatasetNotFoundError, find_exact_duplicates, prepare_cache

__version__ = "0.1.0"

__all__ = ["__version__"]
__all__ += ["CVACT", "CVUSA", "VIGOR", "DatasetNotFoundError", "find_exact_duplicates", "prepare_cache"]
