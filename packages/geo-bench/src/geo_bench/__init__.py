"""geo-bench: datasets, metrics, evaluation protocols and the leaderboard for cross-view
geo-localisation."""

from __future__ import annotations

# before the subpackage imports: geo_bench.datasets.cache records it in every cache manifest
__version__ = "0.1.0"

from .datasets import CVACT, CVUSA, VIGOR, DatasetNotFoundError, find_exact_duplicates, prepare_cache
from .metrics import *  # noqa: F403  (flat namespace; names listed in metrics.__all__)
from .metrics import __all__ as _metrics_all
from .records import Provenance, RecordValidationError, ResultRecord, collect_provenance
from .store import ResultStore, StoreWarning

__all__ = ["__version__"]
__all__ += ["CVACT", "CVUSA", "VIGOR", "DatasetNotFoundError", "find_exact_duplicates", "prepare_cache"]
__all__ += [*_metrics_all, "Provenance", "RecordValidationError", "ResultRecord", "collect_provenance"]
__all__ += ["ResultStore", "StoreWarning"]
