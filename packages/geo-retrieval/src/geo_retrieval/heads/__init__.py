"""Retrieval heads: feature map (B, C, h, w) -> L2-normalised descriptor (B, D).

Registry names (:func:`list_heads`): ``safa``, ``gem``, ``avg``, ``transformer``, ``geodtr``, ``dsm``
(DSM returns a unit *map*, matched with :func:`dsm_similarity`). Heads are sized at build time
from ``in_channels`` and ``feature_size=(h, w)``.
"""

from __future__ import annotations

from ._registry import create_head, list_heads, register_head
from .dsm import (
    DSMHead,
    DSMMatch,
    circular_w_padding_,
    dsm_correlation,
    dsm_shift_to_degrees,
    dsm_similarity,
)
from .geodtr import GeoDTRHead
from .pooling import AvgHead, GeMHead, gem
from .safa import SAFAHead, safa_aggregate
from .transformer import SelfCrossBlock, TransformerHead

__all__ = [
    "AvgHead",
    "DSMHead",
    "DSMMatch",
    "GeMHead",
    "GeoDTRHead",
    "SAFAHead",
    "SelfCrossBlock",
    "TransformerHead",
    "circular_w_padding_",
    "create_head",
    "dsm_correlation",
    "dsm_shift_to_degrees",
    "dsm_similarity",
    "gem",
    "list_heads",
    "register_head",
    "safa_aggregate",
]
