"""geo-retrieval: backbones, retrieval heads, losses, training and search for cross-view
geo-localisation."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
