"""The published numbers (``results.md``) as ``kind="reported"`` :class:`~geo_bench.records.ResultRecord` s.

Convention:
    ``data/reported.json`` holds ``{"format": "geo_bench.reported/1", "records": [...]}``, one record
    per (method, dataset, split, FoV / orientation protocol) of the tables in ``results.md``:
    CVUSA (``dataset="cvusa"``, ``split="test"`` = val-19zl), CVACT_val (``"cvact"``, ``"val"``),
    CVACT_test (``"cvact"``, ``"test"``, with ``protocol.cvact_test`` where stated), the DSM
    unknown-orientation / limited-FoV table (``orientation_known=False``, ``fov``), VIGOR R@1
    (``"vigor"``, ``"same_area"`` / ``"cross_area"``) and the CVUSA -> CVACT transfer rows
    (``protocol.trained_on="cvusa"``). ``provenance.source`` is the source cell of ``results.md``
    verbatim (markdown emphasis removed); ``protocol.unverified`` is True where the source says
    "unverified"; conflicting cells ("A vs B") become two records marked ``protocol.conflict``.
    Missing values ("–") are ``None``. The recipe name is the method as printed there.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from ..records import ResultRecord

__all__ = ["REPORTED_FORMAT", "reported_records"]

REPORTED_FORMAT = "geo_bench.reported/1"


@lru_cache(maxsize=1)
def _load() -> tuple[ResultRecord, ...]:
    text = resources.files(__package__).joinpath("data", "reported.json").read_text(encoding="utf-8")
    data = json.loads(text)
    if data.get("format") != REPORTED_FORMAT:
        raise ValueError(f"reported.json has format {data.get('format')!r}, expected {REPORTED_FORMAT!r}")
    return tuple(ResultRecord.from_dict(d) for d in data["records"])


def reported_records(dataset: str | None = None, split: str | None = None) -> list[ResultRecord]:
    """Published results, optionally only one dataset (``"cvusa"``, ``"cvact"``, ``"vigor"``) / split.

    Example:
        >>> recs = reported_records("cvusa")
        >>> all(r.provenance.kind == "reported" and r.provenance.source for r in recs)
        True
    """
    out = list(_load())
    if dataset is not None:
        known = sorted({r.dataset for r in out})
        if dataset not in known:
            raise ValueError(f"no reported numbers for dataset {dataset!r}; available: {known}")
        out = [r for r in out if r.dataset == dataset]
    if split is not None:
        out = [r for r in out if r.split == split]
    return out
