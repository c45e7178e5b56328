"""geo-bench: datasets, metrics, evaluation protocols and the leaderboard for cross-view
geo-localisation."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
