"""Test doubles for code built on geo-synthesis (not part of the library's namespace).

:class:`SMDTToyPairs` (:mod:`geo_synthesis.testing.toy`) is a tiny, seeded, learnable aerial /
panorama / segmentation data set for SMDT tests and benchmarks. Geo-retrieval's doubles (tiny model,
recipe, :class:`~geo_retrieval.testing.SyntheticPairs`) live in :mod:`geo_retrieval.testing`.
"""

from __future__ import annotations

from .toy import AERIAL_PALETTE, GROUND_PALETTE, SMDTToyPairs

__all__ = ["AERIAL_PALETTE", "GROUND_PALETTE", "SMDTToyPairs"]
